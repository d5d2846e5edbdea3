"""Mesh, logical-axis rules, and sharded forward / decode == single-device results on 8 CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jerp_jax.models import Decoder, ModelConfig, init_cache, load_pretrained
from jerp_jax.sharding import (MESH_AXES, auto_mesh, logical_to_sharding, logical_to_spec, make_mesh,
                               shard_state, state_shardings)


def test_make_mesh_fills_the_free_axis_and_rejects_bad_sizes():
  mesh = make_mesh(data=-1, fsdp=2, tensor=2)
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert dict(make_mesh(devices=jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1, "tensor": 1}
  with pytest.raises(ValueError, match="8 devices"):
    make_mesh(data=3, fsdp=1, tensor=1)
  with pytest.raises(ValueError, match="at most one"):
    make_mesh(data=-1, fsdp=-1)


def test_auto_mesh_takes_jax_make_mesh_and_rejects_foreign_axes(llama_checkpoint):
  explicit = jax.make_mesh((2, 2, 2), MESH_AXES)  # Explicit axes by default in this JAX
  assert jax.sharding.AxisType.Explicit in explicit.axis_types
  mesh = auto_mesh(explicit)
  assert mesh == make_mesh(2, 2, 2) and auto_mesh(mesh) is mesh
  # the model loaded on it runs eagerly (a gather on Explicit axes would need an out_sharding)
  single, _ = load_pretrained(llama_checkpoint)
  sharded, _ = load_pretrained(llama_checkpoint, mesh=explicit)
  assert sharded.embed.get_value().sharding.mesh == mesh
  ids, mask = _batch()
  real = np.asarray(mask).astype(bool)
  np.testing.assert_allclose(np.asarray(sharded(ids, mask))[real], np.asarray(single(ids, mask))[real],
                             atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match=r"mesh axes \('x',\) are not among"):
    auto_mesh(jax.make_mesh((8,), ("x",)))
  with pytest.raises(ValueError, match=r"mesh axes \('x',\)"):
    load_pretrained(llama_checkpoint, mesh=jax.make_mesh((8,), ("x",)))


def test_logical_rules_map_to_mesh_axes():
  mesh = make_mesh(2, 2, 2)
  assert logical_to_spec(("layers", "embed", "heads"), mesh) == P(None, "fsdp", "tensor")
  assert logical_to_spec(("batch", "length", "act_embed"), mesh) == P(("data", "fsdp"), None, None)
  assert logical_to_spec(("vocab", "embed"), mesh) == P("tensor", "fsdp")
  # a dimension not divisible by its mesh axes stays replicated
  assert logical_to_spec(("batch", "act_vocab"), mesh, shape=(6, 256)) == P(None, "tensor")
  # mesh axes of size 1 are dropped
  assert logical_to_spec(("embed", "mlp"), make_mesh(8, 1, 1)) == P(None, None)
  with pytest.raises(KeyError, match="nonsense"):
    logical_to_spec(("nonsense",), mesh)


def _batch():
  ids = np.random.RandomState(1).randint(3, 256, (4, 8)).astype(np.int32)
  mask = np.ones((4, 8), np.int32)
  mask[1, :3] = 0
  mask[2, 6:] = 0
  return jnp.asarray(ids), jnp.asarray(mask)


def test_sharded_forward_and_decode_equal_single_device(llama_checkpoint):
  mesh = make_mesh(2, 2, 2)
  single, config = load_pretrained(llama_checkpoint)
  sharded, _ = load_pretrained(llama_checkpoint, mesh=mesh)
  q_kernel = sharded.layers.q_proj.kernel.get_value()
  assert q_kernel.sharding.spec == P(None, "fsdp", "tensor")
  assert sharded.embed.get_value().sharding.spec == P("tensor", "fsdp")
  ids, mask = _batch()
  expected = single(ids, mask)

  graphdef, state = nnx.split(sharded)
  batch_sharding = logical_to_sharding(mesh, ("batch", "length"))
  logits_sharding = logical_to_sharding(mesh, ("batch", "length", "act_vocab"))
  forward = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m),
                    in_shardings=(state_shardings(state, mesh), batch_sharding, batch_sharding),
                    out_shardings=logits_sharding)
  with jax.set_mesh(mesh):  # activates the logical activation constraints inside the model
    got = forward(state, jax.device_put(ids, batch_sharding), jax.device_put(mask, batch_sharding))
  assert got.sharding.spec == P(("data", "fsdp"), None, "tensor")
  real = np.asarray(mask).astype(bool)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(expected)[real], atol=1e-5, rtol=0)

  # one prefill step with a KV cache, sharded over batch and kv heads
  cache = init_cache(config, 4, 12)
  cache_spec = logical_to_sharding(mesh, ("batch", "act_kv_heads", "cache_length", "head_dim"))
  kv_valid = jnp.zeros((4, 12), bool).at[:, :8].set(mask.astype(bool))
  positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
  decode = jax.jit(lambda s, c: nnx.merge(graphdef, s).decode(ids, positions, c, jnp.int32(0), kv_valid))
  with jax.set_mesh(mesh):
    prefill_logits, new_cache = decode(state, jax.tree.map(lambda x: jax.device_put(x, cache_spec), cache))
  np.testing.assert_allclose(np.asarray(prefill_logits)[real], np.asarray(expected)[real], atol=1e-5)
  assert [k.shape for k in new_cache.k] == [k.shape for k in cache.k]


def test_shard_state_places_a_random_model_by_its_logical_axes():
  mesh = make_mesh(2, 2, 2)
  model = Decoder(ModelConfig.tiny(lora_rank=4))
  state = nnx.state(model)
  placed = shard_state(state, mesh)
  flat = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(placed)}
  assert flat["layers/down_proj/kernel"].sharding.spec == P(None, "tensor", "fsdp")
  assert flat["layers/q_proj/lora_a"].sharding.spec == P(None, "fsdp", None)
  assert flat["layers/q_proj/lora_b"].sharding.spec == P(None, None, "tensor")
  assert flat["final_norm/weight"].sharding.spec == P(None)
  assert all(isinstance(v.sharding, NamedSharding) and v.sharding.mesh == mesh for v in flat.values())
  original = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(state)}
  for name, value in flat.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(original[name]), err_msg=name)
