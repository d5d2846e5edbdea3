"""The decoder-only transformer shared by Qwen2/Qwen2.5 and Llama 2/3 (Flax NNX).

Layout: every weight is stored `[in, out]` (Hugging Face stores `[out, in]`); the per-layer weights are
stacked along a leading `layers` axis and the forward pass is one `jax.lax.scan` over layers, so a 28- or
32-layer model compiles like a one-layer model. q/k/v/o keep heads flattened (`[D, N * H]`), so one
projection class serves attention, MLP and LoRA. Grouped-query attention never repeats k/v: queries are
reshaped to `[B, T, K, G, H]` (G = query heads per kv head) against keys `[B, S, K, H]`.

Dtypes: base weights are stored in `config.param_dtype` and cast to `config.dtype` for every matmul;
RMSNorm, RoPE, attention softmax and the logits are float32; LoRA factors are float32 parameters.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jerp_jax.models.attention import attention, causal_self_attention, heads_major
from jerp_jax.models.config import ModelConfig
from jerp_jax.models.lora import PROJECTION_TARGETS
from jerp_jax.sharding import constrain

_INIT_STD = 0.02


def _param(value: jax.Array, names: tuple[Optional[str], ...], kind=nnx.Param) -> nnx.Variable:
  """A variable carrying its logical axis names (flax `out_sharding` metadata, no eager placement)."""
  return kind(value, out_sharding=names, eager_sharding=False)


# ------------------------------------------------------------------------------------------- math


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
  """RoPE inverse frequencies `[head_dim // 2]` float32, after `config.rope_scaling` (as transformers)."""
  dim = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
  inv_freq = inv_freq.astype(np.float32)
  scaling = config.rope_scaling or {}
  if config.rope_type == "linear":
    inv_freq = inv_freq / np.float32(scaling["factor"])
  elif config.rope_type == "llama3":
    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    inv_freq = np.where(is_medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates `x [B, T, N, H]` by `positions [B, T]` (half-split layout, as transformers); float32 out."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, H/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(emb), jnp.sin(emb)
  x = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


def rms_norm(x: jax.Array, weight: jax.Array, eps: float, dtype) -> jax.Array:
  """RMSNorm over the last axis, computed in float32, scaled after casting to `dtype` (as transformers)."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(dtype) * normed.astype(dtype)


def _causal_mask(valid: jax.Array) -> jax.Array:
  """`[B, T, T]` bool: query t attends to key s <= t where `valid [B, T]` (False on padding)."""
  length = valid.shape[1]
  return jnp.tril(jnp.ones((length, length), bool))[None] & valid[:, None, :]


def _segment_mask(segment_ids: jax.Array) -> jax.Array:
  """`[B, T, T]` bool of packed rows: query t attends to key s <= t of its own segment
  (`segment_ids [B, T]`: 1, 2, ... per packed sequence, 0 on padding, which attends to nothing)."""
  length = segment_ids.shape[1]
  same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
  return jnp.tril(jnp.ones((length, length), bool))[None] & same


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """RoPE positions `[B, T]` of packed rows: each segment counts from 0 at its first column (segments
  are contiguous runs of equal ids; padding columns get arbitrary positions)."""
  length = segment_ids.shape[1]
  columns = jnp.arange(length, dtype=jnp.int32)
  starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                            segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  first = jax.lax.cummax(jnp.where(starts, columns[None], 0), axis=1)
  return columns[None] - first


def _packed_positions_and_mask(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RoPE positions `[B, T]` and attention mask `[B, T, T]` of packed rows (`segment_ids [B, T]`)."""
  segment_ids = segment_ids.astype(jnp.int32)
  return segment_positions(segment_ids), _segment_mask(segment_ids)


def _write_slots(cache: jax.Array, new: jax.Array, first_slot) -> jax.Array:
  """Writes `new [B, T, K, H]` (heads-major, in the cache dtype) to one layer's `cache [B, K, S, H]` at
  slots `[first_slot, first_slot + T)`."""
  return jax.lax.dynamic_update_slice(cache, heads_major(new).astype(cache.dtype), (0, 0, first_slot, 0))


def _write_key_slots(cache: jax.Array, new: jax.Array, first_slot) -> jax.Array:
  """`_write_slots` for one layer's transposed keys `cache [B, K, H, S]`."""
  return jax.lax.dynamic_update_slice(cache, new.transpose(0, 2, 3, 1).astype(cache.dtype),
                                      (0, 0, 0, first_slot))


def _contract(x: jax.Array, kernel: jax.Array, kernel_out_first: bool, out_dtype) -> jax.Array:
  spec = "...i,oi->...o" if kernel_out_first else "...i,io->...o"
  return jnp.einsum(spec, x, kernel, preferred_element_type=out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense_cpu(x, kernel, kernel_out_first, out_dtype):
  return _contract(x, kernel, kernel_out_first, out_dtype)


def _dense_cpu_fwd(x, kernel, kernel_out_first, out_dtype):
  return _contract(x, kernel, kernel_out_first, out_dtype), (x, kernel)


def _dense_cpu_bwd(kernel_out_first, out_dtype, residuals, dy):
  del out_dtype
  x, kernel = residuals
  dy = dy.astype(x.dtype)
  dx = jnp.einsum("...o,oi->...i" if kernel_out_first else "...o,io->...i", dy, kernel)
  x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  # The weight gradient contracts over tokens, the leading axis of both operands. XLA:CPU runs such a dot
  # on its generic (Eigen) path; materialising the transpose of the narrower operand first (the barrier
  # stops XLA folding it back) lets the YNNPACK matmul run it: x^T dy when in <= out, else (dy^T x)^T,
  # whose final transpose is only weight-sized (BUILD_NOTES section 11, "The weight gradient's transpose").
  if x2.shape[1] <= dy2.shape[1]:
    dkernel = jnp.matmul(jax.lax.optimization_barrier(x2.T), dy2)  # [in, out]
    out_first = False
  else:
    dkernel = jnp.matmul(jax.lax.optimization_barrier(dy2.T), x2)  # [out, in]
    out_first = True
  if out_first != kernel_out_first:  # the barrier again: XLA would fold this transpose back into the dot
    dkernel = jax.lax.optimization_barrier(dkernel).T
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_dense_cpu.defvjp(_dense_cpu_fwd, _dense_cpu_bwd)


def dense(x: jax.Array, kernel: jax.Array, *, kernel_out_first: bool = False,
          out_dtype=None) -> jax.Array:
  """`x [..., in]` times `kernel [in, out]` (or `[out, in]` with kernel_out_first) -> `[..., out]`.

  On CPU the backward pass is laid out for XLA:CPU's fast matmul (see `_dense_cpu_bwd`); elsewhere
  this is a plain einsum (GPU/TPU dots take transposed operands natively).
  """
  if jax.default_backend() == "cpu":
    return _dense_cpu(x, kernel, kernel_out_first, out_dtype)
  return _contract(x, kernel, kernel_out_first, out_dtype)


# ----------------------------------------------------------------------------------------- modules


class RandomInit:
  """Random parameters for a freshly built model, drawn all at once by `fill(key)`.

  Parameters are created as shape placeholders and filled after the model is built. With a concrete
  key the values come from numpy on the host (no XLA compile: one threefry draw per parameter costs
  seconds of CPU compile time each); under a trace (`nnx.eval_shape`, `nnx.jit`) they come from two
  `jax.random` draws (one normal, one uniform) sliced into the parameters.
  """

  def __init__(self):
    self._entries: list[tuple[nnx.Variable, str, float]] = []

  def normal(self, shape: tuple[int, ...], std: float, dtype, names) -> nnx.Variable:
    variable = _param(jax.ShapeDtypeStruct(shape, dtype), names)
    self._entries.append((variable, "normal", std))
    return variable

  def lora_a(self, shape: tuple[int, ...], names) -> nnx.Variable:
    """A LoRA A factor `[..., in, rank]` float32, U(-1/sqrt(in), 1/sqrt(in)) (Kaiming-uniform, PEFT)."""
    variable = _param(jax.ShapeDtypeStruct(shape, jnp.float32), names, nnx.LoRAParam)
    self._entries.append((variable, "uniform", 1.0 / shape[-2] ** 0.5))
    return variable

  def fill(self, key: jax.Array) -> None:
    if isinstance(key, jax.core.Tracer):
      self._fill_traced(key)
      return
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    for variable, kind, scale in self._entries:
      shape, dtype = variable.get_value().shape, variable.get_value().dtype
      if kind == "normal":
        value = rng.standard_normal(shape, np.float32) * np.float32(scale)
      else:
        value = rng.uniform(-scale, scale, shape).astype(np.float32)
      variable.set_value(jnp.asarray(value, dtype))

  def _fill_traced(self, key: jax.Array) -> None:
    for kind in ("normal", "uniform"):
      entries = [(v, scale) for v, k, scale in self._entries if k == kind]
      key, subkey = jax.random.split(key)
      sizes = [math.prod(v.get_value().shape) for v, _ in entries]
      noise = (jax.random.normal(subkey, (sum(sizes),)) if kind == "normal"
               else jax.random.uniform(subkey, (sum(sizes),), minval=-1.0))
      offset = 0
      for (variable, scale), size in zip(entries, sizes):
        placeholder = variable.get_value()
        chunk = noise[offset:offset + size].reshape(placeholder.shape)
        variable.set_value((scale * chunk).astype(placeholder.dtype))
        offset += size


class RMSNorm(nnx.Module):
  """RMSNorm with weight `[*stack, D]` (ones)."""

  def __init__(self, size: int, eps: float, param_dtype, dtype, stack: tuple[int, ...] = ()):
    names = ("layers",) * len(stack) + ("norm",)
    self.weight = _param(jnp.asarray(np.ones(stack + (size,)), param_dtype), names)
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.weight[...], self.eps, self.dtype)


class Projection(nnx.Module):
  """`y = x @ kernel (+ bias) (+ scaling * (x @ lora_a) @ lora_b)`; kernel `[*stack, in, out]`.

  LoRA factors are `nnx.LoRAParam`s: `lora_a [*stack, in, r]` (Kaiming-uniform as PEFT), `lora_b
  [*stack, r, out]` (zeros, so a fresh LoRA model equals the base model).
  """

  def __init__(self, in_features: int, out_features: int, names: tuple[str, str], *, init: RandomInit,
               param_dtype, dtype, use_bias: bool = False, lora_rank: int = 0, lora_alpha: float = 0.0,
               stack: tuple[int, ...] = ()):
    stack_names = ("layers",) * len(stack)
    self.kernel = init.normal(stack + (in_features, out_features), _INIT_STD, param_dtype,
                              stack_names + names)
    self.bias = nnx.data(_param(jnp.asarray(np.zeros(stack + (out_features,)), param_dtype),
                                stack_names + names[1:])
                         if use_bias else None)
    lora_a = lora_b = None
    if lora_rank:
      lora_a = init.lora_a(stack + (in_features, lora_rank), stack_names + (names[0], "lora_rank"))
      lora_b = _param(jnp.asarray(np.zeros(stack + (lora_rank, out_features), np.float32)),
                      stack_names + ("lora_rank", names[1]), nnx.LoRAParam)
    self.lora_a = nnx.data(lora_a)
    self.lora_b = nnx.data(lora_b)
    self.lora_scaling = lora_alpha / lora_rank if lora_rank else 0.0
    self.dtype = dtype

  def __call__(self, x: jax.Array, use_lora: bool = True) -> jax.Array:
    x = x.astype(self.dtype)
    y = dense(x, self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if use_lora and self.lora_a is not None:
      low = dense(x, self.lora_a[...].astype(self.dtype))
      delta = dense(low, self.lora_b[...].astype(self.dtype))
      y = y + (self.lora_scaling * delta).astype(self.dtype)
    return y


class Block(nnx.Module):
  """All transformer layers, each weight stacked along a leading `[num_layers]` axis."""

  def __init__(self, config: ModelConfig, *, init: RandomInit):
    c = config
    stack = (c.num_layers,)

    def proj(name, in_f, out_f, names, use_bias=False):
      rank = c.lora_rank if PROJECTION_TARGETS[name] in c.lora_targets else 0
      return Projection(in_f, out_f, names, init=init, param_dtype=c.param_dtype, dtype=c.dtype,
                        use_bias=use_bias, lora_rank=rank, lora_alpha=c.lora_alpha, stack=stack)

    q_size, kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    self.input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.param_dtype, c.dtype, stack)
    self.q_proj = proj("q_proj", c.hidden_size, q_size, ("embed", "heads"), c.qkv_bias)
    self.k_proj = proj("k_proj", c.hidden_size, kv_size, ("embed", "kv_heads"), c.qkv_bias)
    self.v_proj = proj("v_proj", c.hidden_size, kv_size, ("embed", "kv_heads"), c.qkv_bias)
    self.o_proj = proj("o_proj", q_size, c.hidden_size, ("heads", "embed"), c.o_bias)
    self.post_attention_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.param_dtype, c.dtype, stack)
    self.gate_proj = proj("gate_proj", c.hidden_size, c.intermediate_size, ("embed", "mlp"))
    self.up_proj = proj("up_proj", c.hidden_size, c.intermediate_size, ("embed", "mlp"))
    self.down_proj = proj("down_proj", c.intermediate_size, c.hidden_size, ("mlp", "embed"))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
  """Keys and values, one array per layer, heads-major: `k[l]` `[batch, num_kv_heads, head_dim, max_len]`
  (keys transposed: the decode step's scores matmul then contracts their major dimension, ~4x faster on
  XLA:CPU than their minor one; BUILD_NOTES section 6, session 27), `v[l]` `[batch, num_kv_heads,
  max_len, head_dim]`.

  One array per layer rather than one `[num_layers, ...]` array: a decode step then reads each layer's
  keys where they lie and writes its new slot in place. With a stacked array indexed by the layer loop,
  XLA:CPU copied the layer's whole cache out of it on every layer and step (a decode step at 1,024 cache
  slots took 1.6x the time, BUILD_NOTES section 6).
  """
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @property
  def max_len(self) -> int:
    return self.v[0].shape[2]


def init_cache(config: ModelConfig, batch_size: int, max_len: int, dtype=None) -> KVCache:
  """A zero KV cache; `dtype` defaults to the compute dtype."""
  values = (batch_size, config.num_kv_heads, max_len, config.head_dim)
  keys = (batch_size, config.num_kv_heads, config.head_dim, max_len)
  dtype = config.dtype if dtype is None else dtype
  zeros = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
  return KVCache(k=zeros(keys), v=zeros(values))


class Decoder(nnx.Module):
  """Causal LM: token embedding, `num_layers` pre-norm blocks (GQA attention + SwiGLU), final norm, head."""

  def __init__(self, config: ModelConfig, rngs: Optional[nnx.Rngs] = None):
    rngs = nnx.Rngs(0) if rngs is None else rngs
    self.config = config
    # Weights are drawn all at once by RandomInit (host numpy when eager: no XLA compile).
    embed, layers, final_norm, lm_head = _init_parts(config, rngs)
    self.embed = embed
    self.layers = layers
    self.final_norm = final_norm
    self.lm_head = nnx.data(lm_head)

  # ----------------------------------------------------------------------------- public API

  # Public methods run through one jitted function per (graph, method, shapes), so eager calls are
  # compiled once and cached; inside a caller's jit/grad the inner jit is simply inlined.

  def __call__(self, input_ids: jax.Array, attention_mask: Optional[jax.Array] = None,
               segment_ids: Optional[jax.Array] = None, *, use_lora: bool = True) -> jax.Array:
    """Logits `[B, T, V]` float32 of `input_ids [B, T]`; `attention_mask [B, T]` 1 = real token
    (`segment_ids`: see `hidden_states`)."""
    return _run_method(self, "_forward", input_ids, attention_mask, segment_ids, use_lora=use_lora)

  def hidden_states(self, input_ids: jax.Array, attention_mask: Optional[jax.Array] = None,
                    segment_ids: Optional[jax.Array] = None, *, use_lora: bool = True) -> jax.Array:
    """Final-normed hidden states `[B, T, D]` (compute dtype). Left or right padding both work:
    positions are `cumsum(mask) - 1` and pad keys are masked out.

    segment_ids: packed rows, `[B, T]` int (1, 2, ... for the sequences packed side by side in a row,
    each a contiguous run; 0 on padding). Each sequence attends only to itself and counts its positions
    from 0, so its hidden states equal those of the sequence alone in its own row (`attention_mask` is
    then ignored)."""
    return _run_method(self, "_hidden_states", input_ids, attention_mask, segment_ids, use_lora=use_lora)

  def decode(self, tokens: jax.Array, positions: jax.Array, cache: KVCache, write_index: jax.Array,
             kv_valid: jax.Array, *, use_lora: bool = True,
             layer_states: Optional[list[nnx.State]] = None) -> tuple[jax.Array, KVCache]:
    """Runs `tokens [B, T]` at RoPE `positions [B, T]` against the KV cache.

    Writes the T new keys/values to cache slots `[write_index, write_index + T)`; query t of row b
    attends to slots s with `kv_valid[b, s]` (`[B, max_len]` bool, already True for the new slots) and
    `s <= write_index + t`. Returns logits `[B, T, V]` float32 and the updated cache.

    layer_states: `self.layer_states()` computed once outside a decode loop (XLA:CPU does not hoist
    the per-layer weight slices out of a while loop: without this every step copies every layer's
    weights); None slices them here.
    """
    return _run_method(self, "_decode", tokens, positions, cache, write_index, kv_valid, layer_states,
                       use_lora=use_lora)

  def layer_states(self) -> list[nnx.State]:
    """Each layer's weights as its own state (static slices of the stacked layers), for `decode`."""
    _, state = nnx.split(self.layers)
    return [jax.tree.map(lambda a, i=i: a[i], state) for i in range(self.config.num_layers)]

  def prefill(self, tokens: jax.Array, positions: jax.Array, valid: jax.Array, cache: KVCache, *,
              use_lora: bool = True) -> KVCache:
    """Writes the keys/values of prompt `tokens [B, T]` (RoPE `positions [B, T]`, `valid [B, T]` bool,
    False on left padding) to cache slots `[0, T)` and returns the cache (no logits).

    The same keys and values as `decode(tokens, positions, cache, 0, kv_valid)` with kv_valid True on
    the valid prompt slots, but each query attends only to the T prompt slots (not the cache's
    max_len), in causal blocks of `CAUSAL_QUERY_BLOCK` queries: the scores take `[B, N, block, T]` float32
    at a time instead of `[B, N, T, max_len]` (a 140-game evaluation, batch bucket 256, prompts of
    1,024 tokens in a 2,048-slot cache, needed ~14 GB for them).
    """
    return _run_method(self, "_prefill", tokens, positions, valid, cache, use_lora=use_lora)

  def prompt_kv(self, tokens: jax.Array, positions: Optional[jax.Array], valid: Optional[jax.Array], *,
                segment_ids: Optional[jax.Array] = None, use_lora: bool = True) -> tuple[jax.Array, jax.Array]:
    """The keys and values `prefill` writes, stacked over the layers, in the cache's layouts: k
    `[L, B, K, H, T]`, v `[L, B, K, T, H]`.

    segment_ids: packed prompts (`[B, T]` int, 1, 2, ... per prompt in a row, 0 on padding; see
    `hidden_states`): each prompt attends only to itself from RoPE position 0, and positions / valid are
    not used (pass None).
    """
    return _run_method(self, "_prompt_kv", tokens, positions, valid, segment_ids, use_lora=use_lora)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Logits `[..., V]` float32 from final-normed hidden states `[..., D]`."""
    return _run_method(self, "_logits", hidden)

  # ----------------------------------------------------------------------------- traced bodies

  def _forward(self, input_ids, attention_mask, segment_ids=None, *, use_lora: bool):
    return self._logits(self._hidden_states(input_ids, attention_mask, segment_ids, use_lora=use_lora))

  def _hidden_states(self, input_ids, attention_mask, segment_ids=None, *, use_lora: bool):
    batch, length = input_ids.shape
    if segment_ids is not None:
      positions, mask = _packed_positions_and_mask(segment_ids)
    else:
      if attention_mask is None:
        attention_mask = jnp.ones((batch, length), jnp.int32)
      valid = attention_mask.astype(bool)
      positions = jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)
      mask = _causal_mask(valid)
    x = self._embed(input_ids)

    def layer(block, x):
      q, k, v = self._qkv(block, x, positions, use_lora)
      out = causal_self_attention(q, heads_major(k), heads_major(v), mask, self.config.dtype)
      return self._finish_layer(block, x, out, use_lora), None

    x, _ = self._scan_layers(layer, x)
    return self.final_norm(x)

  def _decode(self, tokens, positions, cache, write_index, kv_valid, layer_states=None, *,
              use_lora: bool):
    length = tokens.shape[1]
    slots = jnp.arange(cache.max_len)
    query_slot = write_index + jnp.arange(length)
    mask = (slots[None, :] <= query_slot[:, None])[None] & kv_valid.astype(bool)[:, None, :]
    x = self._embed(tokens)
    new_k, new_v = [], []
    # Unrolled over the layers (not scanned): each layer reads and writes its own cache array in place.
    graphdef = nnx.graphdef(self.layers)
    states = self.layer_states() if layer_states is None else layer_states
    for index, state in enumerate(states):
      block = nnx.merge(graphdef, state)
      q, k, v = self._qkv(block, x, positions, use_lora)
      cache_k = _write_key_slots(cache.k[index], k, write_index)
      cache_v = _write_slots(cache.v[index], v, write_index)
      out = attention(q, cache_k, cache_v, mask, self.config.dtype, keys_transposed=True)
      x = self._finish_layer(block, x, out, use_lora)
      new_k.append(cache_k)
      new_v.append(cache_v)
    return self._logits(self.final_norm(x)), KVCache(k=tuple(new_k), v=tuple(new_v))

  def _prompt_kv(self, tokens, positions, valid, segment_ids=None, *, use_lora: bool):
    if segment_ids is not None:
      positions, mask = _packed_positions_and_mask(segment_ids)
    else:
      mask = _causal_mask(valid.astype(bool))
    x = self._embed(tokens)

    def layer(block, x):
      q, k, v = self._qkv(block, x, positions, use_lora)
      k, v = heads_major(k), heads_major(v)
      out = causal_self_attention(q, k, v, mask, self.config.dtype)
      return self._finish_layer(block, x, out, use_lora), (k.swapaxes(2, 3), v)

    _, kv = self._scan_layers(layer, x)  # keys [L, B, K, H, T], values [L, B, K, T, H]: the cache's layouts
    return kv

  def _prefill(self, tokens, positions, valid, cache, *, use_lora: bool):
    prompt_k, prompt_v = self._prompt_kv(tokens, positions, valid, use_lora=use_lora)
    write = lambda c, new: jax.lax.dynamic_update_slice(c, new.astype(c.dtype), (0, 0, 0, 0))
    return KVCache(k=tuple(write(c, prompt_k[i]) for i, c in enumerate(cache.k)),
                   v=tuple(write(c, prompt_v[i]) for i, c in enumerate(cache.v)))

  def _logits(self, hidden):
    dtype = self.config.dtype
    if self.lm_head is None:
      out = dense(hidden.astype(dtype), self.embed[...].astype(dtype), kernel_out_first=True,
                  out_dtype=jnp.float32)
    else:
      out = dense(hidden.astype(dtype), self.lm_head.kernel[...].astype(dtype), out_dtype=jnp.float32)
    if out.ndim == 3:
      out = constrain(out, ("batch", "length", "act_vocab"))
    return out

  # ----------------------------------------------------------------------------- internals

  def _embed(self, input_ids: jax.Array) -> jax.Array:
    # Gather the fsdp-sharded hidden dim first (as FSDP does for every weight): a gather whose output
    # is sharded on `embed` while the batch wants the same mesh axis makes the partitioner replicate.
    table = constrain(self.embed[...], ("vocab", None))
    x = jnp.take(table, input_ids, axis=0).astype(self.config.dtype)
    return constrain(x, ("batch", "length", "act_embed"))

  def _qkv(self, block: Block, x: jax.Array, positions: jax.Array, use_lora: bool):
    """Normed, projected, rotated q `[B, T, N, H]`, k and v `[B, T, K, H]`."""
    c = self.config
    batch, length, _ = x.shape
    h = block.input_norm(x)
    q = block.q_proj(h, use_lora).reshape(batch, length, c.num_heads, c.head_dim)
    k = block.k_proj(h, use_lora).reshape(batch, length, c.num_kv_heads, c.head_dim)
    v = block.v_proj(h, use_lora).reshape(batch, length, c.num_kv_heads, c.head_dim)
    inv_freq = rope_inv_freq(c)
    q = constrain(apply_rope(q, positions, inv_freq).astype(c.dtype),
                  ("batch", "length", "act_heads", "head_dim"))
    k = constrain(apply_rope(k, positions, inv_freq).astype(c.dtype),
                  ("batch", "length", "act_kv_heads", "head_dim"))
    v = constrain(v, ("batch", "length", "act_kv_heads", "head_dim"))
    return q, k, v

  def _finish_layer(self, block: Block, x: jax.Array, attn: jax.Array, use_lora: bool) -> jax.Array:
    """Output projection + residual, then the SwiGLU MLP + residual."""
    x = x + block.o_proj(attn, use_lora)
    h = block.post_attention_norm(x)
    gate = constrain(block.gate_proj(h, use_lora), ("batch", "length", "act_mlp"))
    up = constrain(block.up_proj(h, use_lora), ("batch", "length", "act_mlp"))
    x = x + block.down_proj(jax.nn.silu(gate) * up, use_lora)
    return constrain(x, ("batch", "length", "act_embed"))

  def _scan_layers(self, layer_fn, x: jax.Array):
    """Runs `layer_fn(block, x) -> (x, out)` over the layers; returns the last x and each layer's out
    stacked on a leading layer axis. `jax.lax.scan` (compiles like one layer), or with
    `config.scan_layers=False` a Python loop over the layers (no stacked residuals to write and read
    back in the backward pass: faster for shallow models, compile time grows with depth)."""
    graphdef, layer_state = nnx.split(self.layers)

    def body(x, state):
      return layer_fn(nnx.merge(graphdef, state), x)

    if self.config.remat:
      body = jax.checkpoint(body, prevent_cse=False)
    if self.config.scan_layers:
      return jax.lax.scan(body, x, layer_state)
    outs = []
    for index in range(self.config.num_layers):
      x, out = body(x, jax.tree.map(lambda a, i=index: a[i], layer_state))
      outs.append(out)
    return x, jax.tree.map(lambda *layers: jnp.stack(layers), *outs)


def _init_parts(config: ModelConfig, rngs: nnx.Rngs):
  """(embedding, stacked layers, final norm, lm_head or None), initialised as transformers does."""
  c = config
  init = RandomInit()
  embed = init.normal((c.vocab_size, c.hidden_size), _INIT_STD, c.param_dtype, ("vocab", "embed"))
  layers = Block(c, init=init)
  final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.param_dtype, c.dtype)
  lm_head = None
  if not c.tie_word_embeddings:
    lm_head = Projection(c.hidden_size, c.vocab_size, ("embed", "vocab"), init=init,
                         param_dtype=c.param_dtype, dtype=c.dtype)
  init.fill(rngs.params())
  return embed, layers, final_norm, lm_head


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _jitted_method(graphdef, state, method: str, args, kwargs):
  return getattr(nnx.merge(graphdef, state), method)(*args, **dict(kwargs))


def _run_method(model: Decoder, method: str, *args, **kwargs):
  graphdef, state = nnx.split(model)
  return _jitted_method(graphdef, state, method, args, tuple(sorted(kwargs.items())))
