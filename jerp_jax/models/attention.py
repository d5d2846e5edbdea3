"""Grouped-query attention of the decoder: decode against a KV cache, and causal self-attention in query
blocks with a memory-light backward pass (training and prompt prefill).

Layout: queries `[B, T, N, H]`; keys and values heads-major `[B, K, S, H]`, N a multiple of K (the KV
cache holds values so and keys transposed, `[B, K, H, S]`: `attention(..., keys_transposed=True)`). The
G = N / K query heads that share a kv head form the rows of one batched matmul (`[B, K, G * T, H]`), so
k/v are never repeated. Scores, softmax and the softmax statistics are float32; the matmul inputs are in
the compute dtype.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

_NEG_INF = -1e30  # finite, so rows whose keys are all masked (pad queries) give no NaN.
CAUSAL_QUERY_BLOCK = 256  # prefill and the full forward attend in causal blocks of this many queries
# On the CPU, causal self-attention walks the batch in chunks whose float32 scores of one query block take
# at most this many bytes (cache-sized; see `causal_self_attention`'s batch_rows).
CPU_SCORES_CHUNK_BYTES = 4 * 2**20


def heads_major(x: jax.Array) -> jax.Array:
  """`[B, T, K, H]` -> `[B, K, T, H]` (the layout of `attention`'s keys/values and of the KV cache)."""
  return x.transpose(0, 2, 1, 3)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype,
              keys_transposed: bool = False) -> jax.Array:
  """Grouped-query attention of all T queries at once against heads-major keys and values (decode
  against the KV cache; autodiff keeps the probabilities for a backward pass).

  Args:
    q: `[B, T, N, H]` queries; k, v: `[B, K, S, H]` keys/values, heads-major (N a multiple of K), so both
      matmuls are plain batched matmuls over (B, K) (a `[B, S, K, H]` cache cost a full cache transpose per
      layer and step on CPU).
    mask: `[B, T, S]` bool, True where query t may attend to key s.
    dtype: compute dtype of the matmuls (scores and softmax are float32).
    keys_transposed: k is `[B, K, H, S]` (the KV cache's key layout): the scores matmul then contracts
      the keys' major dimension, which XLA:CPU runs ~4x faster than contracting their minor one at
      decode shapes (`[32, 2, 2, 128, 64]`: 0.34 -> 0.07 ms; BUILD_NOTES section 6, session 27).
  Returns:
    `[B, T, N * H]` in `dtype`.
  """
  return _block_forward(q, k, v, mask, dtype, keys_transposed)[0]


def causal_self_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype,
                          query_block: int = CAUSAL_QUERY_BLOCK,
                          batch_rows: Optional[int] = None) -> jax.Array:
  """`attention` of a sequence over its own keys under a causal mask (prompt prefill and the full forward).

  The queries are the keys' own positions and the mask is causal (query t sees no key past t): query
  block i of `query_block` attends only to keys `[0, (i + 1) * query_block)`, skipping the keys every
  query of the block has masked out (the blocks run as an unrolled loop; half the score and value FLOPs
  for long rows), and each block's backward pass recomputes its probabilities from the saved softmax
  statistics (`_block_attention`) instead of keeping them. The same result as `attention` for every
  query that may attend to some key; a query that may attend to none (left padding) gets another
  meaningless average (its output is never read). Shapes as `attention`, with S == T.

  batch_rows: attend `batch_rows` rows at a time (a `lax.map` over the batch; it must divide B), so one
  block's float32 scores stay cache-sized instead of streaming `[B, N, block, T]` through memory between
  the ops of the block. None: on the CPU backend the largest divisor of B whose scores fit
  `CPU_SCORES_CHUNK_BYTES`, elsewhere the whole batch at once (accelerators want the one large batch).
  """
  batch, length = q.shape[:2]
  if k.shape[2] != length:
    raise ValueError(f"causal self-attention needs as many keys as queries, got {k.shape[2]} and {length}")
  if batch_rows is None:
    batch_rows = _cpu_batch_rows(batch, q.shape[2] * min(query_block, length) * length * 4)
  if batch_rows < 1 or batch % batch_rows:
    raise ValueError(f"batch_rows must divide the batch {batch}, got {batch_rows}")
  if batch_rows == batch:
    return _causal_blocks(q, k, v, mask, dtype, query_block)
  chunks = batch // batch_rows
  # chunk c holds rows c, c + chunks, c + 2 * chunks, ...: the split is of the minor part of the batch
  # index, so a batch sharded over devices stays sharded the same way inside each chunk
  split = lambda x: x.reshape(batch_rows, chunks, *x.shape[1:]).swapaxes(0, 1)
  out = jax.lax.map(lambda args: _causal_blocks(*args, dtype, query_block), (split(q), split(k), split(v),
                                                                              split(mask)))
  return out.swapaxes(0, 1).reshape(batch, *out.shape[2:])


def _cpu_batch_rows(batch: int, score_bytes_per_row: int) -> int:
  """Rows per chunk of `causal_self_attention`: the whole batch off the CPU; on it the largest divisor of
  `batch` whose float32 scores of one query block take at most `CPU_SCORES_CHUNK_BYTES` (at least 1)."""
  if jax.default_backend() != "cpu":
    return batch
  limit = max(1, CPU_SCORES_CHUNK_BYTES // score_bytes_per_row)
  return max(d for d in range(1, min(batch, limit) + 1) if batch % d == 0)


def _causal_blocks(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype,
                   query_block: int) -> jax.Array:
  """The causal query blocks of `causal_self_attention` over the rows given, `[B, T, N * H]`."""
  length = q.shape[1]
  outs = []
  for start in range(0, length, query_block):
    end = min(start + query_block, length)
    outs.append(_block_attention(q[:, start:end], k[:, :, :end], v[:, :, :end], mask[:, start:end, :end],
                                 dtype))
  return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]


def _group_queries(x: jax.Array, num_kv_heads: int) -> jax.Array:
  """`[B, T, N, H]` -> `[B, K, G * T, H]`: the queries sharing a kv head form one matmul's rows."""
  batch, length, num_heads, head_dim = x.shape
  groups = num_heads // num_kv_heads
  x = x.reshape(batch, length, num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  return x.reshape(batch, num_kv_heads, groups * length, head_dim)


def _ungroup(x: jax.Array, length: int) -> jax.Array:
  """`[B, K, G * T, H]` -> `[B, T, N * H]` (the inverse of `_group_queries`, heads flattened)."""
  batch, num_kv_heads, rows, head_dim = x.shape
  groups = rows // length
  x = x.reshape(batch, num_kv_heads, groups, length, head_dim).transpose(0, 3, 1, 2, 4)
  return x.reshape(batch, length, num_kv_heads * groups * head_dim)


def _masked_scores(q: jax.Array, k: jax.Array, mask: jax.Array, dtype,
                   keys_transposed: bool = False) -> jax.Array:
  """Scaled float32 scores `[B, K, G * T, S]` of grouped queries `[B, K, G * T, H]`, masked; keys
  `[B, K, S, H]` (or `[B, K, H, S]` when keys_transposed)."""
  batch, num_kv_heads, rows, head_dim = q.shape
  length, num_keys = mask.shape[1], mask.shape[2]
  spec = "bkqh,bkhs->bkqs" if keys_transposed else "bkqh,bksh->bkqs"
  scores = jnp.einsum(spec, q.astype(dtype), k.astype(dtype),
                      preferred_element_type=jnp.float32) * (head_dim ** -0.5)
  scores = scores.reshape(batch, num_kv_heads, rows // length, length, num_keys)
  scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
  return scores.reshape(batch, num_kv_heads, rows, num_keys)


def _softmax_stats(scores: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Row max and sum of exp(scores - max), `[B, K, G * T, 1]` each: softmax = exp(s - max) / sum.

  Kept as two numbers rather than one log-sum-exp: for a query with no key (every score -1e30) the
  log-sum-exp -1e30 + log(S) rounds to -1e30 in float32 and the probabilities would sum to S."""
  row_max = jnp.max(scores, axis=-1, keepdims=True)
  return row_max, jnp.sum(jnp.exp(scores - row_max), axis=-1, keepdims=True)


def _block_forward(q, k, v, mask, dtype, keys_transposed: bool = False):
  """(output `[B, T, N * H]`, grouped output `[B, K, G * T, H]` float32, softmax stats)."""
  grouped = _group_queries(q, k.shape[1])
  scores = _masked_scores(grouped, k, mask, dtype, keys_transposed)
  stats = _softmax_stats(scores)
  probs = jnp.exp(scores - stats[0]) / stats[1]
  out = jnp.einsum("bkqs,bksh->bkqh", probs.astype(dtype), v.astype(dtype),
                   preferred_element_type=jnp.float32)
  return _ungroup(out, q.shape[1]).astype(dtype), out, stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _block_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype) -> jax.Array:
  """`attention` whose backward pass saves only the output and two numbers per query (as flash
  attention does: the softmax's row max and sum) and recomputes the probabilities, instead of keeping
  `[B, K, G * T, S]` float32 probabilities per block and layer (which the layer scan also stacks and
  copies)."""
  return _block_forward(q, k, v, mask, dtype)[0]


def _block_attention_fwd(q, k, v, mask, dtype):
  out, grouped_out, stats = _block_forward(q, k, v, mask, dtype)
  return out, (q, k, v, mask, grouped_out, stats)


def _block_attention_bwd(dtype, residuals, d_out):
  q, k, v, mask, out, (row_max, row_sum) = residuals
  num_kv_heads, length = k.shape[1], q.shape[1]
  grouped = _group_queries(q, num_kv_heads)
  d_out = _group_queries(d_out.reshape(q.shape), num_kv_heads).astype(jnp.float32)
  probs = jnp.exp(_masked_scores(grouped, k, mask, dtype) - row_max) / row_sum  # [B, K, G * T, S]
  d_v = jnp.einsum("bkqs,bkqh->bksh", probs.astype(dtype), d_out.astype(dtype),
                   preferred_element_type=jnp.float32)
  d_probs = jnp.einsum("bkqh,bksh->bkqs", d_out.astype(dtype), v.astype(dtype),
                       preferred_element_type=jnp.float32)
  # softmax backward: d_scores = P * (dP - sum_s P dP), and sum_s P dP = sum_h dO * O
  d_scores = probs * (d_probs - jnp.sum(d_out * out, axis=-1, keepdims=True))
  # masked scores are constants (a query with no key spreads 1 / S over them): no gradient to q or k
  batch, _, rows, num_keys = d_scores.shape
  d_scores = jnp.where(mask[:, None, None, :, :],
                       d_scores.reshape(batch, num_kv_heads, rows // length, length, num_keys), 0.0)
  d_scores = d_scores.reshape(batch, num_kv_heads, rows, num_keys) * (q.shape[-1] ** -0.5)
  d_q = jnp.einsum("bkqs,bksh->bkqh", d_scores.astype(dtype), k.astype(dtype),
                   preferred_element_type=jnp.float32)
  d_k = jnp.einsum("bkqs,bkqh->bksh", d_scores.astype(dtype), grouped.astype(dtype),
                   preferred_element_type=jnp.float32)
  d_q = _ungroup(d_q, length).reshape(q.shape)
  return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype), None


_block_attention.defvjp(_block_attention_fwd, _block_attention_bwd)
