"""The one JERP training loop: modes joint / grpo / rules / sequential over the same rollouts.

One iteration (ARCHITECTURE.md's data path): draw B training tasks -> retrieve each task's rule working
set -> N lockstep episodes per task with batched decoding -> GRPO / GiGPO advantages -> sharded, jitted
train steps (mini-batches of turns) -> reflection (LLM or contrastive miner) edits the rule pool from the
same episodes -> checkpoint, metrics, rules JSONL. Every `eval.interval` iterations the policy is evaluated
on the eval splits with and without rules (the absorption gap).

Randomness is derived from (seed, iteration), so a resumed run replays exactly what an uninterrupted run
would have done after the checkpointed iteration.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import zlib
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from jerp_jax import atomic_io, distributed
from jerp_jax.rl import advantages as advantages_lib
from jerp_jax.rl import batch as batch_lib
from jerp_jax.rl import packing
from jerp_jax.rl import rollout as rollout_lib
from jerp_jax.rl import train_step as train_step_lib
from jerp_jax.rl import warm_start as warm_start_lib
from jerp_jax.rules import reflection as reflection_lib
from jerp_jax import sharding as sharding_lib
from jerp_jax.sampling import Greedy
from jerp_jax.training import builders, checkpointing, evaluation, global_batch
from jerp_jax.training.metrics import MetricsWriter
from jerp_jax.training.settings import ConfigError, Settings, config_to_json

_WARM_START_OFFSET = 100_000  # warm-start games come from a different part of the train split


class Trainer:
  """Owns the policy state, the rule pool, the envs and the run directory of one experiment."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.settings = s = Settings.from_config(config)
    distributed.initialize(s.distributed)  # before anything touches the devices
    self.is_primary = jax.process_index() == 0
    self.run_dir = s.run_dir
    os.makedirs(self.run_dir, exist_ok=True)
    if self.is_primary:
      atomic_io.atomic_write_json(os.path.join(self.run_dir, "config.json"), config_to_json(config),
                                  indent=2, default=str)
    self.tokenizer = builders.build_tokenizer(s)
    self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
    self.mesh = builders.build_mesh(s)
    self.local_mesh = builders.build_local_mesh(s, self.mesh)  # this host's rollouts and reflection
    self._local_policy: tuple[Any, Any] = (None, None)  # (TrainState, its policy on local devices)
    model, self.model_config = builders.build_model(s, self.tokenizer, self.mesh)
    self.graphdef, _ = nnx.split(model)  # the full-model graphdef the sampler merges with
    self.train_mode = "lora" if self.model_config.lora_rank > 0 else "full"
    self.state = self._new_train_state(model, s.optimizer)
    self.sampler = builders.build_sampler(s, self.graphdef, self.model_config, self.local_mesh)
    self.rl_step = train_step_lib.jit_step(train_step_lib.train_step, s.train, self.state, self.mesh)
    self.base_key = jax.random.key(s.seed)
    self.reflection_calls = 0
    embed_fn = None
    if config.rules.embedding == "policy":
      embed_fn = builders.make_policy_embed_fn(self.graphdef, self.policy_state, self.tokenizer)
    self.pool = builders.build_pool(s, embed_fn)
    self.reflector = builders.build_reflector(s, self.sampler, self.policy_state, self.tokenizer,
                                              self._reflection_key)
    self.count_tokens = builders.token_counter(self.tokenizer)
    if s.tasks_per_iteration % jax.process_count():
      raise ConfigError(f"config.rl.tasks_per_iteration={s.tasks_per_iteration} must divide evenly over "
                        f"{jax.process_count()} processes")
    self.task_share = distributed.process_share(s.tasks_per_iteration)  # this host's tasks
    self.train_envs = builders.make_envs(s, config.env.train_split, len(self.task_share) * s.group_size)
    self.eval_games = np.array_split(np.arange(int(config.eval.num_games)),
                                     jax.process_count())[jax.process_index()]
    self.eval_envs = {split: builders.make_envs(s, split, max(1, len(self.eval_games)))
                      for split in config.env.eval_splits}
    self.checkpoints = checkpointing.TrainCheckpointer(os.path.join(self.run_dir, "checkpoints"),
                                                       max_to_keep=int(config.checkpoint.keep))
    self.iteration = 0
    self.warm_started = False
    self.saves = 0
    self.pool_version = 0  # rule-pool updates applied; every host checks it before each rollout
    self.pool_digest = 0
    self._synced_counters: dict[str, int] = dict(self.pool.counters)
    self.eval_history: list[dict[str, Any]] = []
    resumed = self._maybe_resume() if config.resume else False
    self.metrics = MetricsWriter(self.run_dir, resume_step=self.iteration if resumed else None,
                                 tensorboard=bool(config.logging.tensorboard),
                                 enabled=self.is_primary)
    self._stop_requested = False

  # ------------------------------------------------------------------------------------ state
  def _new_train_state(self, model: nnx.Module, optimizer: train_step_lib.OptimizerConfig,
                       reference_copy: Optional[bool] = None) -> train_step_lib.TrainState:
    """A fresh TrainState; full fine-tuning with a KL term keeps a frozen reference copy (default)."""
    if reference_copy is None:
      reference_copy = self.train_mode == "full" and self.settings.train.loss.kl_coef != 0.0
    return train_step_lib.create_train_state(model, optimizer, mode=self.train_mode,
                                             reference_copy=reference_copy, mesh=self.mesh)

  def policy_state(self) -> nnx.State:
    """The current policy's full nnx State on this host's devices (what the sampler's jitted loop takes).

    With several processes the global (possibly fsdp-sharded) arrays are copied once per policy update
    onto the local mesh, so each host decodes its own rollouts without the others.
    """
    state = nnx.state(train_step_lib.policy_model(self.state))
    if self.local_mesh is self.mesh:
      return state
    if self._local_policy[0] is not self.state:
      shardings = sharding_lib.state_shardings(state, self.local_mesh)
      self._local_policy = (self.state, distributed.to_host_local(state, shardings))
    return self._local_policy[1]

  def _iteration_key(self, iteration: int, purpose: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(self.base_key, iteration), purpose)

  def _reflection_key(self) -> jax.Array:
    self.reflection_calls += 1
    return jax.random.fold_in(self._iteration_key(self.iteration, 3), self.reflection_calls)

  def save_checkpoint(self) -> None:
    """Checkpoints the learner, the data position (iteration), the eval history and the rule pool.

    Keyed by a save counter (not the optimizer step: rules-only iterations leave the params untouched).
    """
    self.saves += 1
    position = {"iteration": self.iteration, "warm_started": self.warm_started,
                "eval_history": self.eval_history, "saves": self.saves,
                "pool_version": self.pool_version}
    self.checkpoints.save(self.state, rng=self.base_key, data_position=position,
                          rule_pool=self.pool.state_dict(), step=self.saves)
    if self.is_primary:
      self._write_rules()

  def _maybe_resume(self) -> bool:
    if self.checkpoints.latest_step() is None:
      return False
    restored = self.checkpoints.restore(self.state)
    position = restored.data_position
    self.state = restored.state
    self.base_key = restored.rng
    self.iteration = int(position["iteration"])
    self.warm_started = bool(position["warm_started"])
    self.eval_history = list(position["eval_history"])
    self.saves = int(position["saves"])
    self.pool_version = int(position.get("pool_version", 0))
    self.pool = type(self.pool).from_state_dict(restored.rule_pool, embedder=self.pool.embedder)
    self.pool_digest = zlib.crc32(json.dumps(restored.rule_pool, sort_keys=True).encode())
    self._synced_counters = dict(self.pool.counters)
    logging.info("resumed %s at iteration %d", self.run_dir, self.iteration)
    return True

  def set_pool(self, pool: Any) -> None:
    """Replaces the rule pool (e.g. one loaded from an earlier run); every process passes the same pool."""
    self.pool = pool
    self.pool_digest = zlib.crc32(json.dumps(pool.state_dict(), sort_keys=True).encode())
    self._synced_counters = dict(pool.counters)

  def _write_rules(self) -> None:
    rules_dir = os.path.join(self.run_dir, "rules")
    self.pool.save(rules_dir)

  # ----------------------------------------------------------------------------- warm start
  def warm_start(self) -> dict[str, float]:
    """Behaviour cloning on the observation-only expert (fresh optimizer for GRPO afterwards).

    With config.warm_start.init_from = RUN_DIR, the warm-started params of that earlier run (same seed
    and model config) are loaded instead, so several modes can share one warm start.
    """
    s = self.settings
    tick = time.perf_counter()
    if s.raw.warm_start.init_from:
      return self._warm_start_from(s.raw.warm_start.init_from, tick)
    games = [rollout_lib.GroupSpec(seed=_WARM_START_OFFSET + i) for i in range(s.warm_start_games)]
    env = self.train_envs[0]
    episodes = warm_start_lib.collect_expert_episodes(
        env, games, max_steps=s.warm_start.max_steps, think=s.warm_start.think,
        mistake_rate=float(s.raw.warm_start.mistake_rate), seed=s.seed)
    episodes = [ep for ep in episodes if ep.won]
    rules = builders.build_sft_rules(s, episodes, self.pool.embedder, self.count_tokens)
    rows = warm_start_lib.sft_rows(episodes, self.tokenizer, s.rollout.prompt, rules=rules)
    num_steps = warm_start_lib.num_sft_steps(rows, s.warm_start)
    optimizer = s.warm_start_optimizer
    if s.raw.warm_start.lr_schedule == "cosine":
      optimizer = dataclasses.replace(optimizer, decay_steps=max(1, num_steps - optimizer.warmup_steps))
    sft_state = self._new_train_state(train_step_lib.policy_model(self.state), optimizer)
    bar = tqdm(total=num_steps, desc="warm start", disable=not self.is_primary)

    def log(record):
      bar.update(1)
      bar.set_postfix(loss=f"{record['loss']:.3f}")

    step_fn = train_step_lib.jit_step(train_step_lib.sft_step, train_step_lib.TrainConfig(), sft_state,
                                      self.mesh)
    if jax.process_count() > 1:  # every host built the same rows: place them as global arrays
      spec, sft_step = train_step_lib.batch_sharding(self.mesh).spec, step_fn
      step_fn = lambda state, batch: sft_step(state, distributed.host_full_to_global(batch, self.mesh, spec))
    sft_state, history = warm_start_lib.run_warm_start(
        sft_state, rows, s.warm_start, pad_id=self.pad_id, mesh=self.mesh, step_fn=step_fn, log=log)
    bar.close()
    self.state = self._new_train_state(train_step_lib.policy_model(sft_state), s.optimizer)
    self.rl_step = train_step_lib.jit_step(train_step_lib.train_step, s.train, self.state, self.mesh)
    self.warm_started = True
    summary = {"warm_start/games": float(len(episodes)), "warm_start/rows": float(len(rows)),
               "warm_start/mistakes": float(sum(not st.valid for ep in episodes for st in ep.steps)),
               "warm_start/first_loss": history[0]["loss"], "warm_start/final_loss": history[-1]["loss"],
               "warm_start/seconds": time.perf_counter() - tick}
    if rules is not None:
      summary["warm_start/games_with_rules"] = float(sum(bool(rules(ep)) for ep in episodes))
    summary.update(self._expert_agreement())
    self.metrics.write(0, "warm_start", summary)
    logging.info("warm start: %s", summary)
    return summary

  def _expert_agreement(self) -> dict[str, float]:
    """warm_start/agreement*: the greedy policy vs the expert on the expert's states of held-out games
    (the first config.warm_start.agreement_games games of the first eval split; 0 turns it off)."""
    s = self.settings
    count = int(s.raw.warm_start.agreement_games)
    if count <= 0 or not s.raw.env.eval_splits:
      return {}
    env = self.eval_envs[s.raw.env.eval_splits[0]][0]
    episodes = warm_start_lib.collect_expert_episodes(env, [rollout_lib.GroupSpec(seed=i) for i in range(count)],
                                                      max_steps=s.rollout.max_turns)
    result = warm_start_lib.expert_agreement(self.sampler, self.policy_state(), self.tokenizer, episodes,
                                             s.rollout.prompt, max_new_tokens=s.rollout.max_new_tokens,
                                             require_think=s.rollout.require_think)
    return {f"warm_start/{k}": v for k, v in result.items()}

  def _warm_start_from(self, run_dir: str, tick: float) -> dict[str, float]:
    source = checkpointing.TrainCheckpointer(os.path.join(run_dir, "checkpoints"))
    # Only the policy is taken; the source run may differ in whether it kept a KL reference copy (a
    # warm-start run without KL, loaded by a run with it), so both template shapes are tried.
    templates = [self.state]
    if self.train_mode == "full":
      templates.append(self._new_train_state(train_step_lib.policy_model(self.state), self.settings.optimizer,
                                             reference_copy=self.state.ref_params is None))
    try:
      for step in source.all_steps():  # the checkpoint written right after its warm start, before any RL
        restored = _restore_any(source, templates, step)
        if restored.data_position.get("warm_started"):
          break
      else:
        raise ValueError(f"config.warm_start.init_from: no warm-started checkpoint under {run_dir}/checkpoints")
      if int(restored.data_position.get("iteration", 0)) != 0:  # the warm start's own checkpoint is gone
        raise ValueError(f"config.warm_start.init_from: the earliest warm-started checkpoint under "
                         f"{run_dir}/checkpoints (step {step}) is from iteration "
                         f"{restored.data_position['iteration']}, not the warm start (iteration 0): it was not "
                         f"kept (config.checkpoint.keep); give a run that kept it")
    finally:
      source.close()
    self.state = self._new_train_state(train_step_lib.policy_model(restored.state), self.settings.optimizer)
    self.rl_step = train_step_lib.jit_step(train_step_lib.train_step, self.settings.train, self.state, self.mesh)
    self.warm_started = True
    summary = {"warm_start/init_from_step": float(step), "warm_start/seconds": time.perf_counter() - tick}
    summary.update(self._expert_agreement())
    self.metrics.write(0, "warm_start", summary)
    logging.info("warm start loaded from %s (checkpoint %d)", run_dir, step)
    return summary

  # ------------------------------------------------------------------------------- rollouts
  def _rules_for(self, info: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    r = self.settings.raw.rules
    key = self.pool.task_key(str(info.get("task_id", "")), str(info.get("task_type", "")))
    rules = self.pool.retrieve(key, str(info.get("goal", "")), int(r.top_k), int(r.token_budget),
                               self.count_tokens)
    return tuple(rule.text for rule in rules), tuple(rule.id for rule in rules)

  def _run_policy(self, envs, groups, config: rollout_lib.RolloutConfig, sampling, rng,
                  first_group: int = 0) -> rollout_lib.RolloutResult:
    """Rollouts of this host's groups; `first_group` is the global index of groups[0] (episode ids and
    `Episode.group_index` are global, so results do not depend on how tasks are split over hosts)."""
    n = config.group_size
    episode_ids = np.arange(first_group * n, (first_group + len(groups)) * n)
    result = rollout_lib.collect_rollouts(self.sampler, self.policy_state(), self.tokenizer, envs, groups,
                                          config, rng=rng, sampling=sampling, episode_ids=episode_ids)
    for episode in result.episodes:
      episode.group_index += first_group
    return result

  def _train_groups(self, iteration: int) -> list[rollout_lib.GroupSpec]:
    """This host's share of the iteration's tasks (the same global draw on every host)."""
    s = self.settings
    rng = np.random.default_rng([s.seed, iteration])
    tasks = rng.choice(int(s.raw.env.num_train_tasks), size=s.tasks_per_iteration,
                       replace=s.tasks_per_iteration > int(s.raw.env.num_train_tasks))
    groups = []
    for g, task in enumerate(tasks[self.task_share.start:self.task_share.stop]):
      rules, ids = (), ()
      if s.uses_rules:
        _, info = self.train_envs[g * s.group_size].reset(seed=int(task))
        rules, ids = self._rules_for(info)
      groups.append(rollout_lib.GroupSpec(seed=int(task), rules=rules, rule_ids=ids))
    return groups

  def _check_pool_version(self) -> None:
    """Every host must hold the same rule-pool version (and content digest) before a rollout."""
    if jax.process_count() == 1:
      return
    seen = distributed.allgather_ints([self.pool_version, self.pool_digest])
    if (seen != seen[0]).any():
      raise RuntimeError(f"rule pools differ across hosts (version, digest per process): {seen.tolist()}")

  # ------------------------------------------------------------------------------- learning
  def _policy_update(self, result: rollout_lib.RolloutResult, iteration: int) -> dict[str, float]:
    """Train steps on mini-batches of the iteration's turns (every host's rows: `global_batch`)."""
    s = self.settings
    self._local_policy = (None, None)  # free the host-local policy copy before the train steps
    advantages = advantages_lib.episode_step_advantages(result.episodes, s.group_size, s.advantages)
    # rows in (episode, step) order: hosts own contiguous episode blocks, so the global row order is
    # the same for any number of hosts
    result = dataclasses.replace(result, turns=sorted(result.turns, key=lambda t: (t.episode, t.step)))
    # a zero-advantage turn only adds the KL term: without it (or with rl.kl_all_rows False) it is left out
    drop_zero = s.train.loss.kl_coef == 0.0 or not bool(s.raw.rl.get("kl_all_rows", True))
    pack = lambda seq_len=None: rollout_lib.rollout_train_batch(
        result, advantages, pad_id=self.pad_id, seq_multiple=128, seq_len=seq_len,
        drop_zero_advantage=drop_zero)
    try:
      local = pack()
    except ValueError:
      local = None  # every group had equal rewards: no policy gradient from this host
    # rows, row length and loss span of every host: all hosts compile the same [rows, T] step with
    # the same score window (the logits are computed at the [rows, W] response columns only)
    shape = distributed.allgather_ints(
        [0, 0, 0] if local is None else list(local.input_ids.shape) + [batch_lib.loss_span(local.loss_mask)])
    if not shape[:, 0].sum():
      return {"train/updates": 0.0}
    seq_len = int(shape[:, 1].max())
    window = batch_lib.score_window_for(int(shape[:, 2].max()), seq_len)
    if local is None:
      local = global_batch.empty_batch(seq_len, self.pad_id)
    elif local.input_ids.shape[1] != seq_len:
      local = pack(seq_len)
    local = local.replace(score_window=window)
    row_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if row_shards % jax.process_count():
      raise ValueError(f"mesh data x fsdp = {row_shards} does not divide over {jax.process_count()} processes")
    # each host's rows of a mini-batch: its share of the data x fsdp shards, times the micro-batches
    row_multiple = row_shards // jax.process_count() * s.train.micro_batches
    # ppo_epochs passes, each a fresh shuffle (pass 0 keeps the single-pass seed [seed, iteration, 1])
    plans = [global_batch.plan_minibatches(shape[:, 0], jax.process_index(), int(s.raw.rl.micro_batch_size),
                                           [s.seed, iteration, 1] + ([epoch] if epoch else []), row_multiple)
             for epoch in range(int(s.raw.rl.get("ppo_epochs", 1)))]
    spec = train_step_lib.batch_sharding(self.mesh).spec
    pack_rows = bool(s.raw.rl.get("pack_rows", False))
    history, fill = [], []
    for rows, count in ((r, n) for plan in plans for r, n in zip(plan.local_rows, plan.rows_per_host)):
      mini_batch = global_batch.padded_rows(local, rows, count, self.pad_id)
      if pack_rows:
        mini_batch = self._packed(mini_batch, row_multiple)
      fill.append(float(np.mean(np.asarray(mini_batch.attention_mask) > 0)))
      if jax.process_count() > 1:
        mini_batch = distributed.host_local_to_global(mini_batch, self.mesh, spec)
      self.state, metrics = self.rl_step(self.state, mini_batch)
      history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    out = {f"train/{k}": float(np.mean([h[k] for h in history])) for k in history[0]}
    out["train/updates"] = float(len(history))
    out["train/token_fill"] = float(np.mean(fill))  # this host's share of token (not padding) columns
    out["train/rows"] = float(shape[:, 0].sum())
    return out

  def _packed(self, mini_batch, row_multiple: int):
    """`mini_batch`'s turns packed side by side (`jerp_jax.rl.packing`): every host packs its own rows
    into the largest shape any host needs, its row count bucketed (few train-step compilations), with
    the fewest turns per row that fit its own rows (fewer scored columns; `packing.pack_plan`). When
    packing would not save rows (or columns) on some host, every host keeps the unpacked mini-batch (its
    shape is compiled already)."""
    seq_len = max(mini_batch.seq_len, int(self.settings.raw.rl.get("pack_length", 0)))
    rows, segments = packing.pack_plan(mini_batch, seq_len, row_multiple)
    shapes = distributed.allgather_ints([rows, segments])
    rows = int(shapes[:, 0].max())
    if rows * seq_len >= mini_batch.batch_size * mini_batch.seq_len:
      return mini_batch
    return packing.pack_rows(mini_batch, seq_len=seq_len, row_multiple=row_multiple, min_rows=rows,
                             min_segments=int(shapes[:, 1].max()), pad_id=self.pad_id,
                             segments_per_row=segments)

  def _rule_update(self, episodes, iteration: int) -> dict[str, float]:
    """Reflection over every host's episodes. With several processes, process 0 owns the pool: it applies
    the ops and broadcasts the serialized pool with the next version number, which every host checks."""
    metrics, payload = {}, None
    self._sync_pool_counters()
    if self.is_primary:
      report = reflection_lib.update_rules(self.pool, self.reflector, episodes, step=iteration,
                                           trigger=self.settings.raw.rules.trigger)
      metrics = report.metrics()
      metrics.update({f"rules/reflector_{k}": float(v) for k, v in self.reflector.counters.items()})
      self._write_rules()
      if jax.process_count() > 1:
        payload = json.dumps({"version": self.pool_version + 1, "metrics": metrics,
                              "pool": self.pool.state_dict()}, sort_keys=True).encode()
    if jax.process_count() > 1:
      message = json.loads(distributed.broadcast_bytes(payload))
      if message["version"] != self.pool_version + 1:
        raise RuntimeError(f"rule pool update version {message['version']} on process "
                           f"{jax.process_index()}, expected {self.pool_version + 1}")
      if not self.is_primary:
        self.pool = type(self.pool).from_state_dict(message["pool"], embedder=self.pool.embedder)
        metrics = message["metrics"]
      self.pool_digest = zlib.crc32(json.dumps(message["pool"], sort_keys=True).encode())
      self._synced_counters = dict(self.pool.counters)
    self.pool_version += 1
    return metrics

  def _sync_pool_counters(self) -> None:
    """Adds every host's pool counter increments since the last sync (retrievals happen on every host)
    to every host's pool, so the counters equal a single-process run's."""
    if jax.process_count() == 1:
      return
    base = self._synced_counters
    delta = {k: v - base.get(k, 0) for k, v in self.pool.counters.items() if v != base.get(k, 0)}
    total = dict(base)
    for host_delta in distributed.allgather_objects(delta):
      for key, value in host_delta.items():
        total[key] = total.get(key, 0) + value
    self.pool.counters.clear()
    self.pool.counters.update(total)
    self._synced_counters = dict(total)

  def train_iteration(self) -> dict[str, float]:
    """One iteration: rollouts, then the policy update and/or the rule update the mode asks for."""
    s, it = self.settings, self.iteration
    tick = time.perf_counter()
    self._check_pool_version()
    groups = self._train_groups(it)
    result = self._run_policy(self.train_envs, groups, s.rollout, s.sampling, self._iteration_key(it, 1),
                              first_group=self.task_share.start)
    episodes, rollout_metrics = result.episodes, result.metrics
    if jax.process_count() > 1:  # every host's episodes, in global group order
      gathered = distributed.allgather_objects((result.episodes, result.metrics))
      episodes = [ep for host_episodes, _ in gathered for ep in host_episodes]
      rollout_metrics = _merge_rollout_metrics(episodes, [m for _, m in gathered])
    metrics = {f"rollout/{k}": v for k, v in rollout_metrics.items()}
    if s.trains_policy(it):
      metrics.update(self._policy_update(result, it))
    if s.updates_rules(it):
      metrics.update(self._rule_update(episodes, it))
    metrics["rules/count"] = float(len(self.pool))
    metrics["iteration_s"] = time.perf_counter() - tick
    self.iteration += 1
    self.metrics.write(self.iteration, "train", metrics)
    return metrics

  # ----------------------------------------------------------------------------- evaluation
  def evaluate(self) -> list[evaluation.EvalResult]:
    """Every eval split, with rules (when the mode uses them) and without."""
    s = self.settings
    self._check_pool_version()
    results = []
    for split in self.eval_envs:
      for with_rules in ((True, False) if s.uses_rules else (False,)):
        episodes = self.play_eval_games(split, with_rules)
        results.append(evaluation.summarize(split, with_rules, episodes))
        self._write_outcomes(split, with_rules, episodes)
    self._sync_pool_counters()
    metrics = {k: v for r in results for k, v in r.metrics().items()}
    for split, gap in evaluation.absorption_gap(results).items():
      metrics[f"{split}/absorption_gap"] = gap
    metrics["rules/count"] = float(len(self.pool))
    self.metrics.write(self.iteration, "eval", metrics)
    self.eval_history.append({"iteration": self.iteration, "results": [dataclasses.asdict(r) for r in results],
                              "rule_count": len(self.pool)})
    return results

  def _write_outcomes(self, split: str, with_rules: bool, episodes: list) -> None:
    """RUN_DIR/eval/SPLIT_{rules,norules}_iterNNNN.json: which games this evaluation won, in the format of
    `experiments/invalid_actions.py` (so `experiments/paired_outcomes.py` compares it game by game with a
    same-key control without replaying the games)."""
    if not self.is_primary:
      return
    tag = "rules" if with_rules else "norules"
    path = os.path.join(self.run_dir, "eval", f"{split}_{tag}_iter{self.iteration:04d}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_io.atomic_write_json(path, evaluation.outcome_record(
        episodes, run_dir=self.run_dir, warm_start=False, split=split, with_rules=with_rules,
        seed=int(self.settings.raw.seed), key_iteration=self.iteration), indent=1)

  def play_eval_games(self, split: str, with_rules: bool, key_iteration: Optional[int] = None) -> list:
    """Games 0..eval.num_games-1 of `split`, one episode each (greedy, or sampled with the training
    strategy when eval.greedy is False, keyed by (seed, key_iteration), default the current iteration);
    each host plays its block of games (`self.eval_games`) and the episodes are gathered, so every host
    gets the same list of `Episode`s."""
    envs = self.eval_envs[split]
    config = dataclasses.replace(self.settings.rollout, group_size=1)
    groups = []
    for i, game in enumerate(self.eval_games):
      rules, ids = (), ()
      if with_rules:
        _, info = envs[i].reset(seed=int(game))
        rules, ids = self._rules_for(info)
      groups.append(rollout_lib.GroupSpec(seed=int(game), rules=rules, rule_ids=ids))
    episodes = []
    if groups:
      sampling = Greedy() if bool(self.settings.raw.eval.greedy) else self.settings.sampling
      iteration = self.iteration if key_iteration is None else key_iteration
      episodes = self._run_policy(envs[:len(groups)], groups, config, sampling,
                                  self._iteration_key(iteration, 2),
                                  first_group=int(self.eval_games[0])).episodes
    if jax.process_count() > 1:
      episodes = [ep for host in distributed.allgather_objects(episodes) for ep in host]
    return episodes

  # ------------------------------------------------------------------------------------ run
  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    logging.warning("SIGTERM: checkpointing at the end of the current iteration, then exiting")
    self._stop_requested = True

  def run(self) -> Optional[list[evaluation.EvalResult]]:
    """Warm start (once), the training iterations, the final evaluation; returns its results, or None
    when stopped early by SIGTERM (after writing a checkpoint)."""
    s = self.settings
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      if s.warm_start_games and not self.warm_started:
        self.warm_start()
        self.save_checkpoint()
        if self._should_stop():
          return None
      interval = int(s.raw.eval.interval)
      bar = tqdm(total=s.iterations, initial=self.iteration, desc=f"{s.mode}", disable=not self.is_primary)
      while self.iteration < s.iterations:
        at_start_skipped = self.iteration == 0 and not bool(s.raw.eval.get("at_start", True))
        if (interval and self.iteration % interval == 0 and not at_start_skipped
            and not self._evaluated_at(self.iteration)):
          self.evaluate()
          self.save_checkpoint()
        metrics = self.train_iteration()
        bar.update(1)
        bar.set_postfix(success=f"{metrics['rollout/success']:.2f}", rules=int(metrics["rules/count"]))
        ckpt_every = int(s.raw.checkpoint.interval)
        if self._should_stop() or (ckpt_every and self.iteration % ckpt_every == 0):
          self.save_checkpoint()
        if self._stop_requested:
          bar.close()
          return None
      bar.close()
      if not self._evaluated_at(self.iteration):
        self.evaluate()
        self.save_checkpoint()
      final = [evaluation.EvalResult(**r) for r in self.eval_history[-1]["results"]]
      if self.is_primary:
        atomic_io.atomic_write_json(
            os.path.join(self.run_dir, "results.json"),
            {"final": [dataclasses.asdict(r) for r in final], "history": self.eval_history,
             "rule_count": len(self.pool)}, indent=1)
      return final
    finally:
      signal.signal(signal.SIGTERM, previous)
      self.checkpoints.wait()

  def _should_stop(self) -> bool:
    """Whether a SIGTERM arrived (on any host: every host stops after the same iteration)."""
    if jax.process_count() > 1:
      self._stop_requested = distributed.any_process(self._stop_requested)
    return self._stop_requested

  def _evaluated_at(self, iteration: int) -> bool:
    return bool(self.eval_history) and self.eval_history[-1]["iteration"] == iteration

  def close(self) -> None:
    self.metrics.close()
    self.checkpoints.close()


def _restore_any(source: checkpointing.TrainCheckpointer, templates: list[Any], step: int) -> Any:
  """Restores `step` into the first template whose structure matches it (the last error otherwise)."""
  for i, template in enumerate(templates):
    try:
      return source.restore(template, step=step)
    except ValueError as e:
      if i == len(templates) - 1 or "does not match the template's structure" not in str(e):
        raise
  raise ValueError("no template given")


def _merge_rollout_metrics(episodes, per_host: list[dict[str, float]]) -> dict[str, float]:
  """Rollout metrics of all hosts' episodes; throughput = all hosts' tokens / the slowest host's time."""
  total = lambda key: sum(m.get(key, 0.0) for m in per_host)
  slowest = lambda key: max(m.get(key, 0.0) for m in per_host)
  counts = {"response_tokens": total("response_tokens"), "prompt_tokens": total("prompt_tokens"),
            "truncated_prompts": total("truncated_prompts"),
            "env_steps": sum(round(m.get("env_steps_per_s", 0.0) * m.get("env_s", 0.0)) for m in per_host),
            "generate_s": slowest("generate_s"), "env_s": slowest("env_s"), "wall_s": slowest("wall_s")}
  return rollout_lib.rollout_metrics(episodes, counts)


def run(config: ml_collections.ConfigDict) -> tuple[Optional[list[evaluation.EvalResult]], Trainer]:
  """Builds a Trainer, runs it and closes it."""
  trainer = Trainer(config)
  try:
    return trainer.run(), trainer
  finally:
    trainer.close()
