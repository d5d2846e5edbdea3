"""The learner's mini-batches as global arrays, assembled from every host's own rollout rows.

Each host packs the turns of its own episodes into rows (`rollout_train_batch`, no row padding). The
iteration's rows get global indices in process order (host 0's rows first), which is the order a single
process would hold them in, since hosts own contiguous blocks of the iteration's tasks. One seeded
permutation of the N global row indices splits them into mini-batches of `mini_batch_size` rows; every
host contributes its own rows of mini-batch j (kept in global order) plus padding rows up to a common
count, so the global array has the same real rows as a single-process run (padding rows carry no loss
tokens and change no loss or gradient). Only the per-host row counts and row lengths are exchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jerp_jax.rl.batch import TrainBatch
from jerp_jax.sampling.buckets import power_of_two


@dataclasses.dataclass(frozen=True)
class MiniBatchPlan:
  """Which local rows go into each mini-batch, and the padded per-host row count of each.

  local_rows: per mini-batch, indices into this host's rows (ascending).
  rows_per_host: per mini-batch, the row count every host contributes (real rows + padding).
  """
  local_rows: tuple[np.ndarray, ...]
  rows_per_host: tuple[int, ...]

  @property
  def num_minibatches(self) -> int:
    return len(self.local_rows)


def _bucket(rows: int, multiple: int) -> int:
  """rows rounded up to `multiple` x a power of two (few distinct train-step shapes)."""
  blocks = max(1, -(-rows // multiple))
  return multiple * power_of_two(blocks)


def plan_minibatches(row_counts: Sequence[int], process_index: int, mini_batch_size: int,
                     permutation_seed: Sequence[int], row_multiple: int = 1) -> MiniBatchPlan:
  """Splits the global rows into mini-batches and returns this host's part of each.

  Args:
    row_counts: every host's real row count, in process order (the same list on every host).
    process_index: this host.
    mini_batch_size: global rows per mini-batch (the last one may hold fewer).
    permutation_seed: seeds `np.random.default_rng` for the row shuffle (e.g. [seed, iteration, 1]).
    row_multiple: each host's padded count is a multiple of this (its share of the data x fsdp shards).

  Returns:
    MiniBatchPlan; identical `rows_per_host` on every host.
  """
  if mini_batch_size < 1:
    raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
  if not 0 <= process_index < len(row_counts):
    raise ValueError(f"process_index {process_index} out of range for {len(row_counts)} hosts")
  counts = np.asarray(row_counts, np.int64)
  if (counts < 0).any():
    raise ValueError(f"row counts must be >= 0, got {list(row_counts)}")
  offsets = np.concatenate([[0], np.cumsum(counts)])
  total = int(offsets[-1])
  order = np.random.default_rng(list(permutation_seed)).permutation(total)
  lo, hi = offsets[process_index], offsets[process_index + 1]
  local_rows, padded = [], []
  for start in range(0, total, mini_batch_size):
    members = order[start:start + mini_batch_size]
    owner = np.searchsorted(offsets, members, side="right") - 1
    largest = int(np.bincount(owner, minlength=len(counts)).max())
    mine = np.sort(members[(members >= lo) & (members < hi)]) - lo
    local_rows.append(mine.astype(np.int64))
    padded.append(_bucket(largest, row_multiple))
  return MiniBatchPlan(local_rows=tuple(local_rows), rows_per_host=tuple(padded))


def padded_rows(batch: TrainBatch, rows: np.ndarray, count: int, pad_id: int) -> TrainBatch:
  """`batch`'s rows `rows` followed by padding rows up to `count` rows (numpy [count, T] fields).

  A padding row has one attended pad token and zero loss mask (as `build_train_batch` pads).
  """
  if len(rows) > count:
    raise ValueError(f"{len(rows)} rows do not fit a padded count of {count}")
  seq_len = batch.input_ids.shape[1]
  extra = count - len(rows)

  def take(x, fill, dtype):
    if x is None:
      return None
    out = np.full((count, seq_len), fill, dtype)
    out[:len(rows)] = np.asarray(x)[rows]
    return out

  attention = take(batch.attention_mask, 0, np.int32)
  if extra:
    attention[len(rows):, 0] = 1
  return TrainBatch(input_ids=take(batch.input_ids, pad_id, np.int32), attention_mask=attention,
                    loss_mask=take(batch.loss_mask, 0.0, np.float32),
                    old_logprobs=take(batch.old_logprobs, 0.0, np.float32),
                    advantages=take(batch.advantages, 0.0, np.float32),
                    ref_logprobs=take(batch.ref_logprobs, 0.0, np.float32),
                    score_window=batch.score_window)


def empty_batch(seq_len: int, pad_id: int) -> TrainBatch:
  """A TrainBatch with no rows (a host whose episodes all had zero advantage)."""
  zeros = np.zeros((0, seq_len), np.float32)
  return TrainBatch(input_ids=np.full((0, seq_len), pad_id, np.int32),
                    attention_mask=np.zeros((0, seq_len), np.int32), loss_mask=zeros,
                    old_logprobs=zeros, advantages=zeros)
