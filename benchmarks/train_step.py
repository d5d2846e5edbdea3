"""Train-step throughput: jerp_jax's jitted GRPO step vs an eager transformers + PyTorch step.

Same model config (Qwen2-style), batch, sequence length, loss (token-level PPO clipped surrogate,
token-mean) and optimizer (AdamW, grad-norm clip 1.0), same compute dtype (float32, or bfloat16 with
float32 parameters: JAX `dtype=bfloat16`, PyTorch `torch.autocast`), in the same process, measured
alternately (best of `--repeats` timed windows each, to damp other processes' load). LoRA mode: both
sides train rank-r adapters on q/k/v/o/gate/up/down with frozen base weights (PyTorch side: a
hand-written LoRA linear; no peft dependency). PyTorch runs on the GPU when it sees one (fused AdamW
there), else on the CPU. Prints one JSON object.

Model FLOPs per token (counted as "useful work", not what either implementation executes):
full fine-tuning 6 N + attention, LoRA 4 N + 6 N_lora + attention (no base-weight gradients), with N
the matmul parameters incl. the LM head and attention 6 x layers x T x q_dim (causal half of the
QK^T and PV matmuls, x3 for forward + backward). The peak is the best matmul FLOP/s of JAX and
PyTorch in the compute dtype on this machine, measured in the same run; on a GPU the fraction of it is
the MFU (also against --spec_peak_tflops, the data-sheet figure, when given).

--response-len R puts the loss on the last R tokens of each row (an agent turn: a long prompt, a short
response) and both sides compute logits there only: JAX through `TrainBatch.score_window`, PyTorch with
transformers' `logits_to_keep`; the LM head's FLOPs are then counted for R + 1 positions per row.

  python benchmarks/train_step.py            # tiny config: hidden 256, 4 layers, vocab 8k, CPU
  python benchmarks/train_step.py --hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 384 \
      --vocab 4096 --batch 4 --seq-len 1024 --response-len 32 --modes full   # an ALFWorld RL turn
  python benchmarks/train_step.py --preset=qwen2.5-0.5b --dtype=bfloat16 --batch=8 --seq-len=1024 \
      --spec_peak_tflops=989                  # on a lent H100 (benchmarks/device_check.sh)

--row_lengths MEAN,SD gives the rows the lengths of real agent turns (normal, clipped to [R + 2, T]; each
row's response is its last R real tokens, right padding after it), as an RL mini-batch has them; tokens/s
then counts real tokens. PyTorch runs the padded rows (its CPU sdpa has no variable-length path) and
gathers each row's R response positions before the LM head; `--pack` packs our rows side by side first
(`jerp_jax.rl.packing.pack_plan` and `pack_rows`, timed inside the step, as the training loop packs each
mini-batch with `rl.pack_rows`: first-fit rows bucketed, the fewest turns per row that fit them):

  python benchmarks/train_step.py --preset=alfworld-tiny --batch 128 --seq-len 768 --response-len 32 \
      --row_lengths 350,60 --modes full --pack   # a GiGPO mini-batch of ALFWorld turns
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import common
from jerp_jax.models.config import ModelConfig
from jerp_jax.models.decoder import Decoder
from jerp_jax.rl import train_step as ts
from jerp_jax.rl.batch import TrainBatch, score_window_for
from jerp_jax.rl.losses import LossConfig
from jerp_jax.rl.packing import pack_plan, pack_rows


def model_flops_per_token(config: ModelConfig, seq_len: int, lora: bool, response_len: int = 0) -> float:
  """Per token of the row; with response_len R the LM head runs on R + 1 of the row's T positions."""
  d, f, layers = config.hidden_size, config.intermediate_size, config.num_layers
  q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  per_layer = d * q * 2 + d * kv * 2 + 3 * d * f
  head_share = (response_len + 1) / seq_len if response_len else 1.0
  n = layers * per_layer + d * config.vocab_size * head_share
  attention = 6 * layers * seq_len * q  # 2 matmuls x 2 flops x T/2 (causal) x q, x3 fwd+bwd.
  if not lora:
    return 6 * n + attention
  r = config.lora_rank
  n_lora = layers * r * ((d + q) * 2 + (d + kv) * 2 + (d + f) * 2 + (f + d))
  return 4 * n + 6 * n_lora + attention


def row_lengths(batch_size: int, seq_len: int, response_len: int, mean_sd: str, seed: int = 0) -> np.ndarray:
  """Each row's real length: T (mean_sd empty), or normal(MEAN, SD) clipped to [response_len + 2, T]."""
  if not mean_sd:
    return np.full((batch_size,), seq_len, np.int64)
  if not response_len:
    raise ValueError("--row_lengths needs --response_len (each row's response is its last R real tokens)")
  mean, sd = (float(x) for x in mean_sd.split(","))
  lengths = np.random.default_rng(seed + 1).normal(mean, sd, batch_size).round().astype(np.int64)
  return np.clip(lengths, response_len + 2, seq_len)


def make_batch(config: ModelConfig, batch_size: int, seq_len: int, response_len: int = 0,
               seed: int = 0, lengths: np.ndarray | None = None) -> dict:
  """Right-padded rows of `lengths` real tokens (default all T); the response is each row's last R real
  tokens (or the second half of the row when R is 0)."""
  rng = np.random.default_rng(seed)
  lengths = np.full((batch_size,), seq_len) if lengths is None else lengths
  ids = rng.integers(0, config.vocab_size, (batch_size, seq_len)).astype(np.int32)
  attention = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
  loss_mask = np.zeros((batch_size, seq_len), np.float32)
  for row, n in enumerate(lengths):
    loss_mask[row, n - (response_len or seq_len // 2):n] = 1  # Response: the last R tokens, or half.
  advantages = (rng.normal(size=(batch_size, 1)) * loss_mask).astype(np.float32)
  old = (np.full((batch_size, seq_len), -math.log(config.vocab_size)) * loss_mask).astype(np.float32)
  return {"input_ids": ids, "attention_mask": attention, "loss_mask": loss_mask,
          "old_logprobs": old, "advantages": advantages}


# ----------------------------------------------------------------------------------------- JAX


def jax_step_runner(config: ModelConfig, batch: dict, lora: bool, response_len: int = 0, pack: bool = False,
                    pack_length: int = 0):
  mode = "lora" if lora else "full"
  model_config = config if lora else dataclasses.replace(config, lora_rank=0)
  state = ts.create_train_state(Decoder(model_config, rngs=nnx.Rngs(0)),
                                ts.OptimizerConfig(learning_rate=1e-5), mode=mode)
  cfg = ts.TrainConfig(loss=LossConfig(), entropy_metric=False)
  step = ts.jit_step(ts.train_step, cfg, state)
  window = score_window_for(response_len, batch["input_ids"].shape[1]) if response_len else None
  if pack and window is None:
    raise ValueError("--pack needs --response_len (a score window per packed turn)")
  host_batch = TrainBatch(**batch, score_window=window)
  device_batch = jax.tree.map(jnp.asarray, host_batch)
  holder = {"state": state}

  def run():
    train_batch = device_batch
    if pack:
      seq_len = max(pack_length, host_batch.seq_len)
      rows, segments = pack_plan(host_batch, seq_len)  # as the training loop packs a mini-batch
      packed = pack_rows(host_batch, seq_len=seq_len, min_rows=rows, segments_per_row=segments)
      train_batch = jax.tree.map(jnp.asarray, packed)
    holder["state"], metrics = step(holder["state"], train_batch)
    jax.block_until_ready(metrics)

  return run


# --------------------------------------------------------------------------------------- PyTorch


def torch_step_runner(config: ModelConfig, batch: dict, lora: bool, device: str = "cpu",
                      response_len: int = 0):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  hf_config = dataclasses.replace(config, lora_rank=0).to_hf()
  hf_config = transformers.Qwen2Config(**{k: v for k, v in hf_config.items()
                                          if k not in ("architectures", "model_type")})
  hf_config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  model = transformers.Qwen2ForCausalLM(hf_config).float().to(device)
  model.train()
  if config.remat:  # transformers 5 renamed it; the GPU image may hold either
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
  autocast_dtype = torch.bfloat16 if config.dtype == jnp.bfloat16 else None

  class LoRALinear(torch.nn.Module):
    """base(x) + scaling * B(A(x)) with the base frozen."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
      super().__init__()
      self.base = base
      self.lora_a = torch.nn.Linear(base.in_features, rank, bias=False, device=device)
      self.lora_b = torch.nn.Linear(rank, base.out_features, bias=False, device=device)
      torch.nn.init.zeros_(self.lora_b.weight)
      self.scaling = alpha / rank

    def forward(self, x):
      return self.base(x) + self.scaling * self.lora_b(self.lora_a(x))

  if lora:
    for p in model.parameters():
      p.requires_grad_(False)
    for layer in model.model.layers:
      for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                            (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
        for name in names:
          setattr(parent, name, LoRALinear(getattr(parent, name), config.lora_rank,
                                           config.lora_alpha))
  params = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=device == "cuda")
  t = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
  ids = t["input_ids"].long()
  scored = response_len or ids.shape[1] - 1  # the last `scored` tokens are predicted and scored
  lengths = batch["attention_mask"].sum(axis=1)
  # rows of different lengths (--row_lengths): the R response tokens end at each row's own length, so the
  # hidden states of the R positions before them are gathered per row and only those go through the LM head
  ragged = bool(response_len) and bool((lengths != ids.shape[1]).any())
  columns = torch.from_numpy(lengths[:, None] - response_len + np.arange(response_len)[None]).to(device)

  def scored_logits():
    if not ragged:
      return model(input_ids=ids, attention_mask=t["attention_mask"].long(),
                   logits_to_keep=scored + 1).logits[:, :-1], slice(-scored, None)
    hidden = model.model(input_ids=ids, attention_mask=t["attention_mask"].long()).last_hidden_state
    picked = hidden.gather(1, (columns - 1)[..., None].expand(-1, -1, hidden.shape[-1]))
    return model.lm_head(picked), columns

  def run():
    with torch.autocast(device_type=device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
      logits, at = scored_logits()
    take = (lambda x: x.gather(1, at)) if ragged else (lambda x: x[:, at])
    logprobs = torch.log_softmax(logits.float(), -1).gather(-1, take(ids)[..., None])[..., 0]
    mask, adv, old = (take(t[k]) for k in ("loss_mask", "advantages", "old_logprobs"))
    ratio = torch.exp(torch.clamp(logprobs - old, -20, 20))
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2))
    loss = (pg * mask).sum() / mask.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    common.torch_sync(device)
    return loss.detach()

  return run


def best_step_seconds(run, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    run()
  return (time.perf_counter() - start) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_model_flags(parser)
  parser.add_argument("--lora_rank", "--lora-rank", type=int, default=16)
  parser.add_argument("--dtype", default="float32", choices=tuple(common.DTYPES),
                      help="compute dtype of both sides (parameters stay float32)")
  parser.add_argument("--remat", action="store_true",
                      help="recompute each layer in the backward pass (both sides)")
  parser.add_argument("--unrolled_layers", "--unrolled-layers", action="store_true",
                      help="JAX: a Python loop over the layers instead of lax.scan (config.scan_layers=False)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq_len", "--seq-len", type=int, default=128)
  parser.add_argument("--response_len", "--response-len", type=int, default=0,
                      help="loss on the last R tokens, logits there only (0: loss on the second half, "
                           "logits everywhere)")
  parser.add_argument("--row_lengths", default="",
                      help="MEAN,SD: rows of normal(MEAN, SD) real tokens (clipped to [R + 2, T]), "
                           "right-padded; default every row T tokens")
  parser.add_argument("--pack", action="store_true",
                      help="JAX: pack the rows side by side (jerp_jax.rl.packing) inside the timed step")
  parser.add_argument("--pack_length", type=int, default=0,
                      help="with --pack: packed row length (0 = T), as the loop's rl.pack_length")
  parser.add_argument("--steps", type=int, default=2, help="steps per timed window")
  parser.add_argument("--repeats", type=int, default=3, help="timed windows per side (best kept)")
  parser.add_argument("--modes", default="full,lora")
  parser.add_argument("--torch_threads", "--torch-threads", type=int, default=os.cpu_count() or 1,
                      help="PyTorch intra-op threads (default: every CPU; use 1 under taskset -c N)")
  parser.add_argument("--torch_device", default="auto", help="auto (cuda when PyTorch sees a GPU), cpu, cuda")
  parser.add_argument("--spec_peak_tflops", type=float, default=0.0,
                      help="the accelerator's data-sheet peak in the compute dtype, for MFU against it")
  common.add_host_memory_flag(parser)
  args = parser.parse_args()
  kept = common.apply_host_memory_flag(args)
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.torch_threads)
  device = common.torch_device(args.torch_device)

  config = common.model_config_from_flags(args, lora_rank=args.lora_rank, lora_alpha=2.0 * args.lora_rank)
  config = dataclasses.replace(common.with_dtype(config, args.dtype), remat=args.remat,
                               scan_layers=not args.unrolled_layers)
  lengths = row_lengths(args.batch, args.seq_len, args.response_len, args.row_lengths)
  batch = make_batch(config, args.batch, args.seq_len, args.response_len, lengths=lengths)
  tokens = int(lengths.sum())  # real tokens
  peak = common.matmul_peak_flops(args.dtype, torch_dev=device)
  result = {"config": {"preset": args.preset, "hidden": config.hidden_size, "layers": config.num_layers,
                       "vocab": config.vocab_size, "heads": config.num_heads,
                       "kv_heads": config.num_kv_heads, "intermediate": config.intermediate_size,
                       "tied_embeddings": config.tie_word_embeddings, "lora_rank": args.lora_rank,
                       "batch": args.batch, "seq_len": args.seq_len, "response_len": args.response_len,
                       "row_lengths": args.row_lengths, "mean_row_length": float(lengths.mean()),
                       "pack": args.pack, "pack_length": args.pack_length, "dtype": args.dtype,
                       "remat": args.remat, "scan_layers": not args.unrolled_layers},
            "device": str(jax.devices()[0].platform), "jax_device_kind": jax.devices()[0].device_kind,
            "torch_device": device, "cpu_count": os.cpu_count(), "torch_threads": args.torch_threads,
            "load_avg_1m": os.getloadavg()[0], "matmul_peak_flops": peak, "keep_freed_memory": kept}
  if args.pack:  # the packed shape our step runs: [rows, T], and each row's scored segments
    plan = pack_plan(TrainBatch(**batch), max(args.pack_length, args.seq_len))
    result["config"].update(packed_rows=plan[0], packed_segments_per_row=plan[1])
  for mode in args.modes.split(","):
    lora = mode == "lora"
    runners = {"jax": jax_step_runner(config, batch, lora, args.response_len, args.pack, args.pack_length),
               "torch": torch_step_runner(config, batch, lora, device, args.response_len)}
    compile_start = time.perf_counter()
    runners["jax"]()  # Compile.
    compile_seconds = time.perf_counter() - compile_start
    runners["torch"]()  # Warm-up.
    best = {"jax": float("inf"), "torch": float("inf")}
    for _ in range(args.repeats):
      for name, run in runners.items():
        best[name] = min(best[name], best_step_seconds(run, args.steps))
    # useful work of each row at its own length (a padding column is no useful work on either side)
    flops = sum(model_flops_per_token(config, int(n), lora, args.response_len) * int(n) for n in lengths)
    result[mode] = {
        "jax_tokens_per_s": tokens / best["jax"],
        "torch_tokens_per_s": tokens / best["torch"],
        "speedup_jax_over_torch": best["torch"] / best["jax"],
        "jax_step_s": best["jax"], "torch_step_s": best["torch"],
        "jax_compile_s": compile_seconds,
        "model_flops_per_step": flops,
        "jax_flops_per_s": flops / best["jax"], "torch_flops_per_s": flops / best["torch"],
        "jax_fraction_of_matmul_peak": flops / best["jax"] / peak["peak"],
        "torch_fraction_of_matmul_peak": flops / best["torch"] / peak["peak"],
    }
    if args.spec_peak_tflops:
      result[mode]["jax_mfu_vs_spec"] = flops / best["jax"] / (args.spec_peak_tflops * 1e12)
      result[mode]["torch_mfu_vs_spec"] = flops / best["torch"] / (args.spec_peak_tflops * 1e12)
    del runners
  result["load_avg_1m_end"] = os.getloadavg()[0]
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
