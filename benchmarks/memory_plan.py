"""Per-device memory of a training config's jitted programs, from the compiler, without the hardware.

Compiles (ahead of time, on N simulated CPU devices, with abstract inputs: no weights are loaded or
allocated) the three programs one iteration of `experiments.alfworld` runs at the config's largest
shapes, and prints ONE JSON object with each program's per-device bytes from XLA's buffer assignment
(`Compiled.memory_analysis()`):
  - train_step at each --row_lengths: one mini-batch of rl.micro_batch_size turns (split into
    rl.grad_accumulation micro-batches inside the step), scored window = max_new_tokens rounded up to a
    power of two, on the global mesh (config.mesh);
  - prefill and decode_steps of the rollout sampler: this host's episodes (tasks_per_iteration x
    group_size / --hosts) at the prompt bucket of agent.max_prompt_tokens and the cache bucket the
    trainer picks for it plus agent.max_new_tokens, on the host's local mesh.
`peak_gb` = arguments + outputs - aliased (donated) + temporaries, per device.

The model comes from --preset (the configs name a checkpoint directory, not a shape) with the config's
dtypes, LoRA, remat and layer-scan settings. These are XLA:CPU's figures for the same sharded programs:
XLA:CPU upcasts bfloat16 matmuls to float32 and fuses differently from XLA:GPU / TPU, so read them as an
estimate of the accelerator's, not its measurement.

  python benchmarks/memory_plan.py --config=configs/qwen2_5_7b_gpu8.py --preset=qwen2.5-7b --devices=8
  python benchmarks/memory_plan.py --config=configs/tpu_v5e.py --preset=qwen2.5-1.5b --devices=16 \\
      --hosts=4 --device_memory_gb=16
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="an experiment config file (configs/*.py)")
  p.add_argument("--preset", required=True, help="model shape (benchmarks/common.py PRESETS)")
  p.add_argument("--devices", type=int, required=True, help="devices of the whole job (all hosts)")
  p.add_argument("--hosts", type=int, default=1, help="processes; each decodes its share on its devices")
  p.add_argument("--row_lengths", default="2048,4608",
                 help="comma-separated train row lengths (turn length, or rl.pack_length when packing)")
  p.add_argument("--device_memory_gb", type=float, default=80.0, help="memory of one device, for the fraction")
  p.add_argument("--skip", default="", help="comma-separated programs to skip: train_step, prefill, decode")
  return p.parse_args(argv)


def load_config(path: str):
  """`get_config()` of a config file (the repository root must be importable for `from configs import`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location("memory_plan_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def memory_gb(compiled) -> dict[str, float]:
  """Per-device bytes of a compiled program, in GB (2^30 bytes)."""
  m = compiled.memory_analysis()
  gb = lambda n: round(n / 2**30, 3)
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)
  return {"arguments_gb": gb(m.argument_size_in_bytes), "outputs_gb": gb(m.output_size_in_bytes),
          "aliased_gb": gb(m.alias_size_in_bytes), "temp_gb": gb(m.temp_size_in_bytes), "peak_gb": gb(peak)}


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.devices < 1 or args.hosts < 1 or args.devices % args.hosts:
    raise ValueError(f"--devices={args.devices} must be a positive multiple of --hosts={args.hosts}")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.getcwd())
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  import common  # pylint: disable=import-outside-toplevel
  from jerp_jax import sharding  # pylint: disable=import-outside-toplevel
  from jerp_jax.models import Decoder  # pylint: disable=import-outside-toplevel
  from jerp_jax.rl import train_step as ts  # pylint: disable=import-outside-toplevel
  from jerp_jax.rl import batch as batch_lib  # pylint: disable=import-outside-toplevel
  from jerp_jax.rl.batch import TrainBatch  # pylint: disable=import-outside-toplevel
  from jerp_jax.sampling import Greedy, buckets, decode_loop  # pylint: disable=import-outside-toplevel
  from jerp_jax.training import builders  # pylint: disable=import-outside-toplevel
  from jerp_jax.training.settings import Settings  # pylint: disable=import-outside-toplevel

  if jax.device_count() != args.devices:
    raise RuntimeError(f"JAX sees {jax.device_count()} devices, not {args.devices} (was jax imported "
                       "before this script set XLA_FLAGS?)")
  config = load_config(args.config)
  if not config.model.checkpoint and config.model.tokenizer == "":
    config.model.tokenizer = "builtin"  # the shape comes from --preset; no checkpoint is read
  settings = Settings.from_config(config)
  model_config = dataclasses.replace(common.preset_config(args.preset), **builders.model_options(settings))
  mode = "lora" if model_config.lora_rank > 0 else "full"
  reference_copy = mode == "full" and settings.train.loss.kl_coef != 0.0
  mesh = builders.build_mesh(settings)
  local_mesh = (mesh if args.hosts == 1 else
                builders.local_mesh_for(mesh, jax.devices()[:args.devices // args.hosts]))
  skip = {s for s in args.skip.split(",") if s}
  started = time.perf_counter()
  state = jax.eval_shape(lambda: ts.create_train_state(Decoder(model_config, rngs=nnx.Rngs(0)),
                                                       settings.optimizer, mode=mode,
                                                       reference_copy=reference_copy))
  S = jax.ShapeDtypeStruct
  programs = {}

  rows = int(config.rl.micro_batch_size)
  if "train_step" not in skip:
    step = ts.jit_step(ts.train_step, settings.train, state, mesh).jitted
    for length in [int(x) for x in args.row_lengths.split(",")]:
      field = lambda dtype: S((rows, length), dtype)  # pylint: disable=cell-var-from-loop
      # the window the trainer would use if some response reached max_new_tokens
      window = batch_lib.score_window_for(int(settings.rollout.max_new_tokens), length)
      batch = TrainBatch(field(jnp.int32), field(jnp.int32), field(jnp.float32), field(jnp.float32),
                         field(jnp.float32), score_window=window)
      with jax.set_mesh(mesh):
        compiled = step.lower(state, batch).compile()
      programs[f"train_step_{rows}x{length}"] = {
          "rows": rows, "row_length": length, "score_window": window,
          "rows_per_device": rows // (mesh.shape["data"] * mesh.shape["fsdp"]),
          "micro_batches": settings.train.micro_batches, **memory_gb(compiled)}

  graphdef, policy = nnx.split(nnx.eval_shape(lambda: Decoder(model_config, rngs=nnx.Rngs(0))))
  policy = jax.tree.map(lambda x, s: S(x.shape, x.dtype, sharding=s), policy,
                        sharding.state_shardings(policy, local_mesh))
  episodes = settings.tasks_per_iteration * settings.group_size // args.hosts
  batch_sharding = sharding.logical_to_sharding(local_mesh, ("batch",))
  shards = decode_loop.batch_shards(batch_sharding)  # as the Sampler counts them
  batch = buckets.batch_bucket(episodes, shards)
  prompt_bucket = buckets.pick_bucket(int(settings.rollout.max_prompt_tokens), builders.PROMPT_BUCKETS, "prompt")
  cache_len = buckets.pick_bucket(prompt_bucket + int(settings.rollout.max_new_tokens),
                                  builders.cache_buckets(settings), "cache")
  rows_sh = lambda ndim: decode_loop.batch_dim_sharding(batch_sharding, ndim)
  key_dtype = jax.random.key(0).dtype
  row_args = (S((batch, prompt_bucket), jnp.int32, sharding=rows_sh(2)),
              S((batch, prompt_bucket), jnp.int32, sharding=rows_sh(2)),
              S((batch,), jnp.int32, sharding=rows_sh(1)), S((batch, 1), jnp.int32, sharding=rows_sh(2)),
              S((batch,), key_dtype, sharding=rows_sh(1)))
  row_chunks = buckets.prefill_row_chunks(batch // shards, prompt_bucket - 1, builders.prefill_chunk_tokens(settings))
  sampler_shape = {"episodes": episodes, "batch": batch, "rows_per_device": batch // shards,
                   "prompt_bucket": prompt_bucket, "cache_len": cache_len, "prefill_row_chunks": row_chunks}
  with jax.set_mesh(local_mesh):
    prefill = decode_loop.prefill.lower(
        graphdef, policy, *row_args, config=model_config, cache_len=cache_len, stop_window=1,
        use_lora=True, pad_id=0, batch_sharding=batch_sharding, row_chunks=row_chunks)
    if "prefill" not in skip:
      programs["prefill"] = {**sampler_shape, **memory_gb(prefill.compile())}
    if "decode" not in skip:
      loop_state = prefill.out_info
      loop_state = jax.tree.map(lambda x: S(x.shape, x.dtype, sharding=x.sharding), loop_state)
      decode = decode_loop.decode_steps.lower(
          graphdef, policy, loop_state, S((), jnp.int32), S((1, 1), jnp.int32), S((1, 1), bool),
          strategy=Greedy(), use_lora=True, pad_id=0, batch_sharding=batch_sharding)
      programs["decode"] = {**sampler_shape, **memory_gb(decode.compile())}

  cache_gb = (2 * model_config.num_layers * batch * model_config.num_kv_heads * cache_len
              * model_config.head_dim * jnp.dtype(model_config.dtype).itemsize / 2**30)
  for program in programs.values():
    program["fraction_of_device_memory"] = round(program["peak_gb"] / args.device_memory_gb, 3)
  print(json.dumps({
      "benchmark": "memory_plan",
      "config": args.config, "preset": args.preset, "devices": args.devices, "hosts": args.hosts,
      "mesh": dict(mesh.shape), "local_mesh": dict(local_mesh.shape), "train_mode": mode,
      "dtype": jnp.dtype(model_config.dtype).name, "param_dtype": jnp.dtype(model_config.param_dtype).name,
      "lora_rank": model_config.lora_rank, "remat": model_config.remat,
      "device_memory_gb": args.device_memory_gb,
      "kv_cache_gb_per_device_computed": round(cache_gb / shards, 3),
      "programs": programs,
      "compile_s": round(time.perf_counter() - started, 1),
      "compiled_by": "XLA:CPU (an estimate for the accelerator, see the docstring)",
  }, indent=1))


if __name__ == "__main__":
  main()
