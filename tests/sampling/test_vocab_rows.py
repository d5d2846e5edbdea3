"""Blocked argmax and two-level categorical draws against jnp.argmax and the softmax probabilities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jerp_jax.sampling import vocab_rows


@pytest.mark.parametrize("n,block", [(1000, 128), (1024, 128), (10, 4), (7, 128)])
def test_argmax_rows_equals_jnp_argmax_with_ties_nans_and_infinities(n, block):
  rng = np.random.default_rng(n)
  x = rng.integers(-3, 4, size=(12, n)).astype(np.float32)  # many ties of the max
  x[1, :] = -np.inf  # all -inf: index 0
  x[2, n // 2] = np.inf
  x[3, n - 1] = 9.0  # max in the (padded) last block
  x[4, [n // 3, n - 1]] = np.nan  # the first NaN wins
  x[5, [0, n // 3]] = np.nan
  x[6, :] = 1.0  # all equal: index 0
  x[7, n // 2:] = 5.0  # a run of ties spanning blocks: its first entry
  x[8] = rng.standard_normal(n)
  x[9, :] = np.nan
  got = np.asarray(jax.jit(vocab_rows.argmax_rows, static_argnums=1)(jnp.asarray(x), block))
  np.testing.assert_array_equal(got, np.asarray(jnp.argmax(jnp.asarray(x), axis=-1)))
  np.testing.assert_array_equal(got[[2, 3, 4, 5, 6, 7]], [n // 2, n - 1, n // 3, 0, 0, n // 2])


def test_argmax_rows_rejects_other_ranks():
  with pytest.raises(ValueError, match=r"\[batch, n\]"):
    vocab_rows.argmax_rows(jnp.zeros((2, 3, 4)))


def _frequencies(logits: np.ndarray, draws: int, block: int, seed: int = 0) -> np.ndarray:
  """[n] frequencies of `draws` draws from one row of logits [n]."""
  keys = jax.random.split(jax.random.key(seed), draws)
  rows = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (draws, logits.shape[0]))
  tokens = np.asarray(jax.jit(vocab_rows.categorical_rows, static_argnums=2)(keys, rows, block))
  assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() < logits.shape[0]
  return np.bincount(tokens, minlength=logits.shape[0]) / draws


@pytest.mark.parametrize("n,block", [(300, 128), (6, 128), (6, 2)])
def test_categorical_rows_follows_the_softmax_and_never_draws_masked_entries(n, block):
  rng = np.random.default_rng(n + block)
  logits = rng.standard_normal(n) * 2.0
  masked = np.zeros(n, bool)
  masked[[0, n // 2]] = True
  if n > 2 * block:
    masked[block:2 * block] = True  # a whole block with no mass
  logits[masked] = -np.inf
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  draws = 40_000
  freq = _frequencies(logits, draws, block)
  assert freq[masked].sum() == 0
  # Each frequency within 5 standard errors of its probability.
  stderr = np.sqrt(probs * (1 - probs) / draws)
  assert np.all(np.abs(freq - probs) <= 5 * stderr + 1e-12), np.abs(freq - probs).max()


def test_categorical_rows_draws_differ_by_key_and_repeat_by_key():
  logits = jnp.zeros((64, 500))
  keys = jax.random.split(jax.random.key(1), 64)
  a = vocab_rows.categorical_rows(keys, logits)
  np.testing.assert_array_equal(a, vocab_rows.categorical_rows(keys, logits))
  assert len(set(np.asarray(a).tolist())) > 40  # uniform over 500 entries: few repeats


def test_draw_at_the_top_of_the_unit_interval_stays_on_a_positive_weight():
  weights = jnp.asarray([[0.25, 0.5, 0.25, 0.0, 0.0]], jnp.float32)
  u = jnp.asarray([np.nextafter(np.float32(1), np.float32(0))])
  assert int(vocab_rows._first_over(weights, u)[0]) == 2  # pylint: disable=protected-access
  assert int(vocab_rows._first_over(weights, jnp.zeros(1))[0]) == 0  # pylint: disable=protected-access
  for u, want in ((0.5, 1), (0.75, 2), (0.2499, 0)):  # the first running sum (0.25, 0.75, 1) over u
    assert int(vocab_rows._first_over(weights, jnp.asarray([u]))[0]) == want  # pylint: disable=protected-access


def test_categorical_rows_checks_shapes():
  with pytest.raises(ValueError, match="keys"):
    vocab_rows.categorical_rows(jax.random.split(jax.random.key(0), 3), jnp.zeros((2, 5)))


def test_token_logprobs_equals_log_softmax_in_float64():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((4, 700)) * 5
  tokens = np.asarray([0, 699, 350, 1])
  want = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  got = np.asarray(vocab_rows.token_logprobs(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens)))
  np.testing.assert_allclose(got, want[np.arange(4), tokens], atol=2e-5)


def _sorted_nucleus(logits: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
  """Reference top-p in float64: stable descending sort, keep while the mass ranked above is < p.
  Returns (kept [rows, n], distance of each entry's mass-above from p)."""
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  kept, margin = np.zeros(logits.shape, bool), np.zeros(logits.shape)
  for r in range(logits.shape[0]):
    order = np.argsort(-probs[r], kind="stable")
    above = np.cumsum(probs[r][order]) - probs[r][order]
    kept[r, order] = above < p
    margin[r, order] = np.abs(above - p)
  return kept, margin


@pytest.mark.parametrize("p", [0.05, 0.3, 0.55, 0.9, 0.999, 1.0])
def test_nucleus_mask_equals_the_sorted_cut_with_ties(p):
  rng = np.random.default_rng(int(p * 1000))
  logits = np.concatenate([
      rng.standard_normal((6, 301)) * 3,
      rng.integers(-2, 3, size=(6, 301)).astype(np.float64),  # ties at every level, also at the cut
      np.zeros((1, 301)),  # all tied: the first entries by index
      np.where(np.arange(301) % 7 == 0, 0.0, -np.inf)[None],  # masked entries (probability 0)
  ])
  got = np.asarray(jax.jit(vocab_rows.nucleus_mask, static_argnums=1)(jnp.asarray(logits, jnp.float32), p))
  want, margin = _sorted_nucleus(logits, p)
  differ = got != want
  assert not (differ & (margin > 1e-5)).any(), np.argwhere(differ & (margin > 1e-5))[:5]
  assert got[np.arange(len(logits)), logits.argmax(-1)].all()  # each row keeps its most likely entry
  if p == 0.55:
    np.testing.assert_array_equal(np.flatnonzero(got[12]), np.arange(166))  # 165 / 301 < 0.55 <= 166 / 301
