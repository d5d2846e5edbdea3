"""TrainBatch builder: layout, alignment convention, padding rows, score window, errors."""
import numpy as np
import pytest

from jerp_jax.rl.batch import (TrainBatch, build_train_batch, loss_span, score_columns, score_window_for,
                               validate_train_batch)


def test_build_train_batch_layout_and_alignment():
  batch = build_train_batch(
      prompt_ids=[[5, 6, 7], [8]],
      response_ids=[[9, 10], [11, 12, 13]],
      response_logprobs=[[-0.5, -1.0], [-0.1, -0.2, -0.3]],
      advantages=[2.0, [1.0, -1.0, 0.5]],
      pad_id=0, batch_multiple=4)
  assert batch.input_ids.shape == (4, 5)
  np.testing.assert_array_equal(batch.input_ids[0], [5, 6, 7, 9, 10])
  np.testing.assert_array_equal(batch.input_ids[1], [8, 11, 12, 13, 0])
  np.testing.assert_array_equal(batch.attention_mask[1], [1, 1, 1, 1, 0])
  # Token t of the row carries its own log-prob / advantage / mask.
  np.testing.assert_array_equal(batch.loss_mask[0], [0, 0, 0, 1, 1])
  np.testing.assert_allclose(batch.old_logprobs[0], [0, 0, 0, -0.5, -1.0])
  np.testing.assert_allclose(batch.advantages[0], [0, 0, 0, 2.0, 2.0])
  np.testing.assert_allclose(batch.advantages[1], [0, 1.0, -1.0, 0.5, 0])
  # Padding rows: nothing trained, one attended token.
  np.testing.assert_array_equal(batch.loss_mask[2:], 0)
  np.testing.assert_array_equal(batch.attention_mask[2:].sum(-1), [1, 1])
  assert batch.ref_logprobs is None
  assert batch.num_loss_tokens() == 5
  validate_train_batch(batch)


def test_build_train_batch_errors():
  with pytest.raises(ValueError, match="more than seq_len"):
    build_train_batch([[1, 2]], [[3, 4]], [[0.0, 0.0]], [1.0], seq_len=3)
  with pytest.raises(ValueError, match="response_logprobs"):
    build_train_batch([[1]], [[3, 4]], [[0.0]], [1.0])
  with pytest.raises(ValueError, match="empty prompt"):
    build_train_batch([[]], [[3]], [[0.0]], [1.0])


def test_validate_rejects_loss_on_first_token():
  ids = np.ones((1, 3), np.int32)
  batch = TrainBatch(input_ids=ids, attention_mask=ids, loss_mask=np.ones((1, 3), np.float32),
                     old_logprobs=np.zeros((1, 3), np.float32),
                     advantages=np.zeros((1, 3), np.float32))
  with pytest.raises(ValueError, match=r"loss_mask\[:, 0\]"):
    validate_train_batch(batch)


def test_score_window_holds_every_rows_loss_tokens():
  mask = np.zeros((4, 10), np.float32)
  mask[0, 2:5] = 1   # span 3
  mask[1, 7:10] = 1  # ends at the last column: the window moves left to fit the row
  mask[2, 4:9] = 1   # span 5 = the batch's span
  assert loss_span(mask) == 5 and loss_span(np.zeros((2, 3))) == 0
  np.testing.assert_array_equal(np.asarray(score_columns(mask, 5)),
                                [[2, 3, 4, 5, 6], [5, 6, 7, 8, 9], [4, 5, 6, 7, 8], [0, 1, 2, 3, 4]])
  assert score_window_for(5, 1024) == 16 and score_window_for(24, 1024) == 32
  assert score_window_for(33, 64) is None  # 64 is not shorter than the row: score every column
  with pytest.raises(ValueError, match="score_window must be in"):
    score_columns(mask, 11)


def test_build_train_batch_score_window():
  args = ([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], [[-0.5, -1.0], [-0.1, -0.2, -0.3]], [2.0, 1.0])
  assert build_train_batch(*args, seq_len=64).score_window == 16  # auto: 3 response tokens -> 16
  assert build_train_batch(*args).score_window is None  # rows of 5 tokens: nothing to skip
  assert build_train_batch(*args, seq_len=64, score_window=None).score_window is None
  assert build_train_batch(*args, seq_len=8, score_window=3).score_window == 3
  with pytest.raises(ValueError, match="score_window=2 is shorter than a row's loss tokens"):
    build_train_batch(*args, seq_len=8, score_window=2)
  with pytest.raises(ValueError, match="score_window must be 'auto', an int or None"):
    build_train_batch(*args, seq_len=8, score_window="all")
