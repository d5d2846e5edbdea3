"""Static shapes for the jitted sampler: prompt lengths, cache lengths and batch sizes are rounded up to
buckets, so the number of compilations is bounded by the number of bucket combinations actually used."""
from __future__ import annotations

from typing import Optional, Sequence


def powers_of_two(lowest: int, highest: int) -> tuple[int, ...]:
  """(lowest, 2*lowest, ..., highest); both must be powers of two."""
  for n in (lowest, highest):
    if n < 1 or n & (n - 1):
      raise ValueError(f"bucket bounds must be powers of two, got {n}")
  out, n = [], lowest
  while n <= highest:
    out.append(n)
    n *= 2
  return tuple(out)


def power_of_two(n: int) -> int:
  """The smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(n - 1, 0).bit_length()


DEFAULT_PROMPT_BUCKETS = powers_of_two(16, 1 << 17)
DEFAULT_CACHE_BUCKETS = powers_of_two(32, 1 << 18)


def cache_buckets_for(prompt_buckets: Sequence[int], new_token_limits: Sequence[int],
                      multiple: int = 64) -> tuple[int, ...]:
  """Cache lengths that fit each prompt bucket plus each planned new-token limit (rounded up to `multiple`).

  The Sampler picks the smallest cache bucket >= prompt bucket + max_new_tokens; a cache longer than that
  costs KV memory and decode time (every step attends over all slots). For prompt buckets (2048, 4096) and
  512 new tokens this gives 2560 and 4608 where powers of two would give 4096 and 8192. Twice the
  largest prompt bucket is added as a catch-all for unplanned lengths.
  """
  prompts = check_buckets(prompt_buckets, "prompt")
  if multiple < 1 or any(int(n) < 0 for n in new_token_limits):
    raise ValueError(f"need multiple >= 1 and new-token limits >= 0, got {multiple}, {list(new_token_limits)}")
  extra = {-(-max(int(n), 1) // multiple) * multiple for n in new_token_limits} or {multiple}
  return tuple(sorted({p + e for p in prompts for e in extra} | {2 * prompts[-1]}))


def check_buckets(buckets: Sequence[int], what: str) -> tuple[int, ...]:
  """Validates a bucket list (positive ints) and returns it sorted."""
  out = tuple(sorted(int(b) for b in buckets))
  if not out or out[0] < 1:
    raise ValueError(f"{what} buckets must be a non-empty list of positive ints, got {list(buckets)!r}")
  return out


def pick_bucket(n: int, buckets: Sequence[int], what: str) -> int:
  """The smallest bucket >= n; a clear error when n exceeds the largest bucket."""
  for b in buckets:
    if b >= n:
      return b
  raise ValueError(f"{what} of {n} exceeds the largest bucket {buckets[-1]}; pass larger buckets")


def batch_bucket(n: int, multiple_of: int = 1) -> int:
  """The next power of two >= n, rounded up to a multiple of `multiple_of` (the batch shard count)."""
  if n < 1:
    raise ValueError(f"batch size must be >= 1, got {n}")
  b = power_of_two(n)
  return -(-b // multiple_of) * multiple_of


def prefill_row_chunks(rows_per_shard: int, prompt_len: int, chunk_tokens: Optional[int]) -> int:
  """How many groups of rows the sampler prefills one after the other: the fewest (a divisor of each
  shard's rows) whose prompt tokens per shard fit `chunk_tokens` (at least one row per group); 1 when
  chunk_tokens is None or the whole batch fits."""
  if chunk_tokens is None or rows_per_shard * prompt_len <= chunk_tokens:
    return 1
  for chunks in range(2, rows_per_shard + 1):
    if rows_per_shard % chunks == 0 and (rows_per_shard // chunks) * prompt_len <= chunk_tokens:
      return chunks
  return rows_per_shard
