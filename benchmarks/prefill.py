"""Prompt prefill: `Decoder.prefill` (prompt-only keys, 256-query blocks) against the earlier path,
`Decoder.decode` at write index 0 (every query scores the whole cache), same model, prompts and cache.

Reports XLA's compiled temporary-buffer size of each (`memory_analysis().temp_size_in_bytes`, no run
needed, so large shapes are cheap to check) at --batch x --prompt_len in a --cache_len cache, and the
median wall time of each at --time_batch rows, plus the largest difference between the two caches on the
real prompt slots. Prints ONE JSON object.

  python benchmarks/prefill.py --batch=256 --prompt_len=1024 --cache_len=2048 --time_batch=32
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jerp_jax.models import Decoder, init_cache

import common


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=256, help="rows for the memory analysis")
  p.add_argument("--time_batch", type=int, default=32, help="rows for the timed runs")
  p.add_argument("--prompt_len", type=int, default=1024)
  p.add_argument("--cache_len", type=int, default=2048)
  p.add_argument("--repeats", type=int, default=3)
  common.add_model_flags(p)
  p.set_defaults(preset="alfworld-tiny")  # the model of configs/base.py (configs/alfworld_results.py too)
  return p.parse_args()


def _inputs(batch: int, length: int, vocab: int):
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, vocab, (batch, length)), jnp.int32)
  pads = rng.integers(0, length // 2, batch)
  valid = jnp.asarray(np.arange(length)[None, :] >= pads[:, None])
  positions = jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)
  return tokens, positions, valid


def main() -> None:
  a = parse_args()
  config = common.model_config_from_flags(a, max_position_embeddings=a.cache_len)
  graphdef, state = nnx.split(Decoder(config, rngs=nnx.Rngs(0)))

  @jax.jit
  def new_path(state, tokens, positions, valid):
    cache = init_cache(config, tokens.shape[0], a.cache_len)
    return nnx.merge(graphdef, state).prefill(tokens, positions, valid, cache)

  @jax.jit
  def old_path(state, tokens, positions, valid):
    batch, length = tokens.shape
    cache = init_cache(config, batch, a.cache_len)
    kv_valid = jnp.zeros((batch, a.cache_len), bool).at[:, :length].set(valid)
    return nnx.merge(graphdef, state).decode(tokens, positions, cache, jnp.int32(0), kv_valid)[1]

  out = {"config": vars(a), "backend": jax.default_backend()}
  big = _inputs(a.batch, a.prompt_len - 1, config.vocab_size)  # prefill feeds all but the last prompt column
  for name, fn in (("prefill", new_path), ("decode_at_0", old_path)):
    memory = fn.lower(state, *big).compile().memory_analysis()
    out[f"{name}_temp_bytes"] = int(memory.temp_size_in_bytes)
  out["temp_ratio_decode_at_0_over_prefill"] = out["decode_at_0_temp_bytes"] / out["prefill_temp_bytes"]

  small = _inputs(a.time_batch, a.prompt_len - 1, config.vocab_size)
  caches = {}
  for name, fn in (("prefill", new_path), ("decode_at_0", old_path)):
    caches[name] = jax.block_until_ready(fn(state, *small))  # compile + warm-up
    times = []
    for _ in range(a.repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(state, *small))
      times.append(time.perf_counter() - start)
    out[f"{name}_seconds"] = statistics.median(times)
  out["speedup_prefill_over_decode_at_0"] = out["decode_at_0_seconds"] / out["prefill_seconds"]
  real = np.asarray(small[2])  # [B, T] real prompt slots
  # per-layer [B, K, S, H] (keys [B, K, H, S]) -> [L, B, K, S, H] -> [B, S, L, K, H], then the real prompt
  # slots of every layer and kv head
  stacked = lambda cache, kv: np.stack([np.swapaxes(x, 2, 3) if kv == "k" else x for x in getattr(cache, kv)])
  by_slot = lambda x: x.transpose(1, 3, 0, 2, 4)[:, :real.shape[1]][real]
  out["max_abs_cache_difference"] = max(
      float(np.abs(by_slot(stacked(caches["prefill"], kv)) - by_slot(stacked(caches["decode_at_0"], kv))).max())
      for kv in ("k", "v"))
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
