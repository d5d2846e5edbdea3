"""Policy drift: the exact KL against numpy on the models' own logits, zero for a policy against itself,
padding and batch size change nothing, and the NLL equals the learner's log-probs."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jerp_jax.models.config import ModelConfig
from jerp_jax.models.decoder import Decoder
from jerp_jax.rl import drift
from jerp_jax.rl import train_step as ts
from jerp_jax.rl.warm_start import SFTRow, sft_loss_on_rows

CONFIG = ModelConfig.tiny(64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=8)


def _state(seed: int) -> ts.TrainState:
  return ts.create_train_state(Decoder(CONFIG, rngs=nnx.Rngs(seed)), ts.OptimizerConfig(), mode="full")


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  m = x.max(axis=-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _rows(seed: int = 0, count: int = 7) -> list[SFTRow]:
  rng = np.random.default_rng(seed)
  return [SFTRow(rng.integers(0, CONFIG.vocab_size, rng.integers(3, 20)).tolist(),
                 rng.integers(0, CONFIG.vocab_size, rng.integers(1, 6)).tolist()) for _ in range(count)]


def test_categorical_kl_matches_numpy_and_is_zero_for_equal_logits():
  rng = np.random.default_rng(0)
  p, q = rng.normal(0, 2, (3, 5, 11)), rng.normal(0, 2, (3, 5, 11))
  log_p, log_q = _log_softmax(p), _log_softmax(q)
  want = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  np.testing.assert_allclose(np.asarray(drift.categorical_kl(p, q)), want, rtol=1e-5, atol=1e-6)
  assert (want > 0).all()
  np.testing.assert_allclose(np.asarray(drift.categorical_kl(p, p)), 0.0, atol=1e-6)


def test_token_divergence_aligns_with_the_learner_and_the_models_logits():
  policy, reference = _state(0), _state(1)
  rng = np.random.default_rng(2)
  ids = rng.integers(0, CONFIG.vocab_size, (2, 9)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  out = jax.device_get(drift.token_divergence(policy, reference, ids, mask))
  log_p = _log_softmax(np.asarray(ts.policy_model(policy)(ids, mask)))
  log_q = _log_softmax(np.asarray(ts.policy_model(reference)(ids, mask)))
  for t in range(1, ids.shape[1]):  # column t compares the distributions that predict token t
    want = (np.exp(log_p[:, t - 1]) * (log_p[:, t - 1] - log_q[:, t - 1])).sum(-1)
    np.testing.assert_allclose(out["kl"][:, t], want, rtol=1e-4, atol=1e-6)
    reverse = (np.exp(log_q[:, t - 1]) * (log_q[:, t - 1] - log_p[:, t - 1])).sum(-1)
    np.testing.assert_allclose(out["reverse_kl"][:, t], reverse, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(out["kl"][:, 0], 0.0)
  np.testing.assert_allclose(out["logprob"], np.asarray(ts.compute_logprobs(policy, ids, mask)), atol=1e-5)
  np.testing.assert_allclose(out["ref_logprob"], np.asarray(ts.compute_logprobs(reference, ids, mask)),
                             atol=1e-5)


def test_divergence_on_rows_counts_only_response_tokens_whatever_the_batching():
  policy, reference = _state(0), _state(1)
  rows = _rows()
  one = drift.divergence_on_rows(policy, reference, rows, pad_id=0, batch_size=1)
  four = drift.divergence_on_rows(policy, reference, rows, pad_id=0, batch_size=4)  # last batch padded
  for key, value in one.items():
    assert four[key] == pytest.approx(value, rel=1e-5), key
  assert one["turns"] == len(rows) and one["tokens"] == sum(len(r.response_ids) for r in rows)
  assert one["kl"] > 0 and one["reverse_kl"] > 0
  # per token: sum over the turns' KL sums / tokens
  assert one["kl"] == pytest.approx(one["kl_per_turn"] * one["turns"] / one["tokens"], rel=1e-5)
  assert one["nll"] == pytest.approx(sft_loss_on_rows(policy, rows, pad_id=0, seq_len=32, batch_size=4),
                                     rel=1e-5)
  assert one["ref_nll"] == pytest.approx(sft_loss_on_rows(reference, rows, pad_id=0, seq_len=32), rel=1e-5)


def test_a_policy_against_itself_has_no_drift():
  state = _state(3)
  same = drift.divergence_on_rows(state, state, _rows(1), pad_id=0, batch_size=4)
  assert same["kl"] == pytest.approx(0.0, abs=1e-6) and same["reverse_kl"] == pytest.approx(0.0, abs=1e-6)
  assert same["nll"] == pytest.approx(same["ref_nll"])


def test_no_rows_is_an_error():
  with pytest.raises(ValueError, match="no rows"):
    drift.divergence_on_rows(_state(0), _state(0), [], pad_id=0)
