"""Decode throughput: our jitted KV-cache Sampler vs transformers `generate` (PyTorch), same run.

Both decode the same random prompts greedily (or, with --temperature > 0, by sampling from the softmax
at that temperature over the whole vocabulary, as the RL rollouts do) from the same random Qwen2
checkpoint (built with transformers + save_pretrained, loaded by our `load_pretrained`; --preset picks
its shape, --dtype the parameter and compute dtype of both sides), with EOS disabled so every row
produces exactly --new_tokens tokens. Warm-up runs are excluded; our compile time is reported
separately. Each side's time to the first new token (prompt prefill + one step) is measured too, and
`decode_phase_ratio` compares the time of the remaining new_tokens - 1 tokens (the prefill of short
prompts is matmul-bound on both sides, so it caps the whole-generation ratio). PyTorch runs on the GPU
when it sees one; on the CPU, transformers runs with each --torch_threads count and the fastest is the
baseline (on a loaded 2-core machine, 2 torch threads can be many times slower than 1).
Achieved FLOP/s counts the model's useful FLOPs (2 x matmul params per token, plus attention over the real
context) and is compared with this machine's matmul peak in the same dtype, the best of a large JAX and
PyTorch matmul measured in the same run. Prints ONE JSON object.

  python benchmarks/decode.py --batch_sizes=8,32 --prompt_len=64 --new_tokens=64      # CPU, tiny
  python benchmarks/decode.py --preset=qwen2.5-0.5b --dtype=bfloat16 --batch_sizes=8,64 \
      --prompt_len=256 --new_tokens=128                                                # a lent GPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import jax
import numpy as np

import common


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch_sizes", default="8,32", help="comma-separated batch sizes")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=64)
  common.add_model_flags(p)
  p.add_argument("--dtype", default="float32", choices=tuple(common.DTYPES),
                 help="parameter and compute dtype of both sides")
  p.add_argument("--torch_device", default="auto", help="auto (cuda when PyTorch sees a GPU), cpu, cuda")
  p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
  p.add_argument("--torch_threads", default="1,2",
                 help="comma-separated torch thread counts to try; the fastest is the baseline")
  p.add_argument("--peak_matmul_size", type=int, default=0,
                 help="n of the [n, n] matmul that measures the peak (0: 2048 on CPU, 8192 otherwise)")
  p.add_argument("--temperature", type=float, default=0.0,
                 help="0: greedy (tokens of both sides compared); > 0: sampling at this temperature")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--unrolled_layers", action="store_true",
                 help="our prefill runs the layers as a Python loop (config.scan_layers=False, as the "
                      "ALFWorld configs run the tiny model) instead of lax.scan; decode is unrolled either way")
  common.add_host_memory_flag(p)
  return p.parse_args()


def generation_flops(config, batch: int, prompt_len: int, new_tokens: int) -> float:
  """Useful FLOPs of prefill + greedy decode: 2 x matmul params per token + attention on real context."""
  c = config
  per_layer = (c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
               + c.num_heads * c.head_dim * c.hidden_size + 3 * c.hidden_size * c.intermediate_size)
  matmul_params = c.num_layers * per_layer + c.hidden_size * c.vocab_size
  total_tokens = prompt_len + new_tokens - 1  # tokens fed through the model
  # token at (0-based) position t attends to t + 1 keys: QK^T and PV, 2 FLOPs per multiply-add each.
  attended = sum(t + 1 for t in range(total_tokens))
  attention = 4 * c.num_layers * c.num_heads * c.head_dim * attended
  return batch * (2.0 * matmul_params * total_tokens + attention)


def time_runs(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  args = parse_args()
  kept = common.apply_host_memory_flag(args)
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  from jerp_jax.models import load_pretrained  # pylint: disable=import-outside-toplevel
  from jerp_jax.sampling import Sampler, make_strategy  # pylint: disable=import-outside-toplevel
  from jerp_jax.testing.tiny_models import make_hf_checkpoint  # pylint: disable=import-outside-toplevel

  load_before = os.getloadavg()
  device = common.torch_device(args.torch_device)
  peak_size = args.peak_matmul_size or (2048 if jax.default_backend() == "cpu" else None)
  peak_by_side = common.matmul_peak_flops(args.dtype, peak_size, torch_dev=device)
  peak = peak_by_side["peak"]
  shape = common.model_config_from_flags(args)
  workdir = tempfile.mkdtemp(prefix="decode_bench_")
  path = make_hf_checkpoint(
      workdir, "qwen2", seed=args.seed, vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
      intermediate_size=shape.intermediate_size, num_hidden_layers=shape.num_layers,
      num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
      head_dim=shape.head_dim, tie_word_embeddings=shape.tie_word_embeddings,
      max_position_embeddings=max(512, 2 * (args.prompt_len + args.new_tokens)))
  model, config = load_pretrained(path, dtype=common.DTYPES[args.dtype], scan_layers=not args.unrolled_layers)
  sampler = Sampler(model)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=getattr(torch, args.dtype)).to(device).eval()
  shutil.rmtree(workdir)  # both sides hold their weights in memory now (it was left in /tmp before)
  sampling = make_strategy(temperature=args.temperature)
  hf_sampling = ({"do_sample": False} if args.temperature == 0 else
                 {"do_sample": True, "temperature": args.temperature, "top_k": 0, "top_p": 1.0})
  torch.manual_seed(args.seed)
  gen_config = transformers.GenerationConfig(
      **hf_sampling, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, eos_token_id=None,
      pad_token_id=0)
  rng = np.random.default_rng(args.seed)

  results = {}
  for batch in [int(b) for b in args.batch_sizes.split(",")]:
    prompts = rng.integers(3, config.vocab_size, size=(batch, args.prompt_len)).tolist()

    def ours(new_tokens=args.new_tokens):
      out = sampler.generate(None, prompts, max_new_tokens=new_tokens, sampling=sampling,
                             rng=jax.random.key(args.seed))
      assert all(len(t) == new_tokens for t in out.tokens)
      return out

    start = time.perf_counter()
    first = ours()  # compiles prefill + decode loop for this bucket
    compile_and_first_s = time.perf_counter() - start
    ids = torch.tensor(prompts, device=device)
    # Host threads only matter where PyTorch computes on the CPU.
    thread_counts = ([int(t) for t in args.torch_threads.split(",")] if device == "cpu"
                     else [torch.get_num_threads()])

    def theirs(threads, generation=gen_config):
      torch.set_num_threads(threads)
      with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=generation)
      common.torch_sync(device)
      return out

    # The first new token alone (prompt prefill + one step) on both sides: the rest of the time is the
    # decode phase, whose ratio is reported beside the whole-generation ratio.
    first_config = transformers.GenerationConfig(**{**gen_config.to_dict(), "max_new_tokens": 1,
                                                    "min_new_tokens": 1})
    ours(1)
    for threads in thread_counts:
      theirs(threads)  # warm-up
      theirs(threads, first_config)
    # Interleaved timed runs, so both sides see the same (shared-machine) load.
    ours_times, hf_times = [], {t: [] for t in thread_counts}
    ours_first_times, hf_first_times = [], {t: [] for t in thread_counts}
    for _ in range(args.repeats):
      ours_times.append(time_runs(ours, 1))
      ours_first_times.append(time_runs(lambda: ours(1), 1))
      for threads in thread_counts:
        hf_times[threads].append(time_runs(lambda: theirs(threads), 1))
        hf_first_times[threads].append(time_runs(lambda: theirs(threads, first_config), 1))
    ours_s, ours_first_s = statistics.median(ours_times), statistics.median(ours_first_times)
    hf_by_threads = {t: statistics.median(v) for t, v in hf_times.items()}
    best_threads = min(hf_by_threads, key=hf_by_threads.get)
    hf_s = hf_by_threads[best_threads]
    hf_first_s = statistics.median(hf_first_times[best_threads])
    # Sampled tokens come from different random streams: only greedy tokens can be compared.
    same = (theirs(best_threads)[:, args.prompt_len:].tolist() == first.tokens
            if args.temperature == 0 else None)
    tokens = batch * args.new_tokens
    flops = generation_flops(config, batch, args.prompt_len, args.new_tokens)
    results[str(batch)] = {
        "ours_tokens_per_s": tokens / ours_s,
        "transformers_tokens_per_s": tokens / hf_s,
        "ratio": hf_s / ours_s,
        "ours_s": ours_s,
        "transformers_s": hf_s,
        "transformers_best_torch_threads": best_threads,
        "transformers_tokens_per_s_by_torch_threads": {str(t): tokens / v for t, v in hf_by_threads.items()},
        "ratio_by_torch_threads": {str(t): v / ours_s for t, v in hf_by_threads.items()},
        "ours_first_token_s": ours_first_s,
        "transformers_first_token_s": hf_first_s,
        # the other new_tokens - 1 tokens: both sides' decode loops without the prompt's prefill
        "decode_phase_ratio": (hf_s - hf_first_s) / max(ours_s - ours_first_s, 1e-9),
        "ours_compile_s": max(0.0, compile_and_first_s - ours_s),
        "ours_flops_per_s": flops / ours_s,
        "ours_fraction_of_matmul_peak": flops / ours_s / peak,
        "transformers_fraction_of_matmul_peak": flops / hf_s / peak,
        "greedy_tokens_identical": same,
    }

  print(json.dumps({
      "benchmark": "decode",
      "config": {"preset": args.preset, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
                 "intermediate_size": config.intermediate_size, "num_layers": config.num_layers,
                 "num_heads": config.num_heads, "num_kv_heads": config.num_kv_heads,
                 "tied_embeddings": config.tie_word_embeddings, "dtype": args.dtype,
                 "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "repeats": args.repeats,
                 "temperature": args.temperature, "scan_layers": config.scan_layers},
      "results": results,
      "matmul_peak_flops_per_s": peak,
      "matmul_peak_by_side": peak_by_side,
      "peak_matmul_size": peak_by_side["size"],
      "torch_device": device,
      "jax_device_kind": jax.devices()[0].device_kind,
      "transformers_attn_implementation": hf.config._attn_implementation,  # pylint: disable=protected-access
      "jax_backend": jax.default_backend(),
      "keep_freed_memory": kept,
      "jax_devices": len(jax.devices()),
      "cpu_count": os.cpu_count(),
      "machine": platform.processor() or platform.machine(),
      "loadavg_before": load_before,
      "loadavg_after": os.getloadavg(),
  }, indent=1))


if __name__ == "__main__":
  main()
