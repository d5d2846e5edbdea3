"""Decoder behaviour: cached decode == full forward, prefill == decode, blocked == plain attention, LoRA
on/off semantics, packed rows == separate rows, bf16 and remat variants."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jerp_jax.models import Decoder, ModelConfig, init_cache
from jerp_jax.models.attention import CAUSAL_QUERY_BLOCK
from jerp_jax.models import decoder
from jerp_jax.models.decoder import rope_inv_freq


def _ids_and_mask(batch=2, length=9, left_pads=(3, 0), seed=0):
  ids = np.random.RandomState(seed).randint(1, 256, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), np.int32)
  for row, n in enumerate(left_pads):
    mask[row, :n] = 0
  return jnp.asarray(ids), jnp.asarray(mask)


def _randomize_lora_b(model, seed=1):
  rng = np.random.default_rng(seed)
  state = nnx.state(model, nnx.LoRAParam)
  nnx.update(model, jax.tree.map(
      lambda v: jnp.asarray(0.05 * rng.standard_normal(v.shape), v.dtype), state))


@pytest.fixture(scope="module")
def tiny_model():
  return Decoder(ModelConfig.tiny(lora_rank=4, lora_alpha=8.0), rngs=nnx.Rngs(3))


def test_cached_decode_matches_full_forward(tiny_model):
  """Prefill 5 tokens of a left-padded batch, then decode the rest token by token."""
  model = tiny_model
  _randomize_lora_b(model)
  ids, mask = _ids_and_mask()
  graphdef, state = nnx.split(model)
  full = model(ids, mask)

  @jax.jit
  def decode(s, tokens, positions, cache, write_index, kv_valid):
    return nnx.merge(graphdef, s).decode(tokens, positions, cache, write_index, kv_valid)

  max_len = 16
  positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
  cache = init_cache(model.config, 2, max_len)
  assert len(cache.k) == 2 and all(k.shape == (2, 2, 16, max_len) for k in cache.k)  # per layer, transposed
  assert all(v.shape == (2, 2, max_len, 16) for v in cache.v)
  kv_valid = jnp.zeros((2, max_len), bool)
  outputs = []
  for start, end in [(0, 5), (5, 6), (6, 7), (7, 8), (8, 9)]:
    kv_valid = kv_valid.at[:, start:end].set(mask[:, start:end].astype(bool))
    logits, cache = decode(state, ids[:, start:end], positions[:, start:end], cache,
                           jnp.int32(start), kv_valid)
    outputs.append(logits)
  cached = jnp.concatenate(outputs, axis=1)
  real = np.asarray(mask).astype(bool)
  np.testing.assert_allclose(np.asarray(cached)[real], np.asarray(full)[real], atol=1e-5, rtol=0)
  keys, values = jnp.stack(cache.k), jnp.stack(cache.v)
  assert float(jnp.abs(keys[..., 9:]).max()) == 0.0  # slots past the written ones untouched
  assert float(jnp.abs(values[..., 9:, :]).max()) == 0.0
  assert float(jnp.abs(keys[..., :9]).max()) > 0.0


def test_prefill_writes_the_cache_that_decode_writes(tiny_model):
  """Prefill of a prompt longer than one query block: the same cache on the prompt's slots and the same
  next-token logits as decode at write index 0 (which attends over the whole cache)."""
  model = tiny_model
  length, max_len = CAUSAL_QUERY_BLOCK + 44, CAUSAL_QUERY_BLOCK + 64
  ids, mask = _ids_and_mask(length=length, left_pads=(40, 0))
  positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
  valid = mask.astype(bool)
  kv_valid = jnp.zeros((2, max_len), bool).at[:, :length].set(valid)
  _, by_decode = model.decode(ids, positions, init_cache(model.config, 2, max_len), jnp.int32(0), kv_valid)
  by_prefill = model.prefill(ids, positions, valid, init_cache(model.config, 2, max_len))
  real = np.asarray(valid)
  keys_as_values = lambda keys: tuple(np.swapaxes(k, 2, 3) for k in keys)  # [B, K, H, S] -> [B, K, S, H]
  for got, want in ((keys_as_values(by_prefill.k), keys_as_values(by_decode.k)), (by_prefill.v, by_decode.v)):
    got, want = np.stack(got), np.stack(want)  # per-layer arrays -> [L, B, K, S, H]
    # [L, B, K, S, H] -> [B, S, L, K, H]: the real prompt slots of every layer and kv head
    by_slot = lambda cache: cache.transpose(1, 3, 0, 2, 4)[:, :length][real]
    np.testing.assert_allclose(by_slot(got), by_slot(want), atol=1e-5, rtol=0)
    assert float(np.abs(got[:, :, :, length:]).max()) == 0.0  # slots past the prompt untouched
  step_valid = kv_valid.at[:, length].set(True)
  token, position = ids[:, -1:], positions[:, -1:] + 1
  after_prefill, _ = model.decode(token, position, by_prefill, jnp.int32(length), step_valid)
  after_decode, _ = model.decode(token, position, by_decode, jnp.int32(length), step_valid)
  np.testing.assert_allclose(np.asarray(after_prefill), np.asarray(after_decode), atol=1e-5, rtol=0)


def test_unrolled_layers_equal_the_layer_scan(tiny_model):
  """config.scan_layers=False (a Python loop over the layers): the same logits, gradients and prefill
  cache as the scan."""
  unrolled = Decoder(dataclasses.replace(tiny_model.config, scan_layers=False), rngs=nnx.Rngs(5))
  nnx.update(unrolled, nnx.state(tiny_model))
  ids, mask = _ids_and_mask(length=CAUSAL_QUERY_BLOCK + 20, left_pads=(7, 0))
  weights = jnp.asarray(np.random.default_rng(2).standard_normal((2, ids.shape[1], tiny_model.config.vocab_size)),
                        jnp.float32) * mask[..., None]

  def loss_and_grads(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(ids, mask) * weights)
    return jax.value_and_grad(loss)(params)

  (scan_loss, scan_grads), (loop_loss, loop_grads) = loss_and_grads(tiny_model), loss_and_grads(unrolled)
  np.testing.assert_allclose(float(loop_loss), float(scan_loss), rtol=1e-5)
  for got, want in zip(jax.tree.leaves(loop_grads), jax.tree.leaves(scan_grads), strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
  positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
  caches = [m.prefill(ids, positions, mask.astype(bool), init_cache(m.config, 2, ids.shape[1] + 8))
            for m in (tiny_model, unrolled)]
  for got, want in zip(jax.tree.leaves(caches[1]), jax.tree.leaves(caches[0]), strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_packed_rows_equal_each_sequence_alone(tiny_model):
  """Three sequences packed side by side in one row (segment ids 1-3, then padding) get the hidden states
  they get alone in right-padded rows of their own; the segment mask is causal within each segment."""
  model = tiny_model
  lengths, width = (5, 9, 4), 24
  ids, _ = _ids_and_mask(batch=3, length=max(lengths), left_pads=(0, 0, 0), seed=4)
  mask = (np.arange(max(lengths))[None] < np.array(lengths)[:, None]).astype(np.int32)
  alone = np.asarray(model.hidden_states(ids, jnp.asarray(mask)))
  packed_ids = np.zeros((1, width), np.int32)
  segments = np.zeros((1, width), np.int32)
  start = 0
  for i, n in enumerate(lengths):
    packed_ids[0, start:start + n] = np.asarray(ids)[i, :n]
    segments[0, start:start + n] = i + 1
    start += n
  packed = np.asarray(model.hidden_states(jnp.asarray(packed_ids), None, jnp.asarray(segments)))
  start = 0
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(packed[0, start:start + n], alone[i, :n], rtol=1e-5, atol=1e-5)
    start += n
  # without the segments the later sequences see the earlier ones: the check above can fail
  unsegmented = jnp.asarray((segments > 0).astype(np.int32))
  whole = np.asarray(model.hidden_states(jnp.asarray(packed_ids), unsegmented))
  assert np.abs(whole[0, lengths[0]:sum(lengths)] - packed[0, lengths[0]:sum(lengths)]).max() > 1e-2
  positions = np.asarray(decoder.segment_positions(jnp.asarray(segments)))[0, :sum(lengths)]
  np.testing.assert_array_equal(positions, np.concatenate([np.arange(n) for n in lengths]))


def test_lora_zero_init_is_identity_and_use_lora_false_is_the_base_model(tiny_model):
  config = tiny_model.config
  base = Decoder(dataclasses.replace(config, lora_rank=0), rngs=nnx.Rngs(0))
  lora = Decoder(config, rngs=nnx.Rngs(1))
  nnx.update(lora, nnx.state(base, nnx.Not(nnx.LoRAParam)))  # same base weights, fresh LoRA (B = 0)
  ids, mask = _ids_and_mask()
  expected = base(ids, mask)
  np.testing.assert_array_equal(lora(ids, mask), expected)
  _randomize_lora_b(lora)
  assert float(jnp.abs(lora(ids, mask) - expected).max()) > 1e-2
  np.testing.assert_array_equal(lora(ids, mask, use_lora=False), expected)


def test_lora_targets_select_projections_and_only_lora_params_get_gradients():
  config = ModelConfig.tiny(lora_rank=2, lora_targets=("q", "v", "down"))
  model = Decoder(config)
  lora_state = nnx.state(model, nnx.LoRAParam)
  paths = {"/".join(str(p) for p in path) for path, _ in nnx.to_flat_state(lora_state)}
  assert paths == {f"layers/{m}/lora_{x}" for m in ("q_proj", "v_proj", "down_proj") for x in "ab"}
  graphdef, lora_params, rest = nnx.split(model, nnx.LoRAParam, ...)
  ids, mask = _ids_and_mask()
  grads = jax.grad(lambda lp: nnx.merge(graphdef, lp, rest)(ids, mask).std())(lora_params)
  b_grad = grads["layers"]["q_proj"]["lora_b"].get_value()
  a_grad = grads["layers"]["q_proj"]["lora_a"].get_value()
  assert b_grad.shape == (2, 2, 64) and float(jnp.abs(b_grad).max()) > 0
  assert float(jnp.abs(a_grad).max()) == 0.0  # B = 0 blocks A's gradient at init, as in PEFT


def test_bf16_compute_is_close_to_fp32(tiny_model):
  ids, mask = _ids_and_mask()
  fp32 = np.asarray(tiny_model(ids, mask))
  config = dataclasses.replace(tiny_model.config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  bf16_model = Decoder(config)
  assert bf16_model.embed.get_value().dtype == jnp.bfloat16
  assert bf16_model.layers.q_proj.lora_a.get_value().dtype == jnp.float32  # LoRA stays fp32
  nnx.update(bf16_model, jax.tree.map(lambda src, dst: src.astype(dst.dtype),
                                      nnx.state(tiny_model), nnx.state(bf16_model)))
  out = bf16_model(ids, mask)
  assert out.dtype == jnp.float32
  real = np.asarray(mask).astype(bool)
  diff = np.abs(np.asarray(out)[real] - fp32[real]).max()
  assert 0 < diff < 0.05 * np.abs(fp32).max() + 0.02, diff


@pytest.mark.slow
def test_remat_gives_the_same_gradients(tiny_model):
  ids, mask = _ids_and_mask()
  norms = []
  for remat in (False, True):
    model = Decoder(dataclasses.replace(tiny_model.config, lora_rank=0, remat=remat),
                    rngs=nnx.Rngs(5))
    graphdef, params = nnx.split(model)
    grads = jax.grad(lambda p: nnx.merge(graphdef, p)(ids, mask).std())(params)
    norms.append(np.sqrt(sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads))))
  assert norms[0] > 0 and abs(norms[0] - norms[1]) < 1e-5 * norms[0]


def test_llama3_rope_scaling_changes_low_frequencies_only():
  base = ModelConfig.tiny(head_dim=64, num_heads=1, num_kv_heads=1, rope_theta=500000.0)
  scaled = dataclasses.replace(base, rope_scaling={
      "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192})
  plain, adjusted = rope_inv_freq(base), rope_inv_freq(scaled)
  wavelen = 2 * np.pi / plain
  high, low = wavelen < 8192 / 4, wavelen > 8192 / 1
  assert high.any() and low.any()
  np.testing.assert_array_equal(adjusted[high], plain[high])
  np.testing.assert_allclose(adjusted[low], plain[low] / 8.0, rtol=1e-6)
  medium = ~high & ~low
  assert np.all((adjusted[medium] < plain[medium]) & (adjusted[medium] > plain[medium] / 8.0))


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
])
def test_rope_frequencies_equal_transformers(scaling):
  import transformers  # pylint: disable=import-outside-toplevel
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # pylint: disable=import-outside-toplevel
  hf = transformers.LlamaConfig(hidden_size=1024, num_attention_heads=8, head_dim=128,
                                rope_theta=500000.0, rope_scaling=dict(scaling))
  expected, attention_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, None)
  assert attention_factor == 1.0
  ours = rope_inv_freq(ModelConfig.from_hf(hf.to_dict()))
  np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kernel_out_first", [False, True])
@pytest.mark.parametrize("in_dim,out_dim", [(8, 6), (6, 8)])  # both branches: dy^T x and x^T dy
def test_dense_gradients_equal_plain_einsum(kernel_out_first, in_dim, out_dim):
  """`dense` (custom VJP laid out for XLA:CPU) has the value and gradients of the plain einsum."""
  from jerp_jax.models.decoder import dense  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5, in_dim)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((out_dim, in_dim) if kernel_out_first else (in_dim, out_dim)),
                       jnp.float32)
  spec = "bti,oi->bto" if kernel_out_first else "bti,io->bto"
  weights = jnp.asarray(rng.standard_normal((3, 5, out_dim)), jnp.float32)

  def ours(x, kernel):
    return jnp.sum(jnp.sin(dense(x, kernel, kernel_out_first=kernel_out_first)) * weights)

  def reference(x, kernel):
    return jnp.sum(jnp.sin(jnp.einsum(spec, x, kernel)) * weights)

  value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(x, kernel)
  ref_value, ref_grads = jax.value_and_grad(reference, argnums=(0, 1))(x, kernel)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
