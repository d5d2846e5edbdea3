"""`Sampler`: batched generation for rollouts and reflection (host-side orchestration of decode_loop).

    sampler = Sampler(model, mesh=mesh)                 # or Sampler(graphdef, config)
    out = sampler.generate(state, prompts, max_new_tokens=256, sampling=TopP(0.95), rng=key,
                           stop_token_ids=[eos_id], stop_strings=["</action>"], tokenizer=tok)
    out.tokens[i], out.logprobs[i], out.finish_reasons[i], out.texts[i]

Shapes are bucketed (batch -> power of two times the batch shard count, prompt length -> prompt bucket,
prompt bucket + max new tokens -> cache bucket), so a run compiles once per bucket combination. Decoding
stops as soon as every row is done. With `chunk_size` set, the loop also returns to the host every
`chunk_size` tokens to check stop strings on decoded text and to drop finished rows, compacting the batch
into a smaller bucket when the live rows fit one.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jerp_jax import sharding
from jerp_jax.models import ModelConfig
from jerp_jax.sampling import buckets, decode_loop, prompt_packing, stopping
from jerp_jax.sampling.strategies import Greedy, SamplingConfig


@dataclasses.dataclass
class SampleOutput:
  """Generation results, one entry per prompt, in prompt order.

  tokens: generated token ids (a stop token that ended the row is included; tokens after a stop string
    are cut, the token that completed the stop string is kept).
  logprobs: float32 [len(tokens)], log softmax of the raw (temperature-1) logits at each generated token.
  finish_reasons: "stop_token", "stop_string" or "length".
  texts: decoded text when a tokenizer was given (the stop string kept, a final stop token left out).
  prompt_lengths: number of prompt tokens per row.
  num_steps: lockstep decode steps run (the longest row's length).
  batch_bucket / prompt_bucket / cache_len: the static shapes used (compilation key).
  """
  tokens: list[list[int]]
  logprobs: list[np.ndarray]
  finish_reasons: list[str]
  texts: Optional[list[str]]
  prompt_lengths: list[int]
  num_steps: int
  batch_bucket: int
  prompt_bucket: int
  cache_len: int


class Sampler:
  """Batched, jitted, KV-cached generation with a Decoder (params are arguments of the jitted loop).

  Args:
    model_or_graphdef: a `Decoder` (split here; its state becomes the default for `generate`) or the
      graphdef from `nnx.split(model)`.
    config: the ModelConfig (taken from `model.config` when a model is given).
    mesh: optional mesh; the batch is sharded over its batch axes ("data", "fsdp"). The state passed to
      `generate` should be placed with `jerp_jax.sharding.shard_state` (done here for a given model).
    prompt_buckets / cache_buckets: allowed prompt and cache lengths (default: powers of two).
    chunk_size: None decodes to completion in one device loop; an int returns to the host every
      chunk_size tokens (stop strings on decoded text, compaction of finished rows).
    prefill_chunk_tokens: None prefills the whole batch at once; an int prefills groups of rows one
      after the other, each with at most this many prompt tokens per batch shard (the prompt forward's
      activations are its memory peak: see benchmarks/memory_plan.py). Same cache, same samples.
    pad_id: token id used for padding (default: config.pad_token_id, else 0); never attended to.
    pack_prompts: prefill the prompts packed side by side in fewer rows (`prompt_packing`) when that
      saves rows; the same cache up to float32 summation order. False: every row at the prompt bucket's
      length.
  """

  def __init__(self, model_or_graphdef: Union[nnx.Module, nnx.GraphDef], config: Optional[ModelConfig] = None,
               *, mesh: Optional[jax.sharding.Mesh] = None,
               prompt_buckets: Sequence[int] = buckets.DEFAULT_PROMPT_BUCKETS,
               cache_buckets: Sequence[int] = buckets.DEFAULT_CACHE_BUCKETS,
               chunk_size: Optional[int] = None, pad_id: Optional[int] = None,
               prefill_chunk_tokens: Optional[int] = None, pack_prompts: bool = True):
    self.default_state = None
    mesh = None if mesh is None else sharding.auto_mesh(mesh)
    if isinstance(model_or_graphdef, nnx.Module):
      config = config or getattr(model_or_graphdef, "config", None)
      self.graphdef, state = nnx.split(model_or_graphdef)
      self.default_state = sharding.shard_state(state, mesh) if mesh is not None else state
    elif isinstance(model_or_graphdef, nnx.GraphDef):
      self.graphdef = model_or_graphdef
    else:
      raise TypeError(f"Sampler needs an nnx.Module or nnx.GraphDef, got {type(model_or_graphdef).__name__}")
    if not isinstance(config, ModelConfig):
      raise ValueError("Sampler needs the ModelConfig (pass config=...) when given a graphdef")
    if chunk_size is not None and chunk_size < 1:
      raise ValueError(f"chunk_size must be None or >= 1, got {chunk_size}")
    if prefill_chunk_tokens is not None and prefill_chunk_tokens < 1:
      raise ValueError(f"prefill_chunk_tokens must be None or >= 1, got {prefill_chunk_tokens}")
    self.prefill_chunk_tokens = prefill_chunk_tokens
    self.pack_prompts = bool(pack_prompts)
    self.config = config
    self.mesh = mesh
    self.prompt_buckets = buckets.check_buckets(prompt_buckets, "prompt")
    self.cache_buckets = buckets.check_buckets(cache_buckets, "cache")
    self.chunk_size = chunk_size
    self.pad_id = int(pad_id if pad_id is not None else (config.pad_token_id or 0))
    if mesh is not None:
      self.batch_sharding = sharding.logical_to_sharding(mesh, ("batch",))
      self.batch_shards = decode_loop.batch_shards(self.batch_sharding)
      if self.batch_sharding.spec[0] is None:
        self.batch_sharding = None
    else:
      self.batch_sharding, self.batch_shards = None, 1

  # ------------------------------------------------------------------ public

  def generate(self, state: Optional[nnx.State], prompts: Sequence[Sequence[int]], *,
               max_new_tokens: Union[int, Sequence[int]], sampling: SamplingConfig = Greedy(),
               rng: Optional[jax.Array] = None,
               stop_token_ids: Union[Sequence[int], Sequence[Sequence[int]]] = (),
               stop_strings: Sequence[str] = (), tokenizer: Any = None,
               use_lora: bool = True) -> SampleOutput:
    """Generates a continuation of every prompt.

    state: the nnx State of the model (None = the state of the model given at construction).
    prompts: token id lists (each non-empty, any lengths). max_new_tokens: one int or one per prompt.
    sampling: Greedy(), Temperature(t), TopK(k, t), TopP(p, t, top_k). rng: a PRNG key (required unless
    greedy); row i uses fold_in(rng, i), so a row's samples do not depend on batch size or bucketing.
    Or one key per prompt ([num] typed keys or [num, 2] raw uint32 keys): row i uses rng[i] (samples
    independent of the row's position).
    stop_token_ids: ids shared by all rows, or one sequence per prompt. stop_strings: need `tokenizer`.
    use_lora: False gives the base (reference) model.
    """
    state = self._resolve_state(state)
    prompts = self._check_prompts(prompts)
    num = len(prompts)
    max_new = self._check_max_new(max_new_tokens, num)
    if stop_strings and tokenizer is None:
      raise ValueError("stop_strings need a tokenizer (to match their tokens and decoded text)")
    if rng is None:
      if not isinstance(sampling, Greedy):
        raise ValueError(f"rng is required for stochastic sampling ({sampling})")
      rng = jax.random.key(0)
    stop_rows = stopping.per_row_stop_ids(stop_token_ids, num, self.config.vocab_size)
    seq_tokens, seq_mask = stopping.stop_sequence_arrays(
        stopping.encode_stop_strings(stop_strings, tokenizer) if stop_strings else [])
    if num == 0:
      return SampleOutput([], [], [], [] if tokenizer is not None else None, [], 0, 0, 0, 0)

    longest = max(len(p) for p in prompts)
    limit = self.config.max_position_embeddings
    if longest + max(max_new) > limit:
      raise ValueError(f"prompt of {longest} tokens + {max(max_new)} new tokens exceeds the model's "
                       f"max_position_embeddings={limit}")
    prompt_bucket = buckets.pick_bucket(longest, self.prompt_buckets, "prompt length")
    cache_len = buckets.pick_bucket(prompt_bucket + max(1, max(max_new)), self.cache_buckets,
                                    "prompt bucket + max_new_tokens")
    batch = buckets.batch_bucket(num, self.batch_shards)
    tokens = np.full((batch, prompt_bucket), self.pad_id, np.int32)
    mask = np.zeros((batch, prompt_bucket), np.int32)
    mask[:, -1] = 1  # padding rows: one pad token, zero new tokens
    for i, p in enumerate(prompts):
      tokens[i, prompt_bucket - len(p):] = p
      mask[i, prompt_bucket - len(p):] = 1
    new_limit = np.zeros((batch,), np.int32)
    new_limit[:num] = max_new
    stop_ids = stopping.stop_ids_array(stop_rows + [()] * (batch - num), batch)
    if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.wrap_key_data(rng)  # raw uint32 keys: one loop compilation serves both kinds
    if rng.ndim == 1:  # one key per prompt
      if rng.shape[0] != num:
        raise ValueError(f"rng holds {rng.shape[0]} per-row keys for {num} prompts")
      row_keys = jnp.concatenate([rng, jnp.repeat(rng[:1], batch - num, axis=0)])
    else:
      row_keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(batch, dtype=jnp.uint32))

    static = dict(strategy=sampling, use_lora=bool(use_lora), pad_id=self.pad_id,
                  batch_sharding=self.batch_sharding)
    seq_tokens, seq_mask = jnp.asarray(seq_tokens), jnp.asarray(seq_mask)
    row_chunks = buckets.prefill_row_chunks(batch // self.batch_shards, prompt_bucket - 1,
                                            self.prefill_chunk_tokens)
    packed = None
    if self.pack_prompts and prompt_bucket > 1:
      packed = prompt_packing.pack_prompts(prompts, batch=batch, width=prompt_bucket - 1,
                                           shards=self.batch_shards, chunks=row_chunks, pad_id=self.pad_id)
    with self._mesh_context():
      if packed is not None:
        packed = jax.tree.map(lambda a: self._put_rows(a)[0], packed)  # each field on its rows' sharding
      ls = decode_loop.prefill(
          self.graphdef, state, *self._put_rows(tokens, mask, new_limit, stop_ids, row_keys),
          config=self.config, cache_len=cache_len, stop_window=seq_tokens.shape[1], use_lora=bool(use_lora),
          pad_id=self.pad_id, batch_sharding=self.batch_sharding, row_chunks=row_chunks, packed=packed)
      rows = np.arange(batch)  # original prompt index of each device row (>= num: padding)
      results: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
      num_new = cache_len - prompt_bucket
      chunk = self.chunk_size or num_new
      while True:
        step = int(ls.step)
        ls = decode_loop.decode_steps(self.graphdef, state, ls, jnp.int32(step + chunk), seq_tokens,
                                      seq_mask, **static)
        done = np.asarray(ls.done)
        if self.chunk_size is not None and stop_strings and not done.all():
          ls, done = self._stop_strings_on_host(ls, done, rows, num, stop_strings, tokenizer)
        if done.all() or int(ls.step) >= num_new:
          break
        if self.chunk_size is not None:
          ls, rows = self._compact(ls, done, rows, num, results)
      self._harvest(ls, np.arange(len(rows)), rows, num, results)
      num_steps = int(ls.step)
    return self._finish(prompts, results, stop_strings, tokenizer, num_steps, batch, prompt_bucket, cache_len)

  # ------------------------------------------------------------------ helpers

  def _resolve_state(self, state: Optional[nnx.State]) -> nnx.State:
    if state is None:
      if self.default_state is None:
        raise ValueError("generate() needs the model state (the Sampler was built from a graphdef)")
      return self.default_state
    return state

  def _check_prompts(self, prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
    out = []
    for i, p in enumerate(prompts):
      arr = np.asarray(p)
      if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"prompt {i} must be a non-empty 1-D sequence of token ids, got {p!r:.80}")
      if arr.min() < 0 or arr.max() >= self.config.vocab_size:
        raise ValueError(f"prompt {i} has token ids outside [0, {self.config.vocab_size})")
      out.append(arr.astype(np.int32))
    return out

  @staticmethod
  def _check_max_new(max_new_tokens: Union[int, Sequence[int]], num: int) -> list[int]:
    values = [max_new_tokens] * num if isinstance(max_new_tokens, (int, np.integer)) else list(max_new_tokens)
    if len(values) != num:
      raise ValueError(f"max_new_tokens has {len(values)} entries for {num} prompts")
    if any(not isinstance(v, (int, np.integer)) or v < 0 for v in values):
      raise ValueError(f"max_new_tokens must be ints >= 0, got {max_new_tokens!r}")
    return [int(v) for v in values]

  def _mesh_context(self):
    return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

  def _put_rows(self, *arrays):
    if self.batch_sharding is None:
      return tuple(jnp.asarray(a) for a in arrays)
    return tuple(jax.device_put(a, decode_loop.batch_dim_sharding(self.batch_sharding, np.ndim(a)))
                 for a in arrays)

  def _stop_strings_on_host(self, ls, done, rows, num, stop_strings, tokenizer):
    """Marks live rows whose decoded text already holds a stop string as done (chunked mode)."""
    tokens, counts = np.asarray(ls.tokens), np.asarray(ls.num_generated)
    decode = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False)
    newly = [j for j in np.flatnonzero(~done) if rows[j] < num
             and stopping.find_stop_string_cut(tokens[j, :counts[j]].tolist(), stop_strings, decode)]
    if not newly:
      return ls, done
    done = done.copy()
    done[newly] = True
    reasons = np.asarray(ls.finish_reason).copy()
    reasons[newly] = stopping.STOP_STRING
    done_dev, reasons_dev = self._put_rows(done, reasons)
    return dataclasses.replace(ls, done=done_dev, finish_reason=reasons_dev), done

  def _compact(self, ls, done, rows, num, results):
    """Moves finished rows to the host and gathers the live ones into a smaller batch bucket."""
    live = np.flatnonzero(~done & (rows < num))
    smaller = buckets.batch_bucket(max(1, len(live)), self.batch_shards)
    if smaller >= len(rows):
      return ls, rows
    self._harvest(ls, np.flatnonzero(done), rows, num, results)
    filler = np.flatnonzero(done)[0]  # a finished row pads the new bucket (its results are already kept)
    keep = np.concatenate([live, np.full(smaller - len(live), filler)]).astype(np.int32)
    new_rows = np.concatenate([rows[live], np.full(smaller - len(live), np.iinfo(np.int64).max)])
    ls = decode_loop.take_rows(ls, jnp.asarray(keep), batch_sharding=self.batch_sharding)
    return ls, new_rows

  @staticmethod
  def _harvest(ls, device_rows, rows, num, results):
    """Copies the generated tokens of `device_rows` (original index rows[j] < num) to `results`."""
    tokens, logprobs = np.asarray(ls.tokens), np.asarray(ls.logprobs)
    counts, reasons = np.asarray(ls.num_generated), np.asarray(ls.finish_reason)
    for j in device_rows:
      if rows[j] < num and rows[j] not in results:
        n = int(counts[j])
        results[int(rows[j])] = (tokens[j, :n].copy(), logprobs[j, :n].copy(), int(reasons[j]))

  def _finish(self, prompts, results, stop_strings, tokenizer, num_steps, batch, prompt_bucket, cache_len):
    decode = (lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False)) if tokenizer else None
    out_tokens, out_logprobs, out_reasons, texts = [], [], [], []
    for i in range(len(prompts)):
      toks, lps, reason = results[i]
      toks = toks.tolist()
      text = None
      cut = stopping.find_stop_string_cut(toks, stop_strings, decode) if stop_strings else None
      if cut is not None:
        toks, lps, reason, text = toks[:cut[0]], lps[:cut[0]], stopping.STOP_STRING, cut[1]
      if decode is not None and text is None:
        text = decode(toks[:-1] if reason == stopping.STOP_TOKEN else toks)
      out_tokens.append(toks)
      out_logprobs.append(np.asarray(lps, np.float32))
      out_reasons.append(stopping.FINISH_REASONS[reason])
      texts.append(text)
    return SampleOutput(out_tokens, out_logprobs, out_reasons, texts if tokenizer is not None else None,
                        [len(p) for p in prompts], num_steps, batch, prompt_bucket, cache_len)
