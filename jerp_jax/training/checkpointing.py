"""Exact-resume checkpoints of the GRPO learner (orbax), and export of the trained policy.

One orbax `CheckpointManager` step directory holds:
- "arrays": the TrainState's arrays (step, trained params, optimizer state, the full-FT reference
  copy, optionally the frozen weights) and the RNG key, as a flat dict of leaves;
- "meta" (JSON): the data position (any JSON value, e.g. an int or {"epoch": .., "index": ..}),
  the train mode and the leaves' tree paths (checked against the template on restore);
- "rule_pool" (JSON): an opaque dict supplied by the caller (the rule pool), or null.

Atomic: orbax writes a step into a temporary directory and renames it when complete, so a process
killed mid-save leaves the previous steps intact and the partial one invisible. The last
`max_to_keep` steps are kept.

Frozen weights: in LoRA mode the base weights never change and are not saved by default (the caller
rebuilds the model from the same base checkpoint / seed and passes it as the restore template);
`save_frozen=True` saves them too. Full fine-tuning saves them by default.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jerp_jax.models import save_pretrained
from jerp_jax.rl.train_step import TrainState, policy_model

_FORMAT_VERSION = 1


@dataclasses.dataclass
class RestoredCheckpoint:
  """What `TrainCheckpointer.restore` returns."""
  state: TrainState
  rng: jax.Array
  data_position: Any
  rule_pool: Optional[dict]
  step: int


def _saved_parts(state: TrainState, save_frozen: bool) -> dict[str, Any]:
  parts = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
  if state.ref_params is not None:
    parts["ref_params"] = state.ref_params
  if save_frozen:
    parts["frozen"] = state.frozen
  return parts


def _flatten(tree: Any) -> tuple[dict[str, Any], list[str]]:
  leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
  arrays = {f"{i:06d}": leaf for i, (_, leaf) in enumerate(leaves_with_paths)}
  paths = [jax.tree_util.keystr(path) for path, _ in leaves_with_paths]
  return arrays, paths


def _is_typed_key(rng: jax.Array) -> bool:
  return jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)


class TrainCheckpointer:
  """Saves and restores everything a GRPO run needs to resume exactly."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
               save_frozen: Optional[bool] = None, async_save: bool = False):
    """
    Args:
      directory: checkpoint root (created if missing); one sub-directory per step.
      max_to_keep: newest steps kept; older ones are deleted after a successful save.
      save_frozen: also save the frozen weights; None = only in full fine-tuning mode.
      async_save: write in a background thread (call `wait()` before relying on a save).
    """
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    self.directory = os.path.abspath(os.fspath(directory))
    self._save_frozen = save_frozen
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    # handlers named up front, so `item_metadata` can read the saved shapes before any array is read
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"arrays": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                       "rule_pool": ocp.JsonCheckpointHandler()})

  def _frozen_saved(self, state: TrainState) -> bool:
    return state.mode == "full" if self._save_frozen is None else self._save_frozen

  def save(self, state: TrainState, *, rng: jax.Array, data_position: Any,
           rule_pool: Optional[dict] = None, step: Optional[int] = None) -> int:
    """Saves the state under step `step` (default `int(state.step)`) and returns that step.

    step: the checkpoint's key; a loop whose iterations do not always update the params (rules-only
      iterations, the warm start) keys checkpoints by its own iteration counter.

    rng: the run's PRNG key (typed `jax.random.key` or raw uint32 key data).
    data_position: JSON-serialisable position in the task stream.
    rule_pool: JSON-serialisable dict (e.g. the rule pool's to_json()), or None.
    """
    step = int(state.step) if step is None else int(step)
    typed = _is_typed_key(rng)
    arrays, paths = _flatten(_saved_parts(state, self._frozen_saved(state)))
    # a host numpy array: the same on every process (a process-local jax.Array cannot be saved multi-host)
    arrays["rng"] = np.asarray(jax.random.key_data(rng) if typed else rng)
    meta = {"format_version": _FORMAT_VERSION, "step": step, "mode": state.mode,
            "data_position": data_position, "rng_typed": bool(typed),
            "rng_impl": str(jax.random.key_impl(rng)) if typed else None,
            "rng_shape": list(arrays["rng"].shape), "rng_dtype": str(arrays["rng"].dtype),
            "leaf_paths": paths}
    self._manager.save(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta),
        rule_pool=ocp.args.JsonSave({"rule_pool": rule_pool})), force=True)
    return step

  def wait(self) -> None:
    """Blocks until pending (async) saves are on disk."""
    self._manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, template: TrainState, *, step: Optional[int] = None) -> RestoredCheckpoint:
    """Restores a step (default the latest) into the structure and shardings of `template`.

    template: a TrainState built exactly like the saved one (same model config, mode, optimizer);
      its arrays give shapes, dtypes and shardings, and its frozen weights are kept when they were
      not saved.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available: {self.all_steps()}")
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("format_version") != _FORMAT_VERSION:
      raise ValueError(f"checkpoint step {step} has format {meta.get('format_version')}, "
                       f"expected {_FORMAT_VERSION}")
    if meta["mode"] != template.mode:
      raise ValueError(f"checkpoint step {step} was saved in {meta['mode']!r} mode, the template "
                       f"is {template.mode!r}")
    parts = _saved_parts(template, save_frozen=False)
    saved_paths = meta["leaf_paths"]
    _, paths = _flatten(parts)
    with_frozen = False
    if len(saved_paths) != len(paths) and "frozen" not in parts:
      parts["frozen"] = template.frozen
      _, paths = _flatten(parts)
      with_frozen = True
    if saved_paths != paths:
      missing = sorted(set(paths) - set(saved_paths))[:5]
      extra = sorted(set(saved_paths) - set(paths))[:5]
      raise ValueError(f"checkpoint step {step} does not match the template's structure "
                       f"(template-only leaves {missing}, checkpoint-only leaves {extra})")
    leaves, treedef = jax.tree.flatten(parts)
    self._check_shapes(step, leaves, paths)
    abstract = {f"{i:06d}": jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                 sharding=getattr(leaf, "sharding", None))
                for i, leaf in enumerate(leaves)}
    abstract["rng"] = np.zeros(tuple(meta["rng_shape"]), np.dtype(meta["rng_dtype"]))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(abstract), rule_pool=ocp.args.JsonRestore()))
    arrays = restored["arrays"]
    values = jax.tree.unflatten(treedef, [arrays[f"{i:06d}"] for i in range(len(leaves))])
    state = template.replace(step=values["step"], params=values["params"],
                             opt_state=values["opt_state"],
                             ref_params=values.get("ref_params"),
                             frozen=values["frozen"] if with_frozen else template.frozen)
    rng = jnp.asarray(arrays["rng"])
    if meta["rng_typed"]:
      rng = jax.random.wrap_key_data(rng, impl=meta["rng_impl"])
    return RestoredCheckpoint(state=state, rng=rng, data_position=meta["data_position"],
                              rule_pool=restored["rule_pool"]["rule_pool"], step=step)

  def _check_shapes(self, step: int, leaves: list[Any], paths: list[str]) -> None:
    """Raises a ValueError naming the first leaf whose saved shape differs from the template's (checked
    on the checkpoint's metadata, before any array is read: a read into a wrong shape fails deep inside
    TensorStore, with a message that names neither the leaf nor the shapes)."""
    saved = self._manager.item_metadata(step)["arrays"]
    for i, (leaf, path) in enumerate(zip(leaves, paths)):
      saved_shape = tuple(saved[f"{i:06d}"].shape)
      if saved_shape != tuple(leaf.shape):
        raise ValueError(f"checkpoint step {step}: leaf {path} has shape {saved_shape} in the checkpoint "
                         f"but {tuple(leaf.shape)} in the template (a different model config or LoRA rank?)")

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def export_policy(state: TrainState, path: str | os.PathLike, *, dtype=None,
                  tokenizer: Any = None) -> None:
  """Writes the current policy (LoRA merged into the base weights) as a Hugging Face directory.

  dtype: saved weight dtype (default the model's param_dtype); tokenizer: anything with
  `save_pretrained(path)` (a transformers tokenizer), saved beside the weights.
  """
  model = policy_model(state)
  save_pretrained(model, model.config, path, dtype=dtype)
  if tokenizer is not None:
    tokenizer.save_pretrained(os.fspath(path))
