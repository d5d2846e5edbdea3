"""What the benchmarks share: model-size presets, the compute dtype, the measured matmul peak, and the
PyTorch device of the reference side (CPU here; CUDA on a lent GPU).

Imported by the benchmark scripts as `common` (they run as `python benchmarks/NAME.py`, so this folder is
first on sys.path).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jerp_jax import host_memory
from jerp_jax.models.config import ModelConfig

# Model shapes by name. "tiny" is the CPU benchmark config these scripts always had; "alfworld-tiny" the
# model the ALFWorld configs train (configs/base.py); the Qwen2.5 ones are the real architectures (random
# weights: speed does not depend on the values).
_TINY_SHAPES = {
    "tiny": dict(vocab_size=8192, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                 intermediate_size=1024),
    "alfworld-tiny": dict(vocab_size=4096, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                          intermediate_size=384),
}
_REAL_SHAPES = {"qwen2.5-0.5b": ModelConfig.qwen2_5_0_5b, "qwen2.5-1.5b": ModelConfig.qwen2_5_1_5b,
                "qwen2.5-7b": ModelConfig.qwen2_5_7b, "llama3-8b": ModelConfig.llama3_8b}
PRESETS = (*_TINY_SHAPES, *_REAL_SHAPES)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
  """The ModelConfig of preset `name`, with `overrides` (fields set to None are left as the preset's)."""
  overrides = {k: v for k, v in overrides.items() if v is not None}
  if name in _TINY_SHAPES:
    fields = dict(_TINY_SHAPES[name], **overrides)
    fields.setdefault("head_dim", fields["hidden_size"] // fields["num_heads"])
    return ModelConfig.tiny(fields.pop("vocab_size"), **fields)
  if name in _REAL_SHAPES:
    return dataclasses.replace(_REAL_SHAPES[name](), **overrides)
  raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")


# The preset-overriding model-size flags of every benchmark: (flag, older alias of train_step.py).
MODEL_FLAGS = (("vocab_size", "vocab"), ("hidden_size", "hidden"), ("intermediate_size", "intermediate"),
               ("num_layers", "layers"), ("num_heads", "heads"), ("num_kv_heads", "kv-heads"))


def add_model_flags(parser) -> None:
  """Adds --preset and the flags that override its fields (ModelConfig's field names) to an argparse
  parser; train_step.py's older names (--hidden, --layers, ...) stay accepted as aliases."""
  parser.add_argument("--preset", default="tiny", choices=PRESETS,
                      help="model shape (tiny: vocab 8192, hidden 256, 4 layers); the flags below override "
                           "its fields")
  for name, alias in MODEL_FLAGS:
    parser.add_argument(f"--{name}", f"--{alias}", dest=name, type=int, default=None,
                        help=f"override the preset's {name}")


def add_host_memory_flag(parser) -> None:
  """--keep_freed_memory: the allocator setting the training apps use (jerp_jax.host_memory), for both sides."""
  parser.add_argument("--keep_freed_memory", type=int, default=1, choices=(0, 1),
                      help="1: glibc malloc keeps freed blocks for reuse, as the training apps set it (both "
                           "sides of a comparison run in this process); 0: the C library's defaults")


def apply_host_memory_flag(args) -> bool:
  """Applies --keep_freed_memory (call before the first computation); whether the setting took effect."""
  return bool(args.keep_freed_memory) and host_memory.keep_freed_memory()


def model_config_from_flags(args, **fields: Any) -> ModelConfig:
  """The ModelConfig that `add_model_flags`' flags name (float32; `fields` are further overrides)."""
  return preset_config(args.preset, **{name: getattr(args, name) for name, _ in MODEL_FLAGS}, **fields)


def with_dtype(config: ModelConfig, dtype_name: str) -> ModelConfig:
  """Compute in `dtype_name`, parameters stay float32 (mixed precision, as torch.autocast)."""
  if dtype_name not in DTYPES:
    raise ValueError(f"unknown dtype {dtype_name!r}; known: {', '.join(DTYPES)}")
  return dataclasses.replace(config, dtype=DTYPES[dtype_name], param_dtype=jnp.float32)


def torch_device(requested: str = "auto") -> str:
  """The PyTorch device: "cuda" when asked for or (auto) when PyTorch sees a GPU, else "cpu"."""
  import torch  # pylint: disable=import-outside-toplevel
  if requested == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  if requested == "cuda" and not torch.cuda.is_available():
    raise ValueError("--torch_device=cuda but PyTorch sees no GPU")
  if requested not in ("cpu", "cuda"):
    raise ValueError(f"unknown torch device {requested!r}; use auto, cpu or cuda")
  return requested


def torch_sync(device: str) -> None:
  """Waits for queued GPU work (timings of CUDA code are otherwise launch times)."""
  if device == "cuda":
    import torch  # pylint: disable=import-outside-toplevel
    torch.cuda.synchronize()


def matmul_peak_flops(dtype_name: str = "float32", size: Optional[int] = None, seconds: float = 1.0,
                      torch_dev: Optional[str] = None) -> dict:
  """Best FLOP/s of an [n, n] @ [n, n] matmul in `dtype_name`, by JAX on its default device and (when
  `torch_dev` is given) by PyTorch on that device, each timed back to back for `seconds`.

  Returns {"jax": ..., "torch": ... (if measured), "peak": the larger, "size": n, "dtype": ...}. The
  default n is 1024 on CPU and 8192 on an accelerator (large enough to reach the tensor cores' rate).
  """
  if size is None:
    size = 1024 if jax.default_backend() == "cpu" else 8192
  dtype = DTYPES[dtype_name]
  a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), dtype)
  jdot = jax.jit(lambda x, y: x @ y)
  jdot(a, a).block_until_ready()
  timers = {"jax": lambda: jdot(a, a).block_until_ready()}
  if torch_dev is not None:
    import torch  # pylint: disable=import-outside-toplevel
    ta = torch.randn(size, size, device=torch_dev, dtype=getattr(torch, dtype_name))
    (ta @ ta).sum().item()

    def torch_matmul():
      ta @ ta
      torch_sync(torch_dev)

    timers["torch"] = torch_matmul
  best = {name: 0.0 for name in timers}
  for name, fn in timers.items():
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
      start = time.perf_counter()
      fn()
      best[name] = max(best[name], 2 * size**3 / (time.perf_counter() - start))
  return {**best, "peak": max(best.values()), "size": size, "dtype": dtype_name}
