"""Per-row reductions over the vocabulary that the decode loop runs on every step.

logits are `[batch, vocab]`; each function returns one value per row (`[batch]`), except `nucleus_mask`
(a `[batch, vocab]` mask).

Why not `jnp.argmax` / `jax.random.categorical`: on the CPU backend XLA runs argmax as a variadic
(value, index) reduce that it does not vectorise, about 20x slower than a max over the same array
(0.59 ms against 0.03 ms for 32 x 8,192 float32; BUILD_NOTES section 6, session 27), and
`jax.random.categorical` draws one Gumbel number per vocabulary entry, i.e. runs threefry over the
whole `[batch, vocab]` array on every step (4.6 ms per step at 32 x 8,192, more than the rest of the
tiny model's decode step). Here:

- `argmax_rows` takes the max of each block of `VOCAB_BLOCK` entries (a vectorised reduce), the argmax
  over the blocks' maxima, and the argmax inside the winning block: the same index as `jnp.argmax`
  (ties to the lowest index, a NaN counts as the largest value and the first NaN wins).
- `categorical_rows` draws by inverse CDF in the same two levels, with two uniform numbers per row:
  the block with probability (block's mass / total mass), then the entry with probability (entry's
  mass / block's mass), so each entry's probability is exactly its softmax probability (up to float32
  rounding of the sums). Entries with probability 0 (logit -inf, as top-k / top-p masks write) are
  never drawn.
- `nucleus_mask` is top-p's kept set without sorting the vocabulary (a full `argsort` of `[32, 8192]` took
  72 ms per step on this CPU): a bisection over the probability threshold, then one over token ids for
  ties at the threshold.
- `token_logprobs` is the log-prob of one token per row without writing the `[batch, vocab]` log-softmax.

On accelerators both forms are cheap; these are used on every backend so that one key gives the same
draw everywhere.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

VOCAB_BLOCK = 128  # entries per block: 151,936 (Qwen2), 128,256 (Llama 3) and 32,000 are multiples


def _blocks(x: jax.Array, block: int, fill: float) -> jax.Array:
  """[batch, n] -> [batch, ceil(n / block), block], the last block padded with `fill`."""
  rows, n = x.shape
  num_blocks = -(-n // block)
  if num_blocks * block != n:
    x = jnp.pad(x, ((0, 0), (0, num_blocks * block - n)), constant_values=fill)
  return x.reshape(rows, num_blocks, block)


def _take_block(blocks: jax.Array, index: jax.Array) -> jax.Array:
  """blocks [batch, num_blocks, block], index [batch] -> that block of each row, [batch, block]."""
  return jnp.take_along_axis(blocks, index[:, None, None], axis=1)[:, 0]


def argmax_rows(x: jax.Array, block: int = VOCAB_BLOCK) -> jax.Array:
  """Index of each row's largest entry, exactly as `jnp.argmax(x, axis=-1)`. x [batch, n] -> [batch] int32."""
  if x.ndim != 2:
    raise ValueError(f"argmax_rows takes [batch, n], got shape {x.shape}")
  if x.shape[1] <= block:
    return jnp.argmax(x, axis=-1).astype(jnp.int32)
  blocks = _blocks(x, block, -jnp.inf)  # padding after every real entry never wins a tie
  # XLA:CPU's vectorised max may drop a NaN, so a block holding one is marked NaN explicitly (jnp.argmax
  # over the blocks then picks the first such block, as it would pick the first NaN).
  block_max = jnp.where(jnp.any(jnp.isnan(blocks), axis=-1), jnp.nan, jnp.max(blocks, axis=-1))
  best_block = jnp.argmax(block_max, axis=-1)
  inside = jnp.argmax(_take_block(blocks, best_block), axis=-1)
  return (best_block * block + inside).astype(jnp.int32)


def _first_over(weights: jax.Array, u: jax.Array) -> jax.Array:
  """Draws index i with probability weights[i] / sum(weights), per row, from a uniform number.

  weights [batch, n] >= 0 with a positive sum; u [batch] in [0, 1) -> [batch] int32: the first i whose
  running sum exceeds u * total. Clamped to the last positive weight, so float rounding of u * total up
  to the total cannot return a zero-weight index.
  """
  running = jnp.cumsum(weights, axis=-1)
  threshold = u * running[:, -1]
  index = jnp.sum(running <= threshold[:, None], axis=-1)
  positions = jax.lax.broadcasted_iota(jnp.int32, weights.shape, 1)
  last_positive = jnp.max(jnp.where(weights > 0, positions, 0), axis=-1)
  return jnp.minimum(index, last_positive).astype(jnp.int32)


def categorical_rows(keys: jax.Array, logits: jax.Array, block: int = VOCAB_BLOCK) -> jax.Array:
  """One draw per row from softmax(logits). keys [batch] PRNG keys, logits [batch, n] -> [batch] int32."""
  if logits.ndim != 2 or keys.shape != logits.shape[:1]:
    raise ValueError(f"categorical_rows takes keys [batch] and logits [batch, n], got keys {keys.shape} "
                     f"and logits {logits.shape}")
  logits = logits.astype(jnp.float32)
  weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))  # the max entry weighs 1
  uniforms = jax.vmap(lambda key: jax.random.uniform(key, (2,)))(keys)  # [batch, 2]
  if logits.shape[1] <= block:
    return _first_over(weights, uniforms[:, 0])
  blocks = _blocks(weights, block, 0.0)
  chosen = _first_over(jnp.sum(blocks, axis=-1), uniforms[:, 0])
  inside = _first_over(_take_block(blocks, chosen), uniforms[:, 1])
  return chosen * block + inside


def _mass_above(probs: jax.Array, threshold: jax.Array) -> jax.Array:
  """Per row, the total probability of the entries above threshold [batch] -> [batch]."""
  return jnp.sum(jnp.where(probs > threshold[:, None], probs, 0.0), axis=-1)


def nucleus_mask(logits: jax.Array, p: float) -> jax.Array:
  """Top-p's kept entries of softmax(logits), without a sort. logits [batch, n] -> bool [batch, n].

  Entries ranked by probability, ties by lower index first (a stable descending sort's order); an entry
  is kept when the probability of the entries ranked above it is < p, so each row keeps its most likely
  entry. Equal to cutting the stably sorted row at its running sum (up to float32 rounding of the sums):
  - the threshold v* is the smallest probability with mass_above(v*) < p (a bisection over the bit
    patterns of float32 probabilities, which order as integers), so every entry above v* is kept and
    every entry below it is not;
  - of the entries equal to v*, the i-th by index is kept while mass_above(v*) + i * v* < p (a bisection
    over indices finds the last one).
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  rows, n = probs.shape
  bits = lambda x: jax.lax.bitcast_convert_type(x, jnp.int32)
  value = lambda b: jax.lax.bitcast_convert_type(b, jnp.float32)

  def threshold_step(_, bounds):
    low, high = bounds  # the answer is in [low, high]; mass_above(value(high)) < p always holds
    mid = low + (high - low) // 2
    below_p = _mass_above(probs, value(mid)) < p
    return jnp.where(below_p, low, mid + 1), jnp.where(below_p, mid, high)

  start = (jnp.zeros((rows,), jnp.int32), jnp.full((rows,), bits(jnp.float32(1.0))))
  _, threshold_bits = jax.lax.fori_loop(0, 31, threshold_step, start)
  threshold = value(threshold_bits)
  ties = probs == threshold[:, None]
  room = (p - _mass_above(probs, threshold)) / threshold  # ties allowed: i = 0, 1, ... while i < room
  wanted = jnp.clip(jnp.ceil(room), 1, jnp.sum(ties, axis=-1)).astype(jnp.int32)
  positions = jax.lax.broadcasted_iota(jnp.int32, probs.shape, 1)

  def tie_step(_, bounds):
    low, high = bounds  # the last kept tie's index is in [low, high]
    mid = low + (high - low) // 2
    enough = jnp.sum(ties & (positions <= mid[:, None]), axis=-1) >= wanted
    return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

  start = (jnp.zeros((rows,), jnp.int32), jnp.full((rows,), n - 1, jnp.int32))
  _, last_tie = jax.lax.fori_loop(0, max(1, int(n - 1).bit_length()), tie_step, start)
  return (probs > threshold[:, None]) | (ties & (positions <= last_tie[:, None]))


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(logits)[token] per row, at temperature 1. logits [batch, vocab], tokens [batch] -> [batch]."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[:, None].astype(jnp.int32), axis=-1)[:, 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)
