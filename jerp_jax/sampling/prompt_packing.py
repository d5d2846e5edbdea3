"""Packs a generate call's prompts side by side for prefill (host side).

The sampler left-pads every prompt to the batch's prompt bucket, so prefill computes every row at the
bucket's length: on the ALFWorld evaluations, whose turn prompts run 220-690 tokens in a 768-token bucket,
only 45% of the prefilled tokens were real (BUILD_NOTES section 6, session 28). `pack_prompts` places the
prompts (each without its last token, which the first decode step feeds) first-fit-decreasing into rows of
the same width, each prompt a contiguous segment with its own id; the decoder's prefill lets a segment
attend only to itself and restarts its RoPE positions (`Decoder.prompt_kv(..., segment_ids=...)`), and a
gather moves every segment's keys and values to its own row's cache slots (`decode_loop.prefill`). The
cache holds the same keys and values as the unpacked prefill's, up to float32 summation order.

Rows are packed within groups, so no data crosses devices: the batch's rows split into `shards` equal runs
(one per device of the batch sharding) and each run into `chunks` (the prefill's row chunks, which bound
its activation memory); group (s, c) packs only its own rows, into the same number of packed rows as
every other group.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import numpy as np

from jerp_jax.sampling.buckets import power_of_two


def first_fit_decreasing(lengths: np.ndarray, capacity: int,
                         max_items: Optional[int] = None) -> list[list[int]]:
  """Bins of item indices whose lengths add up to at most `capacity` each: the longest item first, each
  into the first bin it fits (ties keep index order, so the result is deterministic). max_items: a bin
  holding that many items takes no more."""
  lengths = np.asarray(lengths, np.int64)
  if (lengths > capacity).any():
    i = int(np.argmax(lengths))
    raise ValueError(f"row {i} has {lengths[i]} tokens, more than the packed row length {capacity}")
  if max_items is not None and max_items < 1:
    raise ValueError(f"max_items must be >= 1, got {max_items}")
  bins: list[list[int]] = []
  room: list[int] = []
  for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
    for b, free in enumerate(room):
      if lengths[i] <= free and (max_items is None or len(bins[b]) < max_items):
        bins[b].append(i)
        room[b] -= int(lengths[i])
        break
    else:
      bins.append([i])
      room.append(capacity - int(lengths[i]))
  return bins


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class PackedPrompts:
  """The prompts of one generate call packed for prefill. G = shards x chunks groups of R packed rows.

  tokens: [G * R, W] int32, group-major (group (s, c) is rows [(s * chunks + c) * R, ... + R)), pad id
    after the segments.
  segment_ids: [G * R, W] int32, 1, 2, ... per prompt in a packed row, 0 on padding.
  source: [B, W] int32, for each batch row and prefill slot, the flat index (packed row within its group
    x W + column) of the token whose keys and values go there; left-padding slots point at 0 (their
    cache slots are never attended to).
  """
  tokens: np.ndarray
  segment_ids: np.ndarray
  source: np.ndarray


def pack_prompts(prompts: Sequence[np.ndarray], *, batch: int, width: int, shards: int = 1,
                 chunks: int = 1, pad_id: int = 0) -> Optional[PackedPrompts]:
  """Packs the prefill part of each prompt (all but its last token) for a batch of `batch` rows whose
  prefill width is `width` (the prompt bucket minus one). Row i >= len(prompts) is a padding row.

  Each group packs into the same number of rows, a power of two. Returns None when that is more than
  half of a group's rows (too little saved for another prefill shape to compile).
  """
  if batch % (shards * chunks):
    raise ValueError(f"{shards} shards x {chunks} chunks do not divide the batch of {batch} rows")
  if len(prompts) > batch:
    raise ValueError(f"{len(prompts)} prompts for a batch of {batch} rows")
  lengths = np.zeros((batch,), np.int64)
  lengths[:len(prompts)] = [len(p) - 1 for p in prompts]
  if (lengths > width).any():
    raise ValueError(f"a prompt of {int(lengths.max()) + 1} tokens does not fit the prefill width {width} + 1")
  groups = shards * chunks
  rows_per_group = batch // groups
  # Group (s, c) holds run c of shard s's rows: the rows `_prefill_row_chunks` prefills in chunk c.
  group_rows = [s * (batch // shards) + c * rows_per_group + np.arange(rows_per_group)
                for s in range(shards) for c in range(chunks)]
  bins = []
  for rows in group_rows:
    rows = rows[lengths[rows] > 0]  # a one-token prompt has nothing to prefill
    bins.append([[int(rows[i]) for i in b] for b in first_fit_decreasing(lengths[rows], width)])
  # A power of two at most half the group's rows: each (batch, prompt bucket) compiles at most a few
  # packed prefill shapes (prefill compiles cost seconds on the CPU), each saving at least half the rows.
  packed_rows = power_of_two(max(len(b) for b in bins) if any(bins) else 1)
  if 2 * packed_rows > rows_per_group:
    return None
  tokens = np.full((groups * packed_rows, width), pad_id, np.int32)
  segment_ids = np.zeros((groups * packed_rows, width), np.int32)
  source = np.zeros((batch, width), np.int32)
  for g, group_bins in enumerate(bins):
    for r, members in enumerate(group_bins):
      column = 0
      for segment, row in enumerate(sorted(members), start=1):
        n = int(lengths[row])
        tokens[g * packed_rows + r, column:column + n] = prompts[row][:n]
        segment_ids[g * packed_rows + r, column:column + n] = segment
        # left-padded in its own row: the prompt's prefill tokens sit in slots [width - n, width)
        source[row, width - n:] = r * width + column + np.arange(n)
        column += n
  return PackedPrompts(tokens=tokens, segment_ids=segment_ids, source=source)
