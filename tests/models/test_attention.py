"""models/attention.py: causal query blocks, their flash-style backward and the CPU batch chunks, each
against plain attention over all keys (autodiff for the gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jerp_jax.models import attention as attention_lib
from jerp_jax.models.attention import attention, causal_self_attention
from jerp_jax.sharding import make_mesh


def test_causal_blocks_equal_attention_over_all_keys():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((2, 37, 4, 8)), jnp.float32)  # [B, T, N, H]
  k, v = (jnp.asarray(rng.standard_normal((2, 2, 37, 8)), jnp.float32) for _ in range(2))  # [B, K, S, H]
  mask = jnp.tril(jnp.ones((37, 37), bool))[None] & (jnp.arange(37) >= jnp.asarray([[5], [0]]))[:, None, :]
  plain = attention(q, k, v, mask, jnp.float32)
  for block in (8, 36, 37):  # 8: 4 blocks + a 5-query block; 36: one query past a block; 37: one block
    # block i attends only to keys [0, (i + 1) * block); the same on every query that sees a key
    # (left-pad queries see none: their output is never read, and here it differs)
    causal = causal_self_attention(q, k, v, mask, jnp.float32, query_block=block)
    sees_a_key = np.asarray(mask.any(-1))
    np.testing.assert_allclose(np.asarray(causal)[sees_a_key], np.asarray(plain)[sees_a_key], atol=1e-6,
                               rtol=0)
  with pytest.raises(ValueError, match="as many keys as queries"):
    causal_self_attention(q, k[:, :, :30], v[:, :, :30], mask[:, :, :30], jnp.float32, query_block=8)


def test_batch_chunks_of_causal_attention_equal_the_whole_batch():
  """batch_rows (a lax.map over strided row chunks) gives the whole batch's values and gradients; the CPU
  default picks the largest divisor of B within the score budget."""
  rng = np.random.default_rng(2)
  q = jnp.asarray(rng.standard_normal((6, 37, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((6, 2, 37, 8)), jnp.float32) for _ in range(2))
  lefts = jnp.asarray([[5], [0], [3], [0], [36], [1]])
  mask = jnp.tril(jnp.ones((37, 37), bool))[None] & (jnp.arange(37) >= lefts)[:, None, :]
  weights = jnp.asarray(rng.standard_normal((6, 37, 32)), jnp.float32)

  def grads(rows):
    fn = lambda q, k, v: jnp.sum(causal_self_attention(q, k, v, mask, jnp.float32, query_block=16,
                                                       batch_rows=rows) * weights)
    return jax.value_and_grad(fn, argnums=(0, 1, 2))(q, k, v)

  whole_value, whole_grads = grads(6)
  for rows in (1, 2, 3, None):
    value, got = grads(rows)
    np.testing.assert_allclose(float(value), float(whole_value), rtol=1e-5)
    for name, g, e in zip("qkv", got, whole_grads):
      np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, rtol=0, err_msg=f"{name} rows={rows}")
  with pytest.raises(ValueError, match="batch_rows must divide the batch 6, got 4"):
    causal_self_attention(q, k, v, mask, jnp.float32, batch_rows=4)
  per_row = 1 << 20  # bytes of one row's scores: 4 rows fit the 4 MiB budget
  assert attention_lib._cpu_batch_rows(12, per_row) == 4
  assert attention_lib._cpu_batch_rows(6, per_row) == 3  # the largest divisor within the budget
  assert attention_lib._cpu_batch_rows(7, per_row) == 1
  assert attention_lib._cpu_batch_rows(3, per_row) == 3
  assert attention_lib._cpu_batch_rows(5, 64 << 20) == 1  # one row over the budget still runs


def test_batch_chunks_of_causal_attention_on_a_sharded_batch():
  """Row chunks of a batch sharded over 4 devices (data x fsdp of a (2, 2, 2) mesh): the same values and
  gradients as one device, for chunk sizes that do (4) and do not (2) split evenly over the shards."""
  mesh = make_mesh(data=2, fsdp=2, tensor=2)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  rng = np.random.default_rng(3)
  q = jnp.asarray(rng.standard_normal((8, 24, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((8, 2, 24, 8)), jnp.float32) for _ in range(2))
  mask = jnp.tril(jnp.ones((24, 24), bool))[None] & (jnp.arange(24) >= jnp.arange(8)[:, None])[:, None, :]
  weights = jnp.asarray(rng.standard_normal((8, 24, 32)), jnp.float32)

  def loss(rows):
    return lambda q, k, v, mask: jnp.sum(causal_self_attention(q, k, v, mask, jnp.float32, query_block=16,
                                                               batch_rows=rows) * weights)

  expected = jax.value_and_grad(loss(8), argnums=(0, 1, 2))(q, k, v, mask)
  put = lambda x: jax.device_put(x, batch_sharding)
  for rows in (4, 2):
    got = jax.jit(jax.value_and_grad(loss(rows), argnums=(0, 1, 2)))(put(q), put(k), put(v), put(mask))
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, rtol=1e-6, err_msg=f"rows={rows}")


@pytest.mark.parametrize("block", [8, 64])
def test_causal_block_backward_equals_autodiff(block):
  """The causal blocks' custom backward (probabilities recomputed from the saved softmax max and sum) gives
  autodiff's gradients of the same blocked computation, left-pad queries (no key to see) included."""
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((2, 37, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((2, 2, 37, 8)), jnp.float32) for _ in range(2))
  mask = jnp.tril(jnp.ones((37, 37), bool))[None] & (jnp.arange(37) >= jnp.asarray([[5], [0]]))[:, None, :]
  weights = jnp.asarray(rng.standard_normal((2, 37, 32)), jnp.float32)

  def autodiff_blocks(q, k, v):
    spans = [(start, min(start + block, 37)) for start in range(0, 37, block)]
    return jnp.concatenate([attention(q[:, s:e], k[:, :, :e], v[:, :, :e], mask[:, s:e, :e],
                                                     jnp.float32) for s, e in spans], axis=1)

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)

  ours = lambda q, k, v: causal_self_attention(q, k, v, mask, jnp.float32, query_block=block)
  np.testing.assert_allclose(np.asarray(ours(q, k, v)), np.asarray(autodiff_blocks(q, k, v)), atol=1e-6)
  expected = jax.grad(loss(autodiff_blocks), argnums=(0, 1, 2))(q, k, v)
  got = jax.grad(loss(ours), argnums=(0, 1, 2))(q, k, v)
  for name, g, e in zip("qkv", got, expected):
    assert float(jnp.abs(e).max()) > 0
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=2e-5, rtol=0, err_msg=name)
