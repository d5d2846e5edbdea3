"""Bucket selection: bounded static shapes and clear errors."""
import pytest

from jerp_jax.sampling import buckets


def test_pick_bucket_is_the_smallest_fitting_bucket():
  bs = buckets.check_buckets([64, 16, 32], "prompt")
  assert bs == (16, 32, 64)
  assert [buckets.pick_bucket(n, bs, "x") for n in (1, 16, 17, 64)] == [16, 16, 32, 64]
  with pytest.raises(ValueError, match="prompt length of 65 exceeds the largest bucket 64"):
    buckets.pick_bucket(65, bs, "prompt length")
  with pytest.raises(ValueError, match="non-empty"):
    buckets.check_buckets([], "cache")


def test_batch_bucket_is_a_power_of_two_times_the_shard_count():
  assert [buckets.batch_bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
  assert [buckets.batch_bucket(n, 4) for n in (1, 3, 5)] == [4, 4, 8]
  assert buckets.batch_bucket(5, 6) == 12
  with pytest.raises(ValueError, match="batch size"):
    buckets.batch_bucket(0)


def test_powers_of_two():
  assert buckets.powers_of_two(16, 128) == (16, 32, 64, 128)
  with pytest.raises(ValueError, match="powers of two"):
    buckets.powers_of_two(3, 64)


def test_cache_buckets_fit_each_prompt_bucket_plus_each_planned_limit():
  got = buckets.cache_buckets_for((256, 2048, 4096), (64, 512, 200))
  # 512 -> 512, 200 -> 256 (multiples of 64); twice the largest prompt bucket as the catch-all
  assert got == (320, 512, 768, 2112, 2304, 2560, 4160, 4352, 4608, 8192)
  # the cache the sampler picks for the longest prompt bucket and 512 new tokens: 4608, not 8192
  assert buckets.pick_bucket(4096 + 512, got, "cache") == 4608
  assert buckets.pick_bucket(2048 + 512, got, "cache") == 2560
  assert buckets.cache_buckets_for((16,), (0,), multiple=8) == (24, 32)
  with pytest.raises(ValueError, match="new-token limits >= 0"):
    buckets.cache_buckets_for((16,), (-1,))


def test_prefill_row_chunks_are_the_fewest_groups_that_fit_the_token_budget():
  assert buckets.prefill_row_chunks(16, 15, None) == 1
  assert buckets.prefill_row_chunks(16, 15, 240) == 1  # the whole shard fits
  assert buckets.prefill_row_chunks(16, 15, 30) == 8  # 2 rows of 15 per group
  assert buckets.prefill_row_chunks(6, 10, 25) == 3  # 2 rows of 10 per group (3 rows would be 30)
  assert buckets.prefill_row_chunks(5, 100, 10) == 5  # at least one row per group
