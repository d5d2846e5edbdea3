"""`ModelConfig`: one frozen config for the Qwen2/Qwen2.5 and Llama 2/3 decoders.

Qwen2 and Llama are configurations of the same decoder (see `decoder.py`); the differences are data:
qkv bias, tied embeddings, RoPE base and scaling. `from_hf` / `to_hf` convert to and from a Hugging Face
`config.json` dict (both the transformers<5 keys `rope_theta`/`rope_scaling` and the transformers>=5
`rope_parameters` are read; both are written).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax.numpy as jnp
import numpy as np

SUPPORTED_ARCHITECTURES = ("qwen2", "llama")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

_HF_CLASS_NAMES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}


class UnsupportedArchitectureError(ValueError):
  """The checkpoint's model type or a feature of it is not implemented here."""


def _as_dtype(value: Any) -> np.dtype:
  try:
    return jnp.dtype(value)
  except TypeError as e:
    raise ValueError(f"not a dtype: {value!r}") from e


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the decoder; change dtype / LoRA settings with `dataclasses.replace`.

  `param_dtype` is the storage dtype of the base weights, `dtype` the compute dtype of matmuls
  (norms, RoPE, softmax and logits are always float32). LoRA factors are always stored in float32.
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rope_scaling: Optional[Mapping[str, Any]] = None
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False  # Llama `attention_bias=True` puts a bias on o_proj as well.
  max_position_embeddings: int = 2048
  bos_token_id: Optional[int] = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: Optional[int] = None
  architecture: str = "qwen2"
  param_dtype: Any = jnp.float32
  dtype: Any = jnp.float32
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = LORA_TARGETS
  remat: bool = False  # jax.checkpoint each layer (saves activation memory in training).
  scan_layers: bool = True  # lax.scan over the layers (full forward, prefill); False: an unrolled loop.

  def __post_init__(self):
    set_field = lambda name, value: object.__setattr__(self, name, value)
    set_field("param_dtype", _as_dtype(self.param_dtype))
    set_field("dtype", _as_dtype(self.dtype))
    set_field("lora_targets", tuple(self.lora_targets))
    if isinstance(self.eos_token_ids, int):
      set_field("eos_token_ids", (self.eos_token_ids,))
    set_field("eos_token_ids", tuple(int(t) for t in self.eos_token_ids))
    if self.rope_scaling is not None:
      set_field("rope_scaling", _FrozenDict(self.rope_scaling))
    if self.architecture not in SUPPORTED_ARCHITECTURES:
      raise UnsupportedArchitectureError(
          f"architecture {self.architecture!r} is not supported; supported: {SUPPORTED_ARCHITECTURES}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
    unknown = set(self.lora_targets) - set(LORA_TARGETS)
    if unknown:
      raise ValueError(f"unknown lora_targets {sorted(unknown)}; valid: {LORA_TARGETS}")
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
    rope_type = self.rope_type
    if rope_type not in SUPPORTED_ROPE_TYPES:
      raise UnsupportedArchitectureError(
          f"rope_scaling type {rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}")

  @property
  def rope_type(self) -> str:
    if not self.rope_scaling:
      return "default"
    return self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))

  @property
  def eos_token_id(self) -> Optional[int]:
    """The first end-of-sequence id (None when the checkpoint names none)."""
    return self.eos_token_ids[0] if self.eos_token_ids else None

  @property
  def lora_scaling(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

  # ---------------------------------------------------------------- Hugging Face conversion

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides: Any) -> "ModelConfig":
    """Builds a config from a Hugging Face `config.json` dict; `overrides` replace fields."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
      raise UnsupportedArchitectureError(
          f"model_type {model_type!r} (architectures={hf.get('architectures')}) is not supported; "
          f"supported model types: {SUPPORTED_ARCHITECTURES}")
    if hf.get("hidden_act", "silu") != "silu":
      raise UnsupportedArchitectureError(f"hidden_act {hf.get('hidden_act')!r} is not supported (only silu)")
    if hf.get("mlp_bias", False):
      raise UnsupportedArchitectureError("mlp_bias=True is not supported")
    if model_type == "qwen2" and hf.get("use_sliding_window", False):
      raise UnsupportedArchitectureError("Qwen2 use_sliding_window=True is not supported")
    rope_params = dict(hf.get("rope_parameters") or {})
    rope_theta = float(hf.get("rope_theta", rope_params.get("rope_theta", 10000.0)))
    rope_scaling = hf.get("rope_scaling") or {
        k: v for k, v in rope_params.items() if k != "rope_theta"}
    if float((rope_scaling or {}).get("partial_rotary_factor", 1.0)) != 1.0:
      raise UnsupportedArchitectureError("partial_rotary_factor != 1 is not supported")
    if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type", "default")) == "default":
      rope_scaling = None
    num_heads = int(hf["num_attention_heads"])
    eos = hf.get("eos_token_id")
    eos_ids = () if eos is None else (tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),))
    attention_bias = bool(hf.get("attention_bias", False))
    fields = dict(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // num_heads),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling or None,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", model_type == "qwen2")),
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        o_bias=False if model_type == "qwen2" else attention_bias,
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=eos_ids,
        pad_token_id=hf.get("pad_token_id"),
        architecture=model_type,
    )
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    """The Hugging Face `config.json` dict of this config (transformers 4.x and 5.x both read it)."""
    eos: Any = None
    if self.eos_token_ids:
      eos = self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else list(self.eos_token_ids)
    rope_parameters = {"rope_theta": self.rope_theta, "rope_type": "default"}
    if self.rope_scaling:
      rope_parameters.update(dict(self.rope_scaling))
    hf = {
        "architectures": [_HF_CLASS_NAMES[self.architecture]],
        "model_type": self.architecture,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
        "rope_parameters": rope_parameters,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": self.pad_token_id,
        "torch_dtype": str(self.param_dtype),
        "dtype": str(self.param_dtype),
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    if self.architecture == "qwen2":
      if not self.qkv_bias or self.o_bias:
        raise ValueError("a qwen2 checkpoint needs qkv_bias=True and o_bias=False")
      hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=self.num_layers)
    else:
      if self.qkv_bias != self.o_bias:
        raise ValueError("a llama checkpoint has bias on q, k, v and o together (attention_bias) or on none")
      hf.update(attention_bias=self.qkv_bias, mlp_bias=False)
    return hf

  # ---------------------------------------------------------------- presets

  @classmethod
  def tiny(cls, vocab_size: int = 256, **overrides: Any) -> "ModelConfig":
    """A Qwen2-style model small enough for CPU tests: 2 layers, hidden 64, 4 heads, 2 kv heads."""
    fields = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, qkv_bias=True, max_position_embeddings=2048,
                  architecture="qwen2")
    fields.update(overrides)
    return cls(**fields)

  @classmethod
  def qwen2_5_0_5b(cls, **overrides: Any) -> "ModelConfig":
    return cls._qwen2_5(hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
                        num_kv_heads=2, head_dim=64, tie_word_embeddings=True, **overrides)

  @classmethod
  def qwen2_5_1_5b(cls, **overrides: Any) -> "ModelConfig":
    return cls._qwen2_5(hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
                        num_kv_heads=2, head_dim=128, tie_word_embeddings=True, **overrides)

  @classmethod
  def qwen2_5_7b(cls, **overrides: Any) -> "ModelConfig":
    return cls._qwen2_5(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                        num_heads=28, num_kv_heads=4, head_dim=128, tie_word_embeddings=False,
                        **overrides)

  @classmethod
  def _qwen2_5(cls, **fields: Any) -> "ModelConfig":
    base = dict(vocab_size=151936, rope_theta=1_000_000.0, rms_norm_eps=1e-6, qkv_bias=True,
                max_position_embeddings=32768, bos_token_id=151643, eos_token_ids=(151645,),
                architecture="qwen2")
    base.update(fields)
    return cls(**base)

  @classmethod
  def llama3_8b(cls, **overrides: Any) -> "ModelConfig":
    """Meta-Llama-3-8B-Instruct."""
    fields = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                  num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=500_000.0, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, qkv_bias=False, max_position_embeddings=8192,
                  bos_token_id=128000, eos_token_ids=(128001, 128009), architecture="llama")
    fields.update(overrides)
    return cls(**fields)


class _FrozenDict(dict):
  """A hashable read-only dict so `ModelConfig` (a jit static argument) stays hashable."""

  def __hash__(self):  # type: ignore[override]
    return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))

  def _readonly(self, *args, **kwargs):
    raise TypeError("rope_scaling is read-only; use dataclasses.replace")

  __setitem__ = __delitem__ = update = pop = clear = setdefault = _readonly  # type: ignore[assignment]
