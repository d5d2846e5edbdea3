"""GRPO (episode-level) and GiGPO (step-level) advantages, and verl-agent's reward shaping.

The array functions are pure and jittable. Grouping steps by identical observation text (GiGPO's
anchor states) is string work and happens host-side in `anchor_group_ids`; the normalisation inside
those groups is a jitted segment reduction (`segment_normalize`).

Conventions (verl / verl-agent):
- Standard deviations are the unbiased (n - 1) sample std, as `torch.std` computes them.
- A group whose values are all equal (including a group of one) gets advantage 0: it carries no
  relative signal. (verl's episode-level GRPO passes the raw score through for a group of one; we do
  not, see BUILD_NOTES.md section 11.)
- Reward shaping: the env's episode reward (ALFWorld: won in {0, 1}; WebShop: purchase reward in
  [0, 1]) is scaled by 10 and given at the episode's last step; every step whose response lacks the
  <think>/<action> format costs `invalid_penalty` (0.1) at that step (`AdvantageConfig.penalize`
  "format", verl-agent's rule; "inadmissible" also charges well-formed actions that are not admissible).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jerp_jax.agent.episode import Episode

REWARD_SCALE = 10.0  # verl-agent: ALFWorld 10 x won, WebShop 10 x reward.
INVALID_PENALTY = 0.1  # verl-agent: per step whose output lacks the <think>/<action> format.
GIGPO_GAMMA = 0.95
PENALIZE = ("format", "inadmissible")
TURN_WEIGHTINGS = ("uniform", "episode")


@functools.partial(jax.jit, static_argnames=("normalize_std",))
def grpo_advantages(rewards: jax.Array, normalize_std: bool = True, eps: float = 1e-6) -> jax.Array:
  """Episode-level GRPO advantages.

  Args:
    rewards: [num_groups, group_size] episode rewards; a group = N episodes of the same task and seed.
    normalize_std: divide by (unbiased std + eps); False gives the plain (r - mean) (Dr. GRPO style).
    eps: added to the std.

  Returns:
    [num_groups, group_size] float32 advantages; all-equal groups (and groups of one) are 0.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [num_groups, group_size], got shape {rewards.shape}")
  group_size = rewards.shape[1]
  centered = rewards - rewards.mean(axis=1, keepdims=True)
  if normalize_std:
    dof = max(group_size - 1, 1)
    std = jnp.sqrt(jnp.sum(centered**2, axis=1, keepdims=True) / dof)
    centered = centered / (std + eps)
  all_equal = rewards.max(axis=1, keepdims=True) == rewards.min(axis=1, keepdims=True)
  return jnp.where(all_equal, 0.0, centered)


@functools.partial(jax.jit, static_argnames=("num_segments", "normalize_std"))
def segment_normalize(values: jax.Array, segment_ids: jax.Array, valid: jax.Array, *,
                      num_segments: int, normalize_std: bool = True,
                      eps: float = 1e-6) -> jax.Array:
  """Normalises values inside groups given by integer ids: (v - mean_g) [/ (std_g + eps)].

  Args:
    values: [N] values (e.g. discounted step returns).
    segment_ids: [N] int group id of each value, in [0, num_segments).
    valid: [N] bool/0-1; invalid entries join no group and get 0.
    num_segments: number of groups (static).
    normalize_std: divide by the group's unbiased std + eps.
    eps: added to the std.

  Returns:
    [N] float32; entries of all-equal groups (incl. singletons) and invalid entries are 0.
  """
  values = jnp.asarray(values, jnp.float32)
  valid = jnp.asarray(valid, bool)
  weights = valid.astype(jnp.float32)
  ids = jnp.where(valid, segment_ids, num_segments)  # Out-of-range ids are dropped by segment ops.
  count = jax.ops.segment_sum(weights, ids, num_segments + 1)
  mean = jax.ops.segment_sum(values * weights, ids, num_segments + 1) / jnp.maximum(count, 1.0)
  centered = values - mean[ids]
  if normalize_std:
    sq = jax.ops.segment_sum(centered**2 * weights, ids, num_segments + 1)
    std = jnp.sqrt(sq / jnp.maximum(count - 1.0, 1.0))
    centered = centered / (std[ids] + eps)
  big = jnp.float32(jnp.finfo(jnp.float32).max)
  seg_max = jax.ops.segment_max(jnp.where(valid, values, -big), ids, num_segments + 1)
  seg_min = jax.ops.segment_min(jnp.where(valid, values, big), ids, num_segments + 1)
  all_equal = seg_max[ids] == seg_min[ids]
  return jnp.where(valid & ~all_equal, centered, 0.0)


@jax.jit
def discounted_returns(step_rewards: jax.Array, step_mask: jax.Array,
                       gamma: float = GIGPO_GAMMA) -> jax.Array:
  """G_t = r_t + gamma * G_{t+1} along each episode.

  Args:
    step_rewards: [..., S] per-step rewards (steps past the episode end are ignored).
    step_mask: [..., S] 1 on the episode's real steps (a prefix).
    gamma: discount.

  Returns:
    [..., S] float32 returns, 0 on masked steps.
  """
  rewards = jnp.asarray(step_rewards, jnp.float32) * step_mask
  mask = jnp.asarray(step_mask, jnp.float32)

  def body(carry, inputs):
    reward, m = inputs
    ret = reward + gamma * carry * m
    return ret * m, ret * m

  steps_first = (jnp.moveaxis(rewards, -1, 0), jnp.moveaxis(mask, -1, 0))
  _, returns = jax.lax.scan(body, jnp.zeros(rewards.shape[:-1], jnp.float32), steps_first,
                            reverse=True)
  return jnp.moveaxis(returns, 0, -1)


@functools.partial(jax.jit, static_argnames=("num_anchor_groups", "normalize_std"))
def gigpo_advantages(episode_rewards: jax.Array, step_rewards: jax.Array, step_mask: jax.Array,
                     anchor_ids: jax.Array, *, num_anchor_groups: int, gamma: float = GIGPO_GAMMA,
                     step_weight: float = 1.0, normalize_std: bool = True,
                     eps: float = 1e-6) -> jax.Array:
  """GiGPO per-step advantage: episode-level GRPO advantage + step_weight x anchor-group advantage.

  Args:
    episode_rewards: [G, N] (shaped) episode rewards.
    step_rewards: [G, N, S] (shaped) per-step rewards.
    step_mask: [G, N, S] 1 on real steps.
    anchor_ids: [G, N, S] anchor-state group id per step (`anchor_group_ids`), in
      [0, num_anchor_groups); ids never cross task groups.
    num_anchor_groups: number of anchor groups (static).
    gamma: discount for the step returns (0.95).
    step_weight: w in A = A_episode + w * A_step (1.0 in GiGPO).
    normalize_std: std-normalise both levels ("mean_std_norm"); False is "mean_norm".
    eps: added to the stds.

  Returns:
    [G, N, S] float32 advantages, 0 on masked steps.
  """
  episode_adv = grpo_advantages(episode_rewards, normalize_std=normalize_std, eps=eps)
  returns = discounted_returns(step_rewards, step_mask, gamma)
  step_adv = segment_normalize(returns.reshape(-1), jnp.asarray(anchor_ids).reshape(-1),
                               jnp.asarray(step_mask).reshape(-1) > 0,
                               num_segments=num_anchor_groups, normalize_std=normalize_std,
                               eps=eps).reshape(returns.shape)
  mask = jnp.asarray(step_mask, jnp.float32)
  return (episode_adv[..., None] + step_weight * step_adv) * mask


@jax.jit
def shaped_step_rewards(final_rewards: jax.Array, invalid: jax.Array, step_mask: jax.Array,
                        reward_scale: float = REWARD_SCALE,
                        invalid_penalty: float = INVALID_PENALTY) -> jax.Array:
  """verl-agent shaping: reward_scale x final reward at the last step, -penalty per invalid step.

  Args:
    final_rewards: [...] env episode reward (ALFWorld won in {0,1}; WebShop reward in [0,1]).
    invalid: [..., S] True where the response had no valid action.
    step_mask: [..., S] 1 on real steps (a non-empty prefix).
    reward_scale: 10 for both ALFWorld and WebShop.
    invalid_penalty: 0.1.

  Returns:
    [..., S] float32 per-step rewards (0 on masked steps).
  """
  mask = jnp.asarray(step_mask, jnp.float32)
  num_steps = mask.sum(-1).astype(jnp.int32)
  last = jnp.arange(mask.shape[-1]) == (num_steps[..., None] - 1)
  final = reward_scale * jnp.asarray(final_rewards, jnp.float32)[..., None] * last
  return (final - invalid_penalty * jnp.asarray(invalid, jnp.float32)) * mask


def anchor_group_ids(observations: Sequence[Sequence[str]],
                     task_group: Sequence[int]) -> tuple[np.ndarray, int]:
  """Host-side GiGPO anchor states: ids for identical observation texts within one task group.

  Args:
    observations: per episode, the observation text at each step.
    task_group: per episode, its task-group index (the episodes of one GRPO group share it).

  Returns:
    (ids [E, S_max] int32 with -1 past each episode's end, number of anchor groups). Ids are dense,
    assigned in order of first appearance.
  """
  if len(observations) != len(task_group):
    raise ValueError(f"{len(observations)} episodes but {len(task_group)} task_group entries")
  max_steps = max((len(obs) for obs in observations), default=0)
  ids = np.full((len(observations), max_steps), -1, np.int32)
  table: dict[tuple[int, str], int] = {}
  for e, (obs_list, group) in enumerate(zip(observations, task_group)):
    for s, obs in enumerate(obs_list):
      ids[e, s] = table.setdefault((int(group), obs), len(table))
  return ids, len(table)


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
  """How per-step advantages are computed from finished episodes.

  estimator: "grpo" (episode advantage on every step) or "gigpo" (plus w x anchor-state advantage).
  normalize_std: divide by the group std (GRPO default True; verl-agent GiGPO "mean_norm" is False).
  penalize: which steps cost invalid_penalty: "format" (the response lacks the <think>/<action> format,
    as verl-agent) or "inadmissible" (also a well-formed action that is not an admissible command).
  turn_weighting: "uniform" (every turn is one row of the loss, as verl-agent: an episode of 30 turns
    weighs 3x one of 10) or "episode" (each step's advantage times mean_length / episode_length, the
    mean over the batch's episodes: every episode carries the same total weight and the batch the same
    total as "uniform"; under token-mean aggregation with equal response lengths this equals averaging
    each episode's turn losses before the batch mean, since the PPO surrogate is linear in A and its
    clipping depends only on A's sign).
  step_penalty: subtracted from the advantage of each penalised step (the steps `penalize` names), after
    turn weighting: immediate credit to the step that erred, where the episode-level advantage spreads
    the return's invalid penalty over every turn of the episode (and over nothing when a group's returns
    tie). 0 (the default) = off, as verl-agent.
  negative_weight: multiplies every negative group-relative advantage (after the turn weighting,
    before `credit_inadmissible` and the step penalty): 1 (the default) = GRPO as verl; 0 keeps only the
    push-up side of the loss (the group's above-mean episodes, i.e. rejection-sampling fine-tuning on the
    policy's own wins weighted by their advantage, as RAFT); in between, the push-down side scaled down.
  credit_inadmissible: True (the default, as verl-agent) lets a step whose action was not an admissible
    command share its episode's positive advantage; False clips it to <= 0, so a won episode's wasted
    "Nothing happens." steps are not reinforced along with the steps that won it.
  blame_inadmissible: True (the default, as verl-agent) lets an inadmissible step share its episode's
    negative advantage; False clips it to >= 0. With `credit_inadmissible=False` as well, inadmissible
    steps carry no advantage at all (and drop out of the batch when KL is off): a failed "take apple 3"
    where apple 3 is absent is then not pushed down either, so the push-down cannot spread to the
    admissible takes that share its tokens (the tiny policy's take attempts fell by half under the
    push-down, BUILD_NOTES 2.11). Measured there: with both off the lost episodes' admissible steps are
    still pushed down while their inadmissible ones are not, so the inadmissible-action rate climbs
    (62 -> 81% on held-out games in 4 iterations). The step penalty still applies afterwards.
  """
  estimator: str = "grpo"
  normalize_std: bool = True
  eps: float = 1e-6
  gamma: float = GIGPO_GAMMA
  step_weight: float = 1.0
  reward_scale: float = REWARD_SCALE
  invalid_penalty: float = INVALID_PENALTY
  penalize: str = "format"
  turn_weighting: str = "uniform"
  step_penalty: float = 0.0
  negative_weight: float = 1.0
  credit_inadmissible: bool = True
  blame_inadmissible: bool = True

  def __post_init__(self):
    if self.estimator not in ("grpo", "gigpo"):
      raise ValueError(f"AdvantageConfig.estimator must be 'grpo' or 'gigpo', got "
                       f"{self.estimator!r}")
    if self.penalize not in PENALIZE:
      raise ValueError(f"AdvantageConfig.penalize must be one of {PENALIZE}, got {self.penalize!r}")
    if self.turn_weighting not in TURN_WEIGHTINGS:
      raise ValueError(f"AdvantageConfig.turn_weighting must be one of {TURN_WEIGHTINGS}, got "
                       f"{self.turn_weighting!r}")
    if not self.step_penalty >= 0:
      raise ValueError(f"AdvantageConfig.step_penalty must be >= 0, got {self.step_penalty!r}")
    if not 0.0 <= self.negative_weight <= 1.0:
      raise ValueError(f"AdvantageConfig.negative_weight must be in [0, 1], got {self.negative_weight!r}")


def episode_step_advantages(episodes: Sequence[Episode], group_size: int,
                            cfg: AdvantageConfig = AdvantageConfig()) -> list[list[float]]:
  """Per-step advantages for finished episodes (host glue around the jitted functions).

  Episodes are grouped by `group_index` (each group must hold exactly `group_size` episodes and
  each episode at least one step). The episode reward used for GRPO is the shaped return
  sum(shaped_step_rewards) = reward_scale x reward - invalid_penalty x #penalised steps (see
  `AdvantageConfig.penalize`); `cfg.turn_weighting` "episode" then rescales each episode's steps, and
  negative advantages are scaled by `cfg.negative_weight`, inadmissible steps lose positive credit unless
  `cfg.credit_inadmissible`, lose negative blame unless `cfg.blame_inadmissible`, and `cfg.step_penalty` is subtracted from each penalised step.

  Returns:
    per episode (input order), one advantage per step; broadcast it over that turn's response
    tokens when building the `TrainBatch`.
  """
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}")
  groups: dict[int, list[int]] = {}
  for i, ep in enumerate(episodes):
    if not ep.steps:
      raise ValueError(f"episode {i} ({ep.task_id}) has no steps")
    groups.setdefault(ep.group_index, []).append(i)
  for g, members in groups.items():
    if len(members) != group_size:
      raise ValueError(f"group {g} has {len(members)} episodes, expected group_size={group_size}")
  order = [i for g in sorted(groups) for i in groups[g]]
  num_groups = len(groups)
  max_steps = max(len(episodes[i].steps) for i in order)
  step_mask = np.zeros((len(order), max_steps), np.float32)
  invalid = np.zeros((len(order), max_steps), bool)
  inadmissible = np.zeros((len(order), max_steps), bool)
  for row, i in enumerate(order):
    steps = episodes[i].steps
    step_mask[row, :len(steps)] = 1.0
    invalid[row, :len(steps)] = [not (s.well_formed if cfg.penalize == "format" else s.valid)
                                 for s in steps]
    inadmissible[row, :len(steps)] = [not s.valid for s in steps]
  final = np.array([episodes[i].reward for i in order], np.float32)
  step_rewards = shaped_step_rewards(final, invalid, step_mask, cfg.reward_scale,
                                     cfg.invalid_penalty)
  episode_rewards = step_rewards.sum(-1).reshape(num_groups, group_size)
  shape3 = (num_groups, group_size, max_steps)
  if cfg.estimator == "grpo":
    adv = grpo_advantages(episode_rewards, normalize_std=cfg.normalize_std, eps=cfg.eps)
    per_step = np.asarray(adv.reshape(-1)[:, None] * step_mask)
  else:
    ids, num_anchor = anchor_group_ids(
        [[s.observation for s in episodes[i].steps] for i in order],
        [episodes[i].group_index for i in order])
    ids = np.pad(ids, ((0, 0), (0, max_steps - ids.shape[1])), constant_values=-1)
    per_step = np.asarray(gigpo_advantages(
        episode_rewards, step_rewards.reshape(shape3), step_mask.reshape(shape3),
        np.maximum(ids, 0).reshape(shape3), num_anchor_groups=max(num_anchor, 1),
        gamma=cfg.gamma, step_weight=cfg.step_weight, normalize_std=cfg.normalize_std,
        eps=cfg.eps)).reshape(len(order), max_steps)
  if cfg.turn_weighting == "episode":
    lengths = step_mask.sum(-1, keepdims=True)
    per_step = per_step * (lengths.mean() / lengths)
  per_step = np.where(per_step < 0, cfg.negative_weight * per_step, per_step)
  if not cfg.credit_inadmissible:
    per_step = np.where(inadmissible, np.minimum(per_step, 0.0), per_step)
  if not cfg.blame_inadmissible:
    per_step = np.where(inadmissible, np.maximum(per_step, 0.0), per_step)
  per_step = per_step - cfg.step_penalty * invalid
  result: list[list[float]] = [[] for _ in episodes]
  for row, i in enumerate(order):
    result[i] = per_step[row, :len(episodes[i].steps)].tolist()
  return result
