"""Host-side prompt packing for prefill: layout against hand-worked cases and a reconstruction check."""
import numpy as np
import pytest

from jerp_jax.sampling.prompt_packing import first_fit_decreasing, pack_prompts


def test_first_fit_decreasing_is_shared_with_the_train_step_packer():
  from jerp_jax.rl import packing  # pylint: disable=import-outside-toplevel
  assert packing.first_fit_decreasing is first_fit_decreasing
  assert first_fit_decreasing(np.array([4, 7, 3, 5, 1]), 8) == [[1, 4], [3, 2], [0]]


def test_pack_prompts_hand_worked_layout():
  # Prefill parts (all but the last token): lengths 3, 4, 1, 0 (a one-token prompt) and two padding rows.
  prompts = [np.array([11, 12, 13, 19]), np.array([21, 22, 23, 24, 29]), np.array([31, 39]), np.array([49])]
  packed = pack_prompts(prompts, batch=6, width=5, pad_id=0)
  # first-fit-decreasing into rows of 5: [row 1 (4) + row 2 (1)], [row 0 (3)] -> 2 packed rows
  np.testing.assert_array_equal(packed.tokens, [[21, 22, 23, 24, 31], [11, 12, 13, 0, 0]])
  np.testing.assert_array_equal(packed.segment_ids, [[1, 1, 1, 1, 2], [1, 1, 1, 0, 0]])
  # each batch row's prefill slots are left-padded: row 0 fills slots 2-4 from packed row 1, columns 0-2
  np.testing.assert_array_equal(packed.source, [[0, 0, 5, 6, 7], [0, 0, 1, 2, 3], [0, 0, 0, 0, 4],
                                                [0] * 5, [0] * 5, [0] * 5])


def test_pack_prompts_declines_when_it_saves_no_rows():
  full = [np.arange(1, 7)] * 4  # four prompts of 5 prefill tokens in rows of 5: 4 packed rows for 4 rows
  assert pack_prompts(full, batch=4, width=5) is None
  assert pack_prompts([np.arange(1, 7)], batch=1, width=5) is None
  # 3 packed rows would be needed for 4 rows: a power of two (4) is not at most half of them
  assert pack_prompts([np.arange(1, 7)] * 2 + [np.arange(1, 4)], batch=4, width=5) is None
  # 2 packed rows for 4: packed
  assert pack_prompts([np.arange(1, 7), np.arange(1, 4), np.arange(1, 4)], batch=4, width=5).tokens.shape == (2, 5)


@pytest.mark.parametrize("shards,chunks", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_packed_tokens_reconstruct_every_left_padded_prompt(shards, chunks):
  rng = np.random.RandomState(shards * 10 + chunks)
  batch, width = 16, 23
  prompts = [rng.randint(1, 500, size=rng.randint(1, width // 2 + 2)) for _ in range(13)] + [np.arange(1, width + 2)]
  packed = pack_prompts(prompts, batch=batch, width=width, shards=shards, chunks=chunks)
  groups = shards * chunks
  rows_per_group = batch // groups
  packed_rows = packed.tokens.shape[0] // groups
  assert packed.tokens.shape[0] % groups == 0 and packed_rows < rows_per_group
  for row in range(batch):
    group = (row // (batch // shards)) * chunks + (row % (batch // shards)) // rows_per_group
    flat_tokens = packed.tokens[group * packed_rows:(group + 1) * packed_rows].reshape(-1)
    flat_segments = packed.segment_ids[group * packed_rows:(group + 1) * packed_rows].reshape(-1)
    n = len(prompts[row]) - 1 if row < len(prompts) else 0
    np.testing.assert_array_equal(flat_tokens[packed.source[row, width - n:]], prompts[row][:n] if n else [])
    if n:  # one segment, contiguous, in one packed row
      picked = packed.source[row, width - n:]
      assert len(set(flat_segments[picked])) == 1 and flat_segments[picked[0]] > 0
      assert (np.diff(picked) == 1).all() and picked[0] // width == picked[-1] // width
  # every real token is used exactly once
  real = sum(max(len(p) - 1, 0) for p in prompts)
  assert (packed.segment_ids > 0).sum() == real


def test_pack_prompts_errors():
  with pytest.raises(ValueError, match="does not fit the prefill width"):
    pack_prompts([np.arange(1, 9)], batch=2, width=5)
  with pytest.raises(ValueError, match="do not divide the batch"):
    pack_prompts([np.arange(1, 4)], batch=6, width=5, shards=4)
