"""One place that validates an experiment's ml-collections config and derives the typed component configs.

Apps and the trainer never read raw config keys elsewhere: `Settings.from_config(config)` checks every
value (clear errors that name the key) and builds the dataclass configs of the model, rollout, learner,
warm start, rule pool and evaluation.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from jerp_jax import distributed
from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.rl import advantages as advantages_lib
from jerp_jax.rl import losses as losses_lib
from jerp_jax.rl import rollout as rollout_lib
from jerp_jax.rl import train_step as train_step_lib
from jerp_jax.rl import warm_start as warm_start_lib
from jerp_jax.rules.pool import POOL_FILE
from jerp_jax.sampling import SamplingConfig, make_strategy

MODES = ("joint", "grpo", "rules", "sequential")
ENVS = ("alfworld", "webshop")
REFLECTORS = ("miner", "llm")
# ALFWorld reward 10 x won, WebShop 10 x score (verl-agent).
_REWARD_SCALE = {"alfworld": 10.0, "webshop": 10.0}


class ConfigError(ValueError):
  """A config value is missing or invalid; the message names the key."""


def _require(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}: {message}")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything the trainer needs, validated.

  uses_rules / trains_policy: which halves of JERP the mode runs (sequential switches after
  rule_only_iterations iterations).
  """
  raw: ml_collections.ConfigDict
  mode: str
  seed: int
  run_dir: str
  env_name: str
  rollout: rollout_lib.RolloutConfig
  sampling: SamplingConfig
  advantages: advantages_lib.AdvantageConfig
  optimizer: train_step_lib.OptimizerConfig
  train: train_step_lib.TrainConfig
  warm_start: warm_start_lib.WarmStartConfig
  warm_start_games: int
  warm_start_optimizer: train_step_lib.OptimizerConfig
  iterations: int
  tasks_per_iteration: int
  group_size: int
  rule_only_iterations: int
  distributed: distributed.DistributedConfig = distributed.DistributedConfig()

  @property
  def uses_rules(self) -> bool:
    return self.mode in ("joint", "rules", "sequential")

  def trains_policy(self, iteration: int) -> bool:
    if self.mode == "grpo" or self.mode == "joint":
      return True
    if self.mode == "sequential":
      return iteration >= self.rule_only_iterations
    return False  # rules: frozen policy

  def updates_rules(self, iteration: int) -> bool:
    if self.mode == "joint" or self.mode == "rules":
      return True
    if self.mode == "sequential":
      return iteration < self.rule_only_iterations
    return False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Settings":
    c = config
    _require(c.mode in MODES, "mode", f"must be one of {MODES}, got {c.mode!r}")
    _require(c.env.name in ENVS, "env.name", f"must be one of {ENVS}, got {c.env.name!r}")
    _require(c.rules.reflector in REFLECTORS, "rules.reflector",
             f"must be one of {REFLECTORS}, got {c.rules.reflector!r}")
    _require(int(c.rl.iterations) >= 0, "rl.iterations", f"must be >= 0, got {c.rl.iterations}")
    _require(not isinstance(c.env.eval_splits, str) and all(isinstance(x, str) for x in c.env.eval_splits),
             "env.eval_splits", f"must be a tuple of split names, got {c.env.eval_splits!r} "
             "(on the command line: --config.env.eval_splits=\"('valid_seen',)\")")
    for key, value in (("rl.group_size", c.rl.group_size),
                       ("rl.tasks_per_iteration", c.rl.tasks_per_iteration),
                       ("env.max_steps", c.env.max_steps), ("env.num_train_tasks", c.env.num_train_tasks),
                       ("agent.max_new_tokens", c.agent.max_new_tokens), ("rules.top_k", c.rules.top_k),
                       ("rules.capacity", c.rules.capacity), ("eval.num_games", c.eval.num_games),
                       ("rl.micro_batch_size", c.rl.micro_batch_size),
                       ("rl.grad_accumulation", c.rl.get("grad_accumulation", 1)),
                       ("rl.ppo_epochs", c.rl.get("ppo_epochs", 1))):
      _require(int(value) >= 1, key, f"must be >= 1, got {value}")
    _require(int(c.rl.get("pack_length", 0)) >= 0, "rl.pack_length",
             f"must be >= 0 (0 = the mini-batch's row length), got {c.rl.get('pack_length', 0)}")
    _require(c.rl.group_size >= 2, "rl.group_size", "GRPO needs at least 2 episodes per group")
    _require(c.eval.interval >= 0, "eval.interval", f"must be >= 0, got {c.eval.interval}")
    _require(c.checkpoint.interval >= 0, "checkpoint.interval", "must be >= 0")
    _require(c.mode != "sequential" or 0 <= c.rules.sequential_rule_iterations <= c.rl.iterations,
             "rules.sequential_rule_iterations",
             f"must be in [0, rl.iterations={c.rl.iterations}]")
    _require(bool(c.model.checkpoint) or c.model.tokenizer != "", "model.checkpoint",
             "this config needs a Hugging Face checkpoint directory (--checkpoint=PATH)")
    _require(c.model.checkpoint == "" or os.path.isdir(c.model.checkpoint), "model.checkpoint",
             f"directory {c.model.checkpoint!r} does not exist")
    _require(c.sampling.temperature > 0, "sampling.temperature", "must be > 0 (use eval.greedy for greedy)")
    _require(int(c.sampling.get("prefill_chunk_tokens", 0)) >= 0, "sampling.prefill_chunk_tokens",
             f"must be >= 0 (0 = prefill the whole batch at once), got {c.sampling.get('prefill_chunk_tokens')}")
    _require(c.agent.think in warm_start_lib.THINK_STYLES, "agent.think",
             f"must be one of {warm_start_lib.THINK_STYLES}, got {c.agent.think!r}")
    _require(c.agent.penalize in advantages_lib.PENALIZE, "agent.penalize",
             f"must be one of {advantages_lib.PENALIZE}, got {c.agent.penalize!r}")
    _require(c.rl.turn_weighting in advantages_lib.TURN_WEIGHTINGS, "rl.turn_weighting",
             f"must be one of {advantages_lib.TURN_WEIGHTINGS}, got {c.rl.turn_weighting!r}")
    _require(float(c.rl.step_penalty) >= 0, "rl.step_penalty", f"must be >= 0, got {c.rl.step_penalty!r}")
    _require(0.0 <= float(c.rl.negative_weight) <= 1.0, "rl.negative_weight",
             f"must be in [0, 1], got {c.rl.negative_weight!r}")
    _require(0.0 <= float(c.warm_start.mistake_rate) < 1.0, "warm_start.mistake_rate",
             f"must be in [0, 1), got {c.warm_start.mistake_rate!r}")
    _require(0.0 <= float(c.warm_start.rules_fraction) <= 1.0, "warm_start.rules_fraction",
             f"must be in [0, 1], got {c.warm_start.rules_fraction!r}")
    _require(not c.warm_start.rules_from or os.path.isfile(os.path.join(c.warm_start.rules_from, POOL_FILE)),
             "warm_start.rules_from", f"no {POOL_FILE} in {c.warm_start.rules_from!r} (give a run's rules dir)")
    run_dir = c.run_dir or os.path.join("runs", f"{c.env.name}_{c.mode}_seed{c.seed}")
    prompt = agent_prompt.PromptConfig(env_name=c.env.name, history_length=int(c.agent.history_length))
    try:
      rollout = rollout_lib.RolloutConfig(
          group_size=int(c.rl.group_size), max_turns=int(c.env.max_steps),
          max_new_tokens=int(c.agent.max_new_tokens), max_prompt_tokens=int(c.agent.max_prompt_tokens),
          require_think=True, prompt=prompt)
      sampling = make_strategy(float(c.sampling.temperature), int(c.sampling.top_k), float(c.sampling.top_p))
      advantages = advantages_lib.AdvantageConfig(
          estimator=c.rl.algorithm, normalize_std=bool(c.rl.normalize_std), gamma=float(c.rl.gamma),
          step_weight=float(c.rl.gigpo_weight), reward_scale=_REWARD_SCALE[c.env.name],
          invalid_penalty=float(c.agent.invalid_penalty), penalize=str(c.agent.penalize),
          turn_weighting=str(c.rl.turn_weighting), step_penalty=float(c.rl.step_penalty),
          negative_weight=float(c.rl.negative_weight),
          credit_inadmissible=bool(c.rl.credit_inadmissible),
          blame_inadmissible=bool(c.rl.blame_inadmissible))
      optimizer = train_step_lib.OptimizerConfig(
          learning_rate=float(c.rl.learning_rate), warmup_steps=int(c.rl.warmup_steps),
          weight_decay=float(c.rl.weight_decay), max_grad_norm=float(c.rl.max_grad_norm))
      loss = losses_lib.LossConfig(
          clip_low=float(c.rl.clip_low), clip_high=float(c.rl.clip_high), kl_coef=float(c.rl.kl_coef),
          kl_estimator=c.rl.kl_estimator, entropy_coef=float(c.rl.entropy_coef), aggregation=c.rl.loss_agg)
      warm = warm_start_lib.WarmStartConfig(
          epochs=max(1, int(c.warm_start.epochs)), batch_size=int(c.warm_start.batch_size),
          think=str(c.agent.think), max_steps=int(c.warm_start.max_steps), seed=int(c.seed),
          seq_buckets=tuple(int(b) for b in c.warm_start.seq_buckets),
          repeat_verbs=tuple(str(v) for v in c.warm_start.repeat_verbs),
          repeat_factor=int(c.warm_start.repeat_factor))
      if c.warm_start.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"config.warm_start.lr_schedule must be 'constant' or 'cosine', "
                         f"got {c.warm_start.lr_schedule!r}")
      # decay_steps is set by the trainer once the SFT rows (and so the step count) are known.
      warm_optimizer = train_step_lib.OptimizerConfig(
          learning_rate=float(c.warm_start.learning_rate), warmup_steps=int(c.warm_start.warmup_steps),
          final_lr_fraction=float(c.warm_start.final_lr_fraction), weight_decay=0.0, max_grad_norm=1.0)
    except ValueError as e:
      raise ConfigError(f"invalid config: {e}") from e
    dist = _distributed_config(c)
    return cls(distributed=dist, raw=c, mode=c.mode, seed=int(c.seed), run_dir=run_dir, env_name=c.env.name,
               rollout=rollout, sampling=sampling, advantages=advantages, optimizer=optimizer,
               train=train_step_lib.TrainConfig(loss=loss, micro_batches=int(c.rl.get("grad_accumulation", 1))),
               warm_start=warm, warm_start_games=int(c.warm_start.num_games) if c.warm_start.enabled else 0,
               warm_start_optimizer=warm_optimizer, iterations=int(c.rl.iterations),
               tasks_per_iteration=int(c.rl.tasks_per_iteration), group_size=int(c.rl.group_size),
               rule_only_iterations=int(c.rules.sequential_rule_iterations) if c.mode == "sequential" else 0)


def _distributed_config(c: ml_collections.ConfigDict) -> distributed.DistributedConfig:
  """config.distributed (optional section), empty fields filled from the JAX_* environment variables."""
  d = c.get("distributed") or ml_collections.ConfigDict()
  modes = ("none", "auto", "explicit")
  _require(d.get("mode", "none") in modes, "distributed.mode", f"must be one of {modes}, got {d.get('mode')!r}")
  try:
    dist = distributed.config_from_env(distributed.DistributedConfig(
        mode=d.get("mode", "none"), coordinator_address=d.get("coordinator_address", ""),
        num_processes=int(d.get("num_processes", 0)), process_id=int(d.get("process_id", -1)),
        cpu_collectives=d.get("cpu_collectives", "gloo"),
        initialization_timeout=int(d.get("initialization_timeout", 300))))
  except ValueError as e:
    raise ConfigError(f"config.distributed: {e}") from e
  if dist.mode == "explicit":
    _require(bool(dist.coordinator_address), "distributed.coordinator_address",
             "mode 'explicit' needs host:port (or JAX_COORDINATOR_ADDRESS)")
    _require(dist.num_processes >= 1, "distributed.num_processes",
             f"mode 'explicit' needs >= 1 (or JAX_NUM_PROCESSES), got {dist.num_processes}")
    _require(0 <= dist.process_id < dist.num_processes, "distributed.process_id",
             f"must be in [0, {dist.num_processes}) (or JAX_PROCESS_ID), got {dist.process_id}")
  return dist


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON types (tuples become lists)."""
  return ml_collections.ConfigDict(config).to_dict()
