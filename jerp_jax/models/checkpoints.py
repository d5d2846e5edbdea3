"""Hugging Face checkpoint I/O: `load_pretrained`, `save_pretrained`, `load_tokenizer`.

Reads `config.json` and safetensors weights (one `model.safetensors`, or shards listed by
`model.safetensors.index.json`) from a local directory without torch. Every parameter is built with
`jax.make_array_from_callback` on its final sharding, so each device reads only its own slice of the
memory-mapped files: no replicated copy of the model is ever materialised.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jerp_jax.atomic_io import atomic_write_json
from jerp_jax.models.config import SUPPORTED_ARCHITECTURES, ModelConfig
from jerp_jax.models.decoder import Decoder
from jerp_jax.models.lora import merged_kernel
from jerp_jax.models.safetensors_io import SafetensorsFile, save_safetensors
from jerp_jax.sharding import auto_mesh, logical_to_sharding, variable_logical_axes

CONFIG_FILE = "config.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointNotFoundError(FileNotFoundError):
  """A checkpoint directory, config, weights file or index-referenced shard is missing."""


class MissingTensorError(ValueError):
  """The checkpoint lacks a tensor the model needs."""


class ShapeMismatchError(ValueError):
  """A checkpoint tensor's shape differs from what the config implies."""


# ------------------------------------------------------------------------------ Hugging Face names

# (our module path, param) -> Hugging Face name; "{i}" is the layer index. Qwen2 and Llama use the same
# names (they differ in which tensors exist: biases, lm_head), so both families share this table.
_LAYER_NAMES = {
    ("input_norm", "weight"): "model.layers.{i}.input_layernorm.weight",
    ("post_attention_norm", "weight"): "model.layers.{i}.post_attention_layernorm.weight",
    ("q_proj", "kernel"): "model.layers.{i}.self_attn.q_proj.weight",
    ("q_proj", "bias"): "model.layers.{i}.self_attn.q_proj.bias",
    ("k_proj", "kernel"): "model.layers.{i}.self_attn.k_proj.weight",
    ("k_proj", "bias"): "model.layers.{i}.self_attn.k_proj.bias",
    ("v_proj", "kernel"): "model.layers.{i}.self_attn.v_proj.weight",
    ("v_proj", "bias"): "model.layers.{i}.self_attn.v_proj.bias",
    ("o_proj", "kernel"): "model.layers.{i}.self_attn.o_proj.weight",
    ("o_proj", "bias"): "model.layers.{i}.self_attn.o_proj.bias",
    ("gate_proj", "kernel"): "model.layers.{i}.mlp.gate_proj.weight",
    ("up_proj", "kernel"): "model.layers.{i}.mlp.up_proj.weight",
    ("down_proj", "kernel"): "model.layers.{i}.mlp.down_proj.weight",
}
_TOP_NAMES = {
    ("embed",): "model.embed_tokens.weight",
    ("final_norm", "weight"): "model.norm.weight",
    ("lm_head", "kernel"): "lm_head.weight",
}
HF_NAME_MAPS = {arch: (_TOP_NAMES, _LAYER_NAMES) for arch in SUPPORTED_ARCHITECTURES}


def hf_names(config: ModelConfig, path: tuple[str, ...]) -> Optional[list[str]]:
  """The Hugging Face tensor name(s) of our parameter `path` (one per layer for stacked layers);
  None for parameters that have no checkpoint tensor (LoRA factors)."""
  top, layer = HF_NAME_MAPS[config.architecture]
  if path in top:
    return [top[path]]
  if path[0] == "layers" and path[1:] in layer:
    return [layer[path[1:]].format(i=i) for i in range(config.num_layers)]
  return None


def _is_kernel(path: tuple[str, ...]) -> bool:
  return path[-1] == "kernel"  # stored [in, out] here, [out, in] in Hugging Face files


# ------------------------------------------------------------------------------ reading


class _CheckpointTensors:
  """Name -> memory-mapped tensor over all safetensors files of a checkpoint directory."""

  def __init__(self, path: str):
    index_path = os.path.join(path, INDEX_FILE)
    single_path = os.path.join(path, SINGLE_WEIGHTS_FILE)
    if os.path.isfile(index_path):
      with open(index_path, encoding="utf-8") as f:
        weight_map: dict[str, str] = json.load(f).get("weight_map", {})
      missing = sorted({file for file in weight_map.values()
                        if not os.path.isfile(os.path.join(path, file))})
      if missing:
        raise CheckpointNotFoundError(
            f"{index_path} references shard file(s) that do not exist in {path}: {missing}")
      files = {file: SafetensorsFile(os.path.join(path, file)) for file in set(weight_map.values())}
      self._where = {name: files[file] for name, file in weight_map.items()}
    elif os.path.isfile(single_path):
      file = SafetensorsFile(single_path)
      self._where = {name: file for name in file.names}
    else:
      present = sorted(os.listdir(path))
      raise CheckpointNotFoundError(
          f"no weights in {path}: expected {SINGLE_WEIGHTS_FILE} or {INDEX_FILE} (safetensors only; "
          f"PyTorch .bin checkpoints are not read); directory holds {present}")
    self.directory = path

  def __contains__(self, name: str) -> bool:
    return name in self._where

  def shape(self, name: str) -> tuple[int, ...]:
    return self._file(name).shape(name)

  def tensor(self, name: str) -> np.ndarray:
    return self._file(name).tensor(name)

  def _file(self, name: str) -> SafetensorsFile:
    file = self._where[name]
    if name not in file.names:
      raise MissingTensorError(f"tensor {name!r} is listed in {INDEX_FILE} but absent from {file.path}")
    return file


def read_config(path: str | os.PathLike, **overrides: Any) -> ModelConfig:
  """The `ModelConfig` of a Hugging Face checkpoint directory (errors name what is missing)."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise CheckpointNotFoundError(f"checkpoint directory {path} does not exist")
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise CheckpointNotFoundError(f"{config_path} not found: a checkpoint directory needs {CONFIG_FILE}")
  with open(config_path, encoding="utf-8") as f:
    try:
      hf = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path} is not valid JSON: {e}") from e
  return ModelConfig.from_hf(hf, **overrides)


def load_pretrained(path: str | os.PathLike, dtype=jnp.float32, mesh: Optional[Mesh] = None,
                    lora_rank: int = 0, *, param_dtype=None, lora_seed: int = 0,
                    **config_overrides: Any) -> tuple[Decoder, ModelConfig]:
  """Loads a Hugging Face Qwen2/Llama checkpoint directory into a `Decoder`.

  Args:
    path: directory with config.json and model.safetensors (or sharded + model.safetensors.index.json).
    dtype: compute dtype; also the parameter dtype unless `param_dtype` is given.
    mesh: when given, every parameter is created directly on its NamedSharding (logical-axis rules of
      `jerp_jax.sharding`); otherwise on the default device.
    lora_rank: LoRA rank (0 = none); fresh LoRA factors (B = 0) are created from `lora_seed`.
    config_overrides: other `ModelConfig` fields (lora_alpha, lora_targets, remat, ...).
  Returns:
    (model, config).
  """
  path = os.fspath(path)
  mesh = None if mesh is None else auto_mesh(mesh)
  config = read_config(path, dtype=dtype, param_dtype=dtype if param_dtype is None else param_dtype,
                       lora_rank=lora_rank, **config_overrides)
  tensors = _CheckpointTensors(path)
  abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  device = jax.devices()[0]

  def sharding_of(variable: nnx.Variable) -> jax.sharding.Sharding:
    if mesh is None:
      return jax.sharding.SingleDeviceSharding(device)
    names = variable_logical_axes(variable)
    shape = variable.get_value().shape
    return logical_to_sharding(mesh, names, shape) if names else NamedSharding(mesh, PartitionSpec())

  def build(path_: tuple, variable: nnx.Variable) -> nnx.Variable:
    path_ = tuple(str(p) for p in path_)
    value = variable.get_value()
    sharding = sharding_of(variable)
    names = hf_names(config, path_)
    if names is None:
      return variable.replace(_init_lora(path_, value, sharding, lora_seed))
    _check_shapes(tensors, names, path_, value.shape)
    reader = _slice_reader(tensors, names, _is_kernel(path_), path_[0] == "layers", value.dtype)
    return variable.replace(jax.make_array_from_callback(value.shape, sharding, reader))

  state = nnx.map_state(build, abstract_state)
  return nnx.merge(graphdef, state), config


def _check_shapes(tensors: _CheckpointTensors, names: list[str], path: tuple[str, ...],
                  shape: tuple[int, ...]) -> None:
  """Raises MissingTensorError / ShapeMismatchError naming the tensor and both shapes."""
  per_tensor = shape[1:] if path[0] == "layers" else shape
  expected = tuple(reversed(per_tensor)) if _is_kernel(path) else tuple(per_tensor)
  for name in names:
    if name not in tensors:
      raise MissingTensorError(f"checkpoint {tensors.directory} has no tensor {name!r} "
                               f"(needed for parameter {'/'.join(path)})")
    got = tensors.shape(name)
    if got != expected:
      raise ShapeMismatchError(f"tensor {name!r} in {tensors.directory} has shape {list(got)}, "
                               f"expected {list(expected)} from config.json")


def _slice_reader(tensors: _CheckpointTensors, names: list[str], transpose: bool, stacked: bool,
                  dtype) -> Callable[[tuple[slice, ...]], np.ndarray]:
  """`index -> np.ndarray` for `jax.make_array_from_callback`: reads only the requested slice."""

  def read_one(name: str, index: tuple[slice, ...]) -> np.ndarray:
    array = tensors.tensor(name)
    if transpose:
      array = array.T
    return np.asarray(array[index], dtype=dtype)

  def reader(index: tuple[slice, ...]) -> np.ndarray:
    if not stacked:
      return read_one(names[0], index)
    layers = range(len(names))[index[0]]
    return np.stack([read_one(names[i], index[1:]) for i in layers])

  return reader


def _init_lora(path: tuple[str, ...], value: jax.ShapeDtypeStruct, sharding, seed: int) -> jax.Array:
  """Fresh LoRA factor on `sharding` (small; drawn on the host, seeded by seed and path): A is
  U(-1/sqrt(in), 1/sqrt(in)) (Kaiming-uniform, as PEFT), B is zeros."""
  if path[-1] == "lora_b":
    host = np.zeros(value.shape, value.dtype)
  else:
    rng = np.random.default_rng([seed, zlib.crc32("/".join(path).encode())])
    bound = 1.0 / value.shape[-2] ** 0.5
    host = rng.uniform(-bound, bound, value.shape).astype(value.dtype)
  return jax.device_put(host, sharding)


# ------------------------------------------------------------------------------ writing


def export_tensors(model: Decoder, dtype=None) -> dict[str, np.ndarray]:
  """Hugging Face name -> host array `[out, in]` of `model`, LoRA merged into the base weights."""
  config = model.config
  dtype = np.dtype(config.param_dtype if dtype is None else dtype)
  state = nnx.state(model, nnx.Param)
  flat = {tuple(str(p) for p in path): v for path, v in nnx.to_flat_state(state)}
  out: dict[str, np.ndarray] = {}
  for path, variable in flat.items():
    names = hf_names(config, path)
    if names is None:
      continue  # LoRA factors, merged below into their kernels
    value = variable.get_value()
    if path[-1] == "kernel":
      a, b = flat.get(path[:-1] + ("lora_a",)), flat.get(path[:-1] + ("lora_b",))
      if a is not None:
        scaling = config.lora_alpha / config.lora_rank
        value = merged_kernel(value, a.get_value(), b.get_value(), scaling)
    host = np.asarray(jax.device_get(value)).astype(dtype)
    if path[0] != "layers":
      host = host[None]
    for i, name in enumerate(names):
      out[name] = np.ascontiguousarray(host[i].T if _is_kernel(path) else host[i])
  return out


def save_pretrained(model: Decoder, config: ModelConfig, path: str | os.PathLike, dtype=None,
                    tokenizer=None) -> None:
  """Writes config.json + model.safetensors that transformers (and vLLM) load; LoRA is merged.

  `dtype` is the saved weight dtype (default `config.param_dtype`); `tokenizer` (a transformers
  tokenizer), when given, is saved alongside so the directory is self-contained. Files are written
  atomically.
  """
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  dtype = np.dtype(config.param_dtype if dtype is None else dtype)
  tensors = export_tensors(model, dtype)
  base_config = dataclasses.replace(config, lora_rank=0, param_dtype=dtype)
  save_safetensors(tensors, os.path.join(path, SINGLE_WEIGHTS_FILE))
  stale_index = os.path.join(path, INDEX_FILE)
  if os.path.exists(stale_index):
    os.remove(stale_index)
  _write_json_atomic(base_config.to_hf(), os.path.join(path, CONFIG_FILE))
  generation = {k: v for k, v in (("bos_token_id", base_config.bos_token_id),
                                  ("eos_token_id", base_config.to_hf()["eos_token_id"]),
                                  ("pad_token_id", base_config.pad_token_id)) if v is not None}
  _write_json_atomic(generation, os.path.join(path, "generation_config.json"))
  if tokenizer is not None:
    tokenizer.save_pretrained(path)


def _write_json_atomic(obj: Any, path: str) -> None:
  atomic_write_json(path, obj, indent=2)


def load_tokenizer(path: str | os.PathLike):
  """The checkpoint's tokenizer (transformers AutoTokenizer, with its chat template)."""
  import transformers  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise CheckpointNotFoundError(f"tokenizer directory {path} does not exist")
  known = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
  if not any(os.path.isfile(os.path.join(path, name)) for name in known):
    raise CheckpointNotFoundError(f"no tokenizer files in {path}: expected one of {list(known)}")
  return transformers.AutoTokenizer.from_pretrained(path)
