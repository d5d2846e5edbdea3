"""Lockstep group rollouts: B tasks x N episodes, one batched sampler call per turn.

Each turn every live episode gets a prompt (task, its group's rules, the last H steps, the admissible
actions: `jerp_jax.agent.prompt`), all prompts go through ONE `Sampler.generate` call (stop string
"</action>", behaviour log-probs of the raw logits), the responses are parsed (`jerp_jax.agent.parse`) and
the environments stepped. Episodes that end leave the batch, so they cost no more decode work. The env
side is plain host Python; the rule working set of each group comes in as data, so this module never
imports `jerp_jax.rules`.

Outputs: the `Episode` records (shared with the rule learner and metrics), one `TurnRecord` per agent
turn (prompt / response token ids and behaviour log-probs) and a metrics dict; `rollout_train_batch`
turns them plus per-step advantages into the learner's `TrainBatch`.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from jerp_jax.agent import Episode, Step
from jerp_jax.agent import parse as agent_parse
from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.rl.batch import TrainBatch, build_train_batch
from jerp_jax.sampling import Greedy, SamplingConfig, Sampler
from jerp_jax.sampling.buckets import power_of_two


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Rollout settings.

  group_size: N episodes per task (same task and seed).
  max_turns: agent turns per episode at most (the env may end it earlier: won or its own step limit).
  max_new_tokens: response length limit per turn.
  max_prompt_tokens: longer prompts keep their last max_prompt_tokens tokens (counted in the metrics).
  stop_strings: end a response at these strings (kept in the response).
  require_think: the parser's think-tag requirement (verl-agent: True).
  prompt: how prompts are built (env wording, history length H, chat template).
  """
  group_size: int = 8
  max_turns: int = 50
  max_new_tokens: int = 256
  max_prompt_tokens: int = 4096
  stop_strings: tuple[str, ...] = (agent_prompt.ACTION_CLOSE,)
  require_think: bool = True
  prompt: agent_prompt.PromptConfig = agent_prompt.PromptConfig()

  def __post_init__(self):
    for name in ("group_size", "max_turns", "max_new_tokens", "max_prompt_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class GroupSpec:
  """One task of the rollout batch: how its N envs are reset and which rules its prompts show.

  seed / options: passed to `env.reset(seed=..., options=...)` for every episode of the group.
  rules / rule_ids: the group's fixed rule working set (texts, and ids recorded on the episodes).
  """
  seed: int
  options: Optional[dict[str, Any]] = None
  rules: tuple[str, ...] = ()
  rule_ids: tuple[str, ...] = ()


@dataclasses.dataclass
class TurnRecord:
  """Token data of one agent turn.

  episode: index into `RolloutResult.episodes`; step: the turn's index in that episode.
  prompt_ids: prompt tokens; response_ids: sampled tokens (stop string / stop token included).
  logprobs: behaviour log-prob of each response token (raw logits, temperature 1), len(response_ids).
  """
  episode: int
  step: int
  prompt_ids: list[int]
  response_ids: list[int]
  logprobs: list[float]


@dataclasses.dataclass
class RolloutResult:
  """episodes: B x N records, group-major (episode g * N + i is episode i of group g).
  turns: every agent turn, in the order they were decoded. metrics: see `rollout_metrics`."""
  episodes: list[Episode]
  turns: list[TurnRecord]
  metrics: dict[str, float]


@dataclasses.dataclass
class _Live:
  """Host state of one running episode."""
  env: Any
  observation: str
  info: dict[str, Any]
  steps: list[Step]
  done: bool = False


def _episode_record(live: _Live, group: GroupSpec, group_index: int, episode_index: int,
                    initial_info: dict[str, Any]) -> Episode:
  reward = float(sum(s.reward for s in live.steps))
  won = bool(live.info.get("won", False))
  return Episode(task_id=str(initial_info.get("task_id", f"group/{group_index}")),
                 task_type=str(initial_info.get("task_type", "")), goal=str(initial_info.get("goal", "")),
                 steps=live.steps, reward=reward, won=won, rule_ids=list(group.rule_ids),
                 group_index=group_index, episode_index=episode_index)


def collect_rollouts(sampler: Sampler, state: Any, tokenizer: Any, envs: Sequence[Any],
                     groups: Sequence[GroupSpec], config: RolloutConfig, *, rng: Optional[jax.Array] = None,
                     sampling: SamplingConfig = Greedy(), stop_token_ids: Optional[Sequence[int]] = None,
                     use_lora: bool = True, episode_ids: Optional[Sequence[int]] = None) -> RolloutResult:
  """Runs B = len(groups) tasks x N = config.group_size episodes in lockstep.

  Args:
    sampler / state / tokenizer: the policy (state = the model's nnx State, passed to the jitted loop).
    envs: B * N gymnasium envs, group-major; all N envs of a group are reset with the group's seed and
      options. They return info with "admissible_commands", "goal", "task_type", "task_id", "won".
    groups: one GroupSpec per task.
    rng: PRNG key; episode e samples turn t with fold_in(fold_in(rng, t), episode_ids[e]), so its
      samples do not depend on which other episodes share the batch (or the host, in multi-host runs).
    stop_token_ids: default the tokenizer's EOS.
    episode_ids: one id per env (default 0 .. B * N - 1); hosts sharing one iteration pass global ids.
  """
  num_groups, group_size = len(groups), config.group_size
  if len(envs) != num_groups * group_size:
    raise ValueError(f"collect_rollouts needs {num_groups} groups x {group_size} = "
                     f"{num_groups * group_size} envs, got {len(envs)}")
  if stop_token_ids is None:
    eos = getattr(tokenizer, "eos_token_id", None)
    stop_token_ids = [] if eos is None else [int(eos)]
  if rng is None:
    rng = jax.random.key(0)
  episode_ids = np.arange(len(envs)) if episode_ids is None else np.asarray(episode_ids)
  if episode_ids.shape != (len(envs),):
    raise ValueError(f"episode_ids has shape {episode_ids.shape}, expected ({len(envs)},)")
  env_time = gen_time = 0.0
  start = time.perf_counter()
  lives: list[_Live] = []
  initial_infos: list[dict[str, Any]] = []
  for e, env in enumerate(envs):
    group = groups[e // group_size]
    tick = time.perf_counter()
    observation, info = env.reset(seed=group.seed, options=group.options)
    env_time += time.perf_counter() - tick
    lives.append(_Live(env=env, observation=observation, info=dict(info), steps=[]))
    initial_infos.append(dict(info))
  turns: list[TurnRecord] = []
  counts = collections.Counter()
  for turn in range(config.max_turns):
    live_rows = [e for e, live in enumerate(lives) if not live.done]
    if not live_rows:
      break
    prompts = []
    for e in live_rows:
      live, group = lives[e], groups[e // group_size]
      text = agent_prompt.build_prompt(
          config.prompt, task=initial_infos[e].get("goal", ""), observation=live.observation,
          admissible=live.info.get("admissible_commands", []),
          history=[(s.observation, s.action) for s in live.steps], rules=group.rules, tokenizer=tokenizer)
      ids = tokenizer.encode(text, add_special_tokens=False)
      if len(ids) > config.max_prompt_tokens:
        counts["truncated_prompts"] += 1
        ids = ids[-config.max_prompt_tokens:]
      prompts.append(ids)
    tick = time.perf_counter()
    turn_key = jax.random.fold_in(rng, turn)
    row_keys = jax.vmap(lambda i: jax.random.fold_in(turn_key, i))(
        np.asarray(episode_ids[live_rows], np.uint32))
    out = sampler.generate(state, prompts, max_new_tokens=config.max_new_tokens, sampling=sampling,
                           rng=row_keys, stop_token_ids=stop_token_ids,
                           stop_strings=config.stop_strings, tokenizer=tokenizer, use_lora=use_lora)
    gen_time += time.perf_counter() - tick
    counts["decode_steps"] += out.num_steps
    counts["prompt_tokens"] += sum(len(p) for p in prompts)
    for row, e in enumerate(live_rows):
      live = lives[e]
      response = out.texts[row]
      admissible = list(live.info.get("admissible_commands", []))
      parsed = agent_parse.parse_action(response, admissible, require_think=config.require_think)
      tick = time.perf_counter()
      observation, reward, terminated, truncated, info = live.env.step(parsed.command)
      env_time += time.perf_counter() - tick
      counts["env_steps"] += 1
      counts["response_tokens"] += len(out.tokens[row])
      live.steps.append(Step(observation=live.observation, admissible=admissible, response=response,
                             action=parsed.command, valid=parsed.valid, reward=float(reward),
                             well_formed=parsed.well_formed))
      turns.append(TurnRecord(episode=e, step=len(live.steps) - 1, prompt_ids=list(prompts[row]),
                              response_ids=list(out.tokens[row]),
                              logprobs=[float(x) for x in out.logprobs[row]]))
      live.observation, live.info = observation, dict(info)
      live.done = bool(terminated or truncated)
  episodes = [_episode_record(live, groups[e // group_size], e // group_size, e % group_size,
                              initial_infos[e]) for e, live in enumerate(lives)]
  counts["wall_s"] = time.perf_counter() - start
  counts["generate_s"], counts["env_s"] = gen_time, env_time
  return RolloutResult(episodes=episodes, turns=turns, metrics=rollout_metrics(episodes, counts))


def rollout_metrics(episodes: Sequence[Episode], counts: dict[str, float]) -> dict[str, float]:
  """Success (overall and per task type), reward, invalid-action and format-error rates, episode length,
  throughput."""
  if not episodes:
    return {}
  metrics = {
      "success": float(np.mean([ep.won for ep in episodes])),
      "reward": float(np.mean([ep.reward for ep in episodes])),
      "episode_length": float(np.mean([ep.length for ep in episodes])),
      "num_episodes": float(len(episodes)),
  }
  steps = [s for ep in episodes for s in ep.steps]
  metrics["invalid_action_rate"] = float(np.mean([not s.valid for s in steps])) if steps else 0.0
  metrics["format_error_rate"] = float(np.mean([not s.well_formed for s in steps])) if steps else 0.0
  by_type = collections.defaultdict(list)
  for ep in episodes:
    by_type[ep.task_type].append(ep.won)
  for task_type, wins in sorted(by_type.items()):
    metrics[f"success/{task_type}"] = float(np.mean(wins))
  gen_s, env_s = counts.get("generate_s", 0.0), counts.get("env_s", 0.0)
  metrics["response_tokens"] = float(counts.get("response_tokens", 0))
  metrics["prompt_tokens"] = float(counts.get("prompt_tokens", 0))
  metrics["tokens_per_s"] = metrics["response_tokens"] / gen_s if gen_s > 0 else 0.0
  metrics["prompt_tokens_per_s"] = metrics["prompt_tokens"] / gen_s if gen_s > 0 else 0.0
  metrics["env_steps_per_s"] = counts.get("env_steps", 0) / env_s if env_s > 0 else 0.0
  metrics["truncated_prompts"] = float(counts.get("truncated_prompts", 0))
  for key in ("wall_s", "generate_s", "env_s"):
    metrics[key] = float(counts.get(key, 0.0))
  return metrics


def bucket_length(n: int, multiple: int = 64) -> int:
  """The padded row length for a longest turn of n tokens: n rounded up to a multiple (fewer compiles)."""
  if multiple < 1:
    raise ValueError(f"bucket multiple must be >= 1, got {multiple}")
  return -(-n // multiple) * multiple


def rollout_train_batch(result: RolloutResult, step_advantages: Sequence[Sequence[float]], *,
                        pad_id: int, seq_multiple: int = 64, seq_len: Optional[int] = None,
                        batch_multiple: int = 1, row_buckets: bool = False,
                        drop_zero_advantage: bool = False) -> TrainBatch:
  """Packs the rollout's turns into the learner's `TrainBatch` (one right-padded row per turn).

  Args:
    result: a `collect_rollouts` result.
    step_advantages: per episode (same order as result.episodes), one advantage per step (e.g.
      `jerp_jax.rl.advantages.episode_step_advantages`); broadcast over that turn's response tokens.
    pad_id: token id written into padding.
    seq_multiple: row length = the longest turn rounded up to this multiple (unless seq_len is given).
    batch_multiple: rows are padded to a multiple of this (micro-batches x data shards).
    row_buckets: pad rows further, to batch_multiple x a power of two (few distinct shapes, so the
      jitted train step compiles a few times per run instead of once per rollout).
    drop_zero_advantage: leave out turns whose advantage is exactly 0 (they carry no policy gradient
      without a KL term).

  Returns:
    TrainBatch [rows, T]: loss_mask is 1 exactly on response tokens, old_logprobs the behaviour log-probs.
  """
  if len(step_advantages) != len(result.episodes):
    raise ValueError(f"step_advantages has {len(step_advantages)} episodes, the rollout "
                     f"{len(result.episodes)}")
  turns = []
  advantages = []
  for turn in result.turns:
    per_step = step_advantages[turn.episode]
    if len(per_step) != result.episodes[turn.episode].length:
      raise ValueError(f"episode {turn.episode} has {result.episodes[turn.episode].length} steps but "
                       f"{len(per_step)} advantages")
    value = float(per_step[turn.step])
    if drop_zero_advantage and value == 0.0:
      continue
    turns.append(turn)
    advantages.append(value)
  if not turns:
    raise ValueError("rollout_train_batch: no turns left to train on")
  longest = max(len(t.prompt_ids) + len(t.response_ids) for t in turns)
  if row_buckets:
    blocks = -(-len(turns) // batch_multiple)
    batch_multiple *= power_of_two(blocks)
  return build_train_batch([t.prompt_ids for t in turns], [t.response_ids for t in turns],
                           [t.logprobs for t in turns], advantages,
                           seq_len=seq_len or bucket_length(longest, seq_multiple), pad_id=pad_id,
                           batch_multiple=batch_multiple)
