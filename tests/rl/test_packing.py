"""Sequence packing of a mini-batch: first-fit-decreasing bins, the packed layout, and its errors (the
train step on packed rows == on the unpacked rows is in test_train_step.py)."""
import numpy as np
import pytest

from jerp_jax.rl.batch import TrainBatch, build_train_batch, loss_span
from jerp_jax.rl.packing import fewest_segments, first_fit_decreasing, pack_plan, pack_rows, packed_shape


def _turns(seed=0, count=9):
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(1, 50, rng.integers(3, 20))) for _ in range(count)]
  responses = [list(rng.integers(1, 50, rng.integers(1, 6))) for _ in range(count)]
  logprobs = [list(-rng.random(len(r))) for r in responses]
  return prompts, responses, logprobs, list(rng.normal(size=count))


def test_first_fit_decreasing_bins():
  assert first_fit_decreasing(np.array([4, 7, 3, 5, 1]), 8) == [[1, 4], [3, 2], [0]]
  bins = first_fit_decreasing(np.array([8, 8, 8]), 8)
  assert bins == [[0], [1], [2]]
  with pytest.raises(ValueError, match="row 1 has 9 tokens, more than the packed row length 8"):
    first_fit_decreasing(np.array([2, 9]), 8)
  # at most max_items per bin
  assert first_fit_decreasing(np.array([2, 2, 2, 2]), 8) == [[0, 1, 2, 3]]
  assert first_fit_decreasing(np.array([2, 2, 2, 2]), 8, max_items=3) == [[0, 1, 2], [3]]
  assert first_fit_decreasing(np.array([2, 2, 2, 2]), 8, max_items=2) == [[0, 1], [2, 3]]
  with pytest.raises(ValueError, match="max_items must be >= 1, got 0"):
    first_fit_decreasing(np.array([2]), 8, max_items=0)


def _rows_of(lengths, seq_len=32):
  """Right-padded rows of these token counts, the last token of each the loss token."""
  lengths = np.asarray(lengths)
  attention = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
  loss = (np.arange(seq_len)[None] == lengths[:, None] - 1).astype(np.float32)
  zeros = np.zeros((len(lengths), seq_len), np.float32)
  return TrainBatch(input_ids=attention * 7, attention_mask=attention, loss_mask=loss, old_logprobs=zeros,
                    advantages=loss)


def test_pack_plan_takes_the_fewest_segments_that_fit_the_rows():
  # first fit: [20, 10], [20, 6, 6], [20] -> 3 rows, a row of three turns, so 4 scored segments per row;
  # at most two turns per row still fits 3 rows: [20, 10], [20, 6], [20, 6]
  batch = _rows_of([20, 20, 20, 10, 6, 6])
  assert packed_shape(batch) == (3, 4)
  assert pack_plan(batch) == (3, 2)
  packed = pack_rows(batch, min_rows=3, segments_per_row=2)
  assert packed.batch_size == 3 and packed.max_segments == 2
  assert sorted(np.asarray(packed.attention_mask).sum(1).tolist()) == [26, 26, 30]
  assert packed.loss_mask.sum() == 6
  # rows rounded up to a multiple of 2 (and bucketed): 4 rows, still two turns per row
  assert pack_plan(batch, row_multiple=2) == (4, 2)
  # one turn per row fits 6 rows, not fewer
  assert fewest_segments(batch, rows=6) == 1 and fewest_segments(batch, rows=5) == 2
  # no fewer segments fit: the unbounded packing's power of two
  tight = _rows_of([20, 20, 10, 6, 6])  # [20, 10], [20, 6, 6]: two rows only with three turns in one
  assert packed_shape(tight) == (2, 4) and fewest_segments(tight, rows=2) == 4


@pytest.mark.parametrize("segments_per_row", [None, 2])
def test_every_turn_is_copied_into_its_own_segment(segments_per_row):
  prompts, responses, logprobs, advantages = _turns()
  batch = build_train_batch(prompts, responses, logprobs, advantages, seq_len=32, batch_multiple=4,
                            response_ref_logprobs=logprobs, score_window=None)
  packed = pack_rows(batch, row_multiple=2, pad_id=0, segments_per_row=segments_per_row)
  assert packed.input_ids.shape[1] == 32 and packed.batch_size % 2 == 0
  assert packed.batch_size < batch.batch_size and packed.max_segments in ((2, 4, 8) if segments_per_row is None
                                                                           else (segments_per_row,))
  assert packed.score_window == 8 and loss_span(batch.loss_mask) == 5  # the longest response, rounded up
  if segments_per_row is None:
    assert (packed.batch_size, packed.max_segments) == packed_shape(batch, row_multiple=2)
  found = 0
  for row in range(packed.batch_size):
    segments = packed.segment_ids[row]
    for segment in np.unique(segments[segments > 0]):
      columns = np.flatnonzero(segments == segment)
      assert (np.diff(columns) == 1).all()  # contiguous
      tokens = packed.input_ids[row, columns]
      turn = next(i for i in range(len(prompts)) if list(tokens) == prompts[i] + responses[i])
      n = len(tokens)
      for name in ("attention_mask", "loss_mask", "old_logprobs", "advantages", "ref_logprobs"):
        np.testing.assert_array_equal(getattr(packed, name)[row, columns], getattr(batch, name)[turn, :n])
      found += 1
  assert found == len(prompts)  # the 3 padding rows of the batch (no loss token) are left out
  assert packed.loss_mask.sum() == batch.loss_mask.sum()
  assert (packed.attention_mask == (packed.segment_ids > 0)).all()


def test_hosts_agree_on_the_largest_shape():
  prompts, responses, logprobs, advantages = _turns(seed=1)
  batch = build_train_batch(prompts, responses, logprobs, advantages, seq_len=32)
  packed = pack_rows(batch, min_rows=12, min_segments=5, row_multiple=8)
  assert packed.batch_size == 16 and packed.max_segments == 8
  assert (packed.segment_ids[12:] == 0).all() and packed.score_window == batch.score_window


def test_errors_name_the_problem():
  prompts, responses, logprobs, advantages = _turns(seed=2)
  batch = build_train_batch(prompts, responses, logprobs, advantages, seq_len=32)
  with pytest.raises(ValueError, match="more than the packed row length 16"):
    pack_rows(batch, seq_len=16)
  left_padded = batch.replace(attention_mask=batch.attention_mask[:, ::-1].copy())
  with pytest.raises(ValueError, match="right-padded rows"):
    pack_rows(left_padded)
  with pytest.raises(ValueError, match="packed already"):
    pack_rows(pack_rows(batch))
  with pytest.raises(ValueError, match="row_multiple"):
    pack_rows(batch, row_multiple=0)
