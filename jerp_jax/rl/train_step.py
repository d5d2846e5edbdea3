"""The GRPO learner's device step: a pure `train_step(state, batch, *, cfg)`, jitted once, sharded.

State is functional: `create_train_state` splits the Decoder with `nnx.split` into the trained params
(LoRA factors, or every `nnx.Param` for full fine-tuning), the frozen rest, and the optax state. The
jitted functions `nnx.merge` inside.

Reference policy (the KL term):
- LoRA mode: the SAME params with `use_lora=False` (the base model); no second copy.
- Full fine-tuning: `create_train_state(..., reference_copy=True)` keeps a frozen copy of the initial
  params (`state.ref_params`); without it, KL needs `batch.ref_logprobs` or must be off (kl_coef 0).
- `batch.ref_logprobs`, when given, always wins over recomputing.

Gradient accumulation: the batch `[B, T]` is split into `cfg.micro_batches` interleaved micro-batches
(micro-batch j = rows j, j + k, ...) scanned with `lax.scan`; each micro-batch loss is normalised by the
whole batch's token / sequence count, so the accumulated gradient equals the one-batch gradient.

bf16 compute: build the Decoder from `dataclasses.replace(config, dtype=jnp.bfloat16)` (params stay in
`param_dtype`; logits, softmax and losses are float32).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jerp_jax import sharding
from jerp_jax.rl.batch import TrainBatch, score_columns, segment_score_columns
from jerp_jax.rl.losses import (LossConfig, loss_denominators, ppo_loss, sft_loss, target_logprobs,
                                token_logprobs)

TRAIN_MODES = ("lora", "full")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warmup (then constant, or cosine decay) and global-norm gradient clipping.

  decay_steps: 0 keeps the rate constant after warmup; > 0 decays it (cosine) to
    learning_rate * final_lr_fraction over that many steps after warmup.
  max_grad_norm: clip threshold; 0 disables clipping.
  Weight decay applies to every trained parameter (as verl's torch AdamW).
  """
  learning_rate: float = 3e-6
  warmup_steps: int = 0
  decay_steps: int = 0
  final_lr_fraction: float = 0.0
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_grad_norm: float = 1.0


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Linear warmup from 0 to cfg.learning_rate, then constant or cosine decay."""
  if cfg.warmup_steps < 0 or cfg.decay_steps < 0:
    raise ValueError(f"warmup_steps / decay_steps must be >= 0, got {cfg.warmup_steps}, "
                     f"{cfg.decay_steps}")
  if cfg.decay_steps:
    after = optax.cosine_decay_schedule(cfg.learning_rate, cfg.decay_steps, cfg.final_lr_fraction)
  else:
    after = optax.constant_schedule(cfg.learning_rate)
  if not cfg.warmup_steps:
    return after
  warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW(schedule); the current rate is readable from the optimizer state."""
  adamw = optax.inject_hyperparams(optax.adamw)(
      learning_rate=learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
      weight_decay=cfg.weight_decay)
  if cfg.max_grad_norm:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)
  return adamw


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Static settings of the jitted steps (hashable).

  loss: the PPO / KL / entropy settings (also the SFT aggregation mode).
  micro_batches: gradient-accumulation steps k; the batch size must be a multiple of k.
  entropy_metric: compute per-token entropy for the metrics even when entropy_coef is 0.
  """
  loss: LossConfig = LossConfig()
  micro_batches: int = 1
  entropy_metric: bool = True

  def __post_init__(self):
    if self.micro_batches < 1:
      raise ValueError(f"TrainConfig.micro_batches must be >= 1, got {self.micro_batches}")


@flax.struct.dataclass
class TrainState:
  """Everything the train step updates or reads (a pytree; graphdef / tx / mode are static).

  step: int32 scalar, number of optimizer updates applied.
  params: trained variables (LoRA factors in "lora" mode, all nnx.Param in "full" mode).
  frozen: every other variable of the model (the base weights in "lora" mode).
  opt_state: optax state of `tx` over `params`.
  ref_params: frozen copy of the initial params (full fine-tuning with a KL reference), else None.
  """
  step: jax.Array
  params: nnx.State
  frozen: nnx.State
  opt_state: Any
  ref_params: Optional[nnx.State]
  graphdef: Any = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  mode: str = flax.struct.field(pytree_node=False)


def create_train_state(model: nnx.Module, optimizer: OptimizerConfig | optax.GradientTransformation,
                       *, mode: str = "lora", reference_copy: bool = False,
                       mesh: Optional[Mesh] = None) -> TrainState:
  """Splits `model` into a TrainState (placed on `mesh` by its logical axes when given).

  Args:
    model: a Decoder (with LoRA params when mode is "lora").
    optimizer: an OptimizerConfig (see make_optimizer) or any optax transformation.
    mode: "lora" trains only nnx.LoRAParam (base weights frozen); "full" trains every nnx.Param.
    reference_copy: full mode only: keep a frozen copy of the initial params as the KL reference.
    mesh: place params, frozen weights and optimizer state with `jerp_jax.sharding` rules.
  """
  if mode not in TRAIN_MODES:
    raise ValueError(f"mode must be one of {TRAIN_MODES}, got {mode!r}")
  if reference_copy and mode != "full":
    raise ValueError("reference_copy is for full fine-tuning; in LoRA mode the reference is the "
                     "same params with use_lora=False")
  tx = make_optimizer(optimizer) if isinstance(optimizer, OptimizerConfig) else optimizer
  trained = nnx.LoRAParam if mode == "lora" else nnx.Param
  graphdef, params, frozen = nnx.split(model, trained, ...)
  if not jax.tree.leaves(params):
    raise ValueError(f"mode {mode!r}: the model has no {trained.__name__} variables to train "
                     "(for LoRA build the config with lora_rank > 0)")
  if mesh is not None:
    params = sharding.shard_state(params, mesh)
    frozen = sharding.shard_state(frozen, mesh)
  ref_params = jax.tree.map(jnp.copy, params) if reference_copy else None
  opt_state = tx.init(params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                     opt_state=opt_state, ref_params=ref_params, graphdef=graphdef, tx=tx,
                     mode=mode)
  if mesh is not None:
    state = jax.device_put(state, train_state_shardings(state, mesh))
  return state


def policy_model(state: TrainState) -> nnx.Module:
  """The current policy as a Decoder (shares the state's arrays)."""
  return nnx.merge(state.graphdef, state.params, state.frozen)


def train_state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
  """A TrainState-shaped tree of NamedShardings from the variables' logical axes."""
  mesh = sharding.auto_mesh(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  ref = None if state.ref_params is None else sharding.state_shardings(state.ref_params, mesh)
  return state.replace(step=replicated,
                       params=sharding.state_shardings(state.params, mesh),
                       frozen=sharding.state_shardings(state.frozen, mesh),
                       opt_state=sharding.state_shardings(state.opt_state, mesh),
                       ref_params=ref)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of every [B, T] batch field: rows over ("data", "fsdp")."""
  mesh = sharding.auto_mesh(mesh)
  return NamedSharding(mesh, sharding.logical_to_spec(("batch", "length"), mesh))


# ------------------------------------------------------------------------------ device functions


def _forward_logprobs(graphdef, params, frozen, input_ids, attention_mask, use_lora: bool,
                      with_entropy: bool, columns: Optional[jax.Array] = None,
                      segment_ids: Optional[jax.Array] = None):
  """Log-probs (and entropy) of the tokens: [B, T] in TrainBatch alignment, or of the tokens at
  `columns` ([B, W], or [B, M, W] for packed rows; the logits are computed at those columns' preceding
  positions only), in the shape of `columns`."""
  model = nnx.merge(graphdef, params, frozen)
  if columns is None:
    return token_logprobs(model(input_ids, attention_mask, segment_ids, use_lora=use_lora), input_ids,
                          with_entropy)
  hidden = model.hidden_states(input_ids, attention_mask, segment_ids, use_lora=use_lora)  # [B, T, D]
  flat = columns.reshape(columns.shape[0], -1)
  # position t - 1 predicts token t; column 0 (never a loss token) reads position 0
  hidden = jnp.take_along_axis(hidden, jnp.maximum(flat - 1, 0)[..., None], axis=1)
  targets = jnp.take_along_axis(input_ids, flat, axis=1)
  logprobs, entropy = target_logprobs(model.logits(hidden), targets, with_entropy)
  shaped = lambda x: None if x is None else x.reshape(columns.shape)
  return shaped(logprobs), shaped(entropy)


def _scored_fields(batch: Any, names: tuple[str, ...]) -> dict:
  """The model inputs and the per-token fields `names` the loss reads: at the score window's columns
  ([B, W], plus "columns"; packed rows [B, M, W], plus "segment_ids") when the batch has one, else the
  whole rows [B, T]."""
  fields = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
  window = getattr(batch, "score_window", None)
  segment_ids = getattr(batch, "segment_ids", None)
  per_token = {name: getattr(batch, name) for name in names if getattr(batch, name) is not None}
  if segment_ids is not None:
    if window is None:
      raise ValueError("a packed batch (segment_ids) needs a score_window")
    columns, owned = segment_score_columns(batch.loss_mask, segment_ids, window, batch.max_segments)
    take = lambda x: jnp.take_along_axis(x, columns.reshape(columns.shape[0], -1), axis=1).reshape(
        columns.shape)
    scored = {name: take(x) for name, x in per_token.items()}
    if "loss_mask" in scored:  # a window moved left over the previous segment counts only its own tokens
      scored["loss_mask"] = scored["loss_mask"] * owned
    return {**fields, "segment_ids": segment_ids, "columns": columns, **scored}
  if window is None:
    return {**fields, **per_token}
  columns = score_columns(batch.loss_mask, window)
  take = lambda x: jnp.take_along_axis(x, columns, axis=1)
  return {**fields, "columns": columns, **{name: take(x) for name, x in per_token.items()}}


def _split_micro_batches(x: jax.Array, k: int) -> jax.Array:
  """[B, ...] -> [k, B / k, ...]; micro-batch j holds rows j, j + k, ... (keeps the row sharding)."""
  split = x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)
  return sharding.constrain(split, (None, "batch") + (None,) * (x.ndim - 1))


def _accumulate(loss_fn: Callable, params, micro_batches, k: int):
  """Sums value_and_grad(loss_fn)(params, micro_batch) over the k micro-batches (lax.scan)."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  first = jax.tree.map(lambda x: x[0], micro_batches)
  (_, metrics_shape), _ = jax.eval_shape(grad_fn, params, first)

  def body(carry, micro_batch):
    grads_acc, metrics_acc = carry
    (_, metrics), grads = grad_fn(params, micro_batch)
    grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads)
    metrics_acc = jax.tree.map(jnp.add, metrics_acc, metrics)
    return (grads_acc, metrics_acc), None

  zeros = (jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
           jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics_shape))
  (grads, metrics), _ = jax.lax.scan(body, zeros, micro_batches, length=k)
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
  return grads, metrics


def _apply_gradients(state: TrainState, grads, metrics: dict) -> tuple[TrainState, dict]:
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics)
  metrics["grad_norm"] = optax.global_norm(grads)
  learning_rate = optax.tree_utils.tree_get(
      opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array))
  if learning_rate is not None:
    metrics["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _check_batch_rows(batch_size: int, k: int) -> None:
  if batch_size % k:
    raise ValueError(f"batch size {batch_size} is not a multiple of micro_batches={k}; pad it "
                     "(build_train_batch(..., batch_multiple=...))")


def train_step(state: TrainState, batch: TrainBatch, *, cfg: TrainConfig
               ) -> tuple[TrainState, dict]:
  """One GRPO/PPO update: accumulate the policy-loss gradient over micro-batches, apply AdamW.

  Args:
    state: TrainState.
    batch: TrainBatch with [B, T] fields, B a multiple of cfg.micro_batches; with `score_window` W the
      logits are computed at each row's W scored columns only (the same loss).
    cfg: TrainConfig (static).

  Returns:
    (new state, metrics: scalars pg_loss, loss, pg_clipfrac, pg_clipfrac_lower, ppo_kl,
    ratio_mean, kl (KL on), entropy (when computed), grad_norm, learning_rate, num_tokens).
  """
  k = cfg.micro_batches
  _check_batch_rows(batch.input_ids.shape[0], k)
  loss_cfg = cfg.loss
  use_kl = loss_cfg.kl_coef != 0.0
  if use_kl and batch.ref_logprobs is None and state.mode == "full" and state.ref_params is None:
    raise ValueError("KL is on but there is no reference: full fine-tuning needs "
                     "create_train_state(..., reference_copy=True) or batch.ref_logprobs")
  with_entropy = cfg.entropy_metric or loss_cfg.entropy_coef != 0.0
  fields = _scored_fields(batch, ("loss_mask", "old_logprobs", "advantages", "ref_logprobs"))
  # counted on the scored fields: a packed row's sequences are its segments
  denominators = loss_denominators(fields["loss_mask"], loss_cfg.aggregation)
  micro = jax.tree.map(lambda x: _split_micro_batches(x, k), fields)

  def loss_fn(params, mb: dict):
    forward = lambda params, lora, entropy: _forward_logprobs(
        state.graphdef, params, state.frozen, mb["input_ids"], mb["attention_mask"], lora, entropy,
        mb.get("columns"), mb.get("segment_ids"))
    logprobs, entropy = forward(params, True, with_entropy)
    ref_logprobs = mb.get("ref_logprobs")
    if use_kl and ref_logprobs is None:
      if state.mode == "lora":
        ref_params, ref_lora = jax.lax.stop_gradient(params), False
      else:
        ref_params, ref_lora = state.ref_params, True
      ref_logprobs = jax.lax.stop_gradient(forward(ref_params, ref_lora, False)[0])
    return ppo_loss(logprobs, mb["old_logprobs"], mb["advantages"], mb["loss_mask"], loss_cfg,
                    ref_logprobs=ref_logprobs, entropy=entropy, denominators=denominators)

  grads, metrics = _accumulate(loss_fn, state.params, micro, k)
  metrics["num_tokens"] = denominators.tokens
  return _apply_gradients(state, grads, metrics)


def sft_step(state: TrainState, batch: Any, *, cfg: TrainConfig) -> tuple[TrainState, dict]:
  """One supervised step: cross-entropy of the loss-mask tokens (the warm start), same machinery.

  batch: any pytree with input_ids, attention_mask, loss_mask [B, T] (a TrainBatch or SFTBatch).
  Returns (new state, metrics: loss, nll_per_token, grad_norm, learning_rate, num_tokens).
  """
  k = cfg.micro_batches
  _check_batch_rows(batch.input_ids.shape[0], k)
  fields = _scored_fields(batch, ("loss_mask",))
  denominators = loss_denominators(fields["loss_mask"], cfg.loss.aggregation)
  micro = jax.tree.map(lambda x: _split_micro_batches(x, k), fields)

  def loss_fn(params, mb):
    logprobs, _ = _forward_logprobs(state.graphdef, params, state.frozen, mb["input_ids"],
                                    mb["attention_mask"], True, False, mb.get("columns"),
                                    mb.get("segment_ids"))
    return sft_loss(logprobs, mb["loss_mask"], cfg.loss.aggregation, denominators)

  grads, metrics = _accumulate(loss_fn, state.params, micro, k)
  metrics["num_tokens"] = denominators.tokens
  return _apply_gradients(state, grads, metrics)


@functools.partial(jax.jit, static_argnames=("use_lora", "micro_batches"))
def compute_logprobs(state: TrainState, input_ids: jax.Array, attention_mask: jax.Array, *,
                     use_lora: bool = True, micro_batches: int = 1) -> jax.Array:
  """Token log-probs [B, T] (TrainBatch alignment) under the policy, or the reference policy.

  use_lora=False in LoRA mode is the reference (base) policy; in full mode with
  `state.ref_params`, use_lora=False evaluates that frozen reference copy. micro_batches bounds the
  [B / k, T, V] logits memory.
  """
  _check_batch_rows(input_ids.shape[0], micro_batches)
  params, lora = state.params, use_lora
  if not use_lora and state.mode == "full":
    if state.ref_params is None:
      raise ValueError("full fine-tuning has no reference params (reference_copy=False)")
    params, lora = state.ref_params, True
  micro = jax.tree.map(lambda x: _split_micro_batches(x, micro_batches), (input_ids, attention_mask))

  def one(_, mb):
    logprobs, _ = _forward_logprobs(state.graphdef, params, state.frozen, mb[0], mb[1], lora, False)
    return None, logprobs

  _, logprobs = jax.lax.scan(one, None, micro)  # [k, B / k, T]
  return logprobs.swapaxes(0, 1).reshape(input_ids.shape)


def jit_step(step_fn: Callable, cfg: TrainConfig, state: TrainState,
             mesh: Optional[Mesh] = None) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """Jits `train_step` / `sft_step` once: explicit in/out shardings on `mesh`, donated state.

  Returns `run(state, batch) -> (state, metrics)`; with a mesh the call runs under
  `jax.set_mesh(mesh)` (activation constraints) and the batch rows must divide over data x fsdp, and
  `run.jitted` is the jitted function itself (`.lower(...)` for ahead-of-time compilation, under
  `jax.set_mesh(mesh)`). Without a mesh it is a plain single-device jit (the reference the sharded step
  must equal).
  """
  fn = functools.partial(step_fn, cfg=cfg)
  if mesh is None:
    return jax.jit(fn, donate_argnums=0)
  mesh = sharding.auto_mesh(mesh)
  state_sh = train_state_shardings(state, mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  rows = batch_sharding(mesh)
  jitted = jax.jit(fn, in_shardings=(state_sh, rows), out_shardings=(state_sh, replicated),
                   donate_argnums=0)
  row_shards = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)

  def run(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
    if batch.input_ids.shape[0] % row_shards:
      raise ValueError(f"batch size {batch.input_ids.shape[0]} does not divide over the mesh's "
                       f"data x fsdp = {row_shards} shards")
    with jax.set_mesh(mesh):
      return jitted(state, batch)

  run.jitted = jitted
  return run
