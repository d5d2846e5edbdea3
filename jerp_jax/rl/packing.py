"""Packs a mini-batch's turns side by side into fewer rows (sequence packing, host side).

A rollout's turns have very different lengths (ALFWorld: median ~350 tokens, the longest ~700), and a
right-padded `[B, T]` mini-batch pads every turn to the longest, so about half of the train step's
columns are padding. `pack_rows` places the turns first-fit-decreasing into rows of T columns, each turn
a contiguous segment with its own id (`TrainBatch.segment_ids`); the decoder lets each segment attend
only to itself and restarts its positions, and the train step scores W columns per segment, so every
turn's log-probs, the loss and the gradient are those of the unpacked batch (up to float32 summation
order). verl does the same with `use_remove_padding` (flash-attention's variable-length kernels).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from jerp_jax.rl.batch import TrainBatch, loss_span, validate_train_batch
from jerp_jax.sampling.buckets import power_of_two
from jerp_jax.sampling.prompt_packing import first_fit_decreasing


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def packed_shape(batch: TrainBatch, seq_len: Optional[int] = None, row_multiple: int = 1) -> tuple[int, int]:
  """(rows, max_segments) that `pack_rows(batch, seq_len, row_multiple)` needs at least (hosts agree on
  the largest before packing, so every host's packed mini-batch has the same shape)."""
  return _shape(_bins(batch, seq_len or batch.seq_len)[1], row_multiple)


def pack_plan(batch: TrainBatch, seq_len: Optional[int] = None, row_multiple: int = 1) -> tuple[int, int]:
  """(rows, segments per row) to pack the batch's turns into: first-fit-decreasing's rows bucketed
  (`bucket_rows`, few train-step shapes) and the fewest segments per row that still fit those rows
  (`fewest_segments`). Hosts take the largest rows and segments of all (`min_rows`, `min_segments`) and
  pack their own turns with their own `segments_per_row`."""
  seq_len = seq_len or batch.seq_len
  rows, unbounded = packed_shape(batch, seq_len, row_multiple)
  rows = bucket_rows(rows, row_multiple)
  return rows, _fewest_segments(batch, seq_len, rows, unbounded)


def fewest_segments(batch: TrainBatch, rows: int, seq_len: Optional[int] = None) -> int:
  """The fewest segments per row, a power of two, with which the batch's turns still pack into `rows`
  rows (`pack_rows(..., segments_per_row=...)`); the unbounded packing's power of two when no fewer do.

  The train step scores W columns for each of a packed row's `max_segments` segments, present or not,
  so the LM head runs at rows x max_segments x W positions: 128 turns packed first-fit into 62 rows, five
  of them holding three turns, score 62 x 4 x W where the bucketed 64 rows with two turns each score 64 x
  2 x W (BUILD_NOTES section 11, "Segments per packed row")."""
  seq_len = seq_len or batch.seq_len
  return _fewest_segments(batch, seq_len, rows, packed_shape(batch, seq_len)[1])


def _fewest_segments(batch: TrainBatch, seq_len: int, rows: int, unbounded: int) -> int:
  """`fewest_segments`, given the unbounded packing's segments per row (a power of two)."""
  cap = 1
  while cap < unbounded:
    if len(_bins(batch, seq_len, cap)[1]) <= rows:
      return cap
    cap *= 2
  return unbounded


def bucket_rows(rows: int, multiple: int = 1) -> int:
  """`rows` rounded up to a step of 1/8 of its power of two (and to `multiple`): at most 12.5% padding
  rows and 8 distinct sizes per doubling, so packed mini-batches compile a few train-step shapes."""
  return _round_up(_round_up(rows, max(1, power_of_two(rows) // 8)), multiple)


def _bins(batch: TrainBatch, seq_len: int,
          max_segments: Optional[int] = None) -> tuple[np.ndarray, list[list[int]]]:
  """Each row's token count, and the first-fit-decreasing bins (row indices, at most `max_segments` per
  bin) of the rows that carry a loss token (the others add nothing to any loss term and are left out)."""
  if batch.segment_ids is not None:
    raise ValueError("pack_rows: the batch is packed already")
  attention = np.asarray(batch.attention_mask) > 0
  lengths = attention.sum(axis=1)
  # the attended columns must start at column 0 and be contiguous
  not_right_padded = (attention != (np.arange(attention.shape[1])[None] < lengths[:, None])).any(axis=1)
  if not_right_padded.any():
    raise ValueError(f"pack_rows needs right-padded rows (tokens from column 0 on); row "
                     f"{int(np.argmax(not_right_padded))} is not")
  kept = np.flatnonzero(np.asarray(batch.loss_mask).sum(axis=1) > 0)
  bins = first_fit_decreasing(lengths[kept], seq_len, max_segments)
  return lengths, [[int(kept[i]) for i in b] for b in bins]


def _shape(bins: list[list[int]], row_multiple: int) -> tuple[int, int]:
  """(rows, max_segments) of packed bins: rows rounded up to row_multiple (at least one), the most
  segments in a row rounded up to a power of two."""
  return _round_up(max(len(bins), 1), row_multiple), power_of_two(max([len(b) for b in bins], default=1))


def pack_rows(batch: TrainBatch, *, seq_len: Optional[int] = None, row_multiple: int = 1,
              min_rows: int = 0, min_segments: int = 1, pad_id: int = 0,
              segments_per_row: Optional[int] = None) -> TrainBatch:
  """The batch's turns packed side by side into `[P, seq_len]` rows (numpy fields).

  Args:
    batch: a right-padded, unpacked TrainBatch (e.g. one mini-batch of `rollout_train_batch` rows).
    seq_len: packed row length; default the batch's T (every turn must fit).
    row_multiple: P is a multiple of this (micro-batches x data shards); at least `min_rows`.
    min_segments: max_segments is a power of two, at least this (hosts pass the largest of them).
    pad_id: token written into padding columns.
    segments_per_row: at most this many turns per row (`fewest_segments`); None: as many as fit.

  Returns:
    TrainBatch with segment_ids, max_segments and a score window of W columns per segment (the batch's
    window, or its longest loss span rounded up to a power of two). Rows without a loss token are left
    out; padding rows and columns have segment id 0 and loss mask 0.
  """
  if row_multiple < 1:
    raise ValueError(f"row_multiple must be >= 1, got {row_multiple}")
  seq_len = seq_len or batch.seq_len
  lengths, bins = _bins(batch, seq_len, segments_per_row)
  rows, segments = _shape(bins, row_multiple)
  rows = _round_up(max(min_rows, rows), row_multiple)
  segments = max(power_of_two(min_segments), segments)
  window = batch.score_window
  if window is None:
    window = min(power_of_two(max(loss_span(batch.loss_mask), 1)), seq_len)
  if window > seq_len:
    raise ValueError(f"score_window {window} is longer than the packed row length {seq_len}")

  def empty(fill, dtype):
    return np.full((rows, seq_len), fill, dtype)

  fields = {"input_ids": (pad_id, np.int32), "attention_mask": (0, np.int32), "loss_mask": (0.0, np.float32),
            "old_logprobs": (0.0, np.float32), "advantages": (0.0, np.float32)}
  if batch.ref_logprobs is not None:
    fields["ref_logprobs"] = (0.0, np.float32)
  source = {name: np.asarray(getattr(batch, name)) for name in fields}
  out = {name: empty(*spec) for name, spec in fields.items()}
  segment_ids = empty(0, np.int32)
  for row, members in enumerate(bins):
    column = 0
    for segment, turn in enumerate(sorted(members), start=1):
      n = int(lengths[turn])
      for name in fields:
        out[name][row, column:column + n] = source[name][turn, :n]
      segment_ids[row, column:column + n] = segment
      column += n
  packed = TrainBatch(**out, segment_ids=segment_ids, max_segments=segments, score_window=window)
  validate_train_batch(packed)
  return packed
