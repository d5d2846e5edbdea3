"""The game sets: train / valid_seen / valid_unseen, deterministic by (split, index).

Task types follow the real ALFWorld split composition (ALFWorld paper, Table 1):
train 790 pick, 650 clean, 459 heat, 533 cool, 308 look, 813 pick-two (3553 games); valid_seen 35 / 27 /
16 / 25 / 13 / 24 (140); valid_unseen 24 / 31 / 23 / 21 / 18 / 17 (134). Game `index` of a split gets the
task type at that position of a fixed shuffle of the split's list; other sizes scale the counts.

train and valid_seen draw from ALFRED's train floor plans with different seed streams; valid_unseen
from the held-out floor plans only. Like ALFWorld, which ships only games marked solvable, a candidate
that the observation-only expert cannot win within the step limit is rejected and the next candidate
is drawn; a candidate whose scene supports no task of the type (e.g. no class with two instances for
pick-two) is "infeasible" and redrawn too. Both are counted per room type and task type.
"""
import collections
import dataclasses
import random

from jerp_jax.envs.alfworld import expert as expert_lib
from jerp_jax.envs.alfworld import floorplans
from jerp_jax.envs.alfworld import generator
from jerp_jax.envs.alfworld import scene as scene_lib
from jerp_jax.envs.alfworld import world as world_lib

_TYPE_ORDER = ("pick_and_place_simple", "pick_clean_then_place_in_recep", "pick_heat_then_place_in_recep",
               "pick_cool_then_place_in_recep", "look_at_obj_in_light", "pick_two_obj_and_place")
SPLIT_TASK_COUNTS = {
    "train": dict(zip(_TYPE_ORDER, (790, 650, 459, 533, 308, 813))),
    "valid_seen": dict(zip(_TYPE_ORDER, (35, 27, 16, 25, 13, 24))),
    "valid_unseen": dict(zip(_TYPE_ORDER, (24, 31, 23, 21, 18, 17))),
}
SPLITS = tuple(SPLIT_TASK_COUNTS)
DEFAULT_SIZES = {split: sum(counts.values()) for split, counts in SPLIT_TASK_COUNTS.items()}
MAX_CANDIDATES = 200


@dataclasses.dataclass(frozen=True)
class Game:
  """One shipped game and how many candidates were drawn before it."""
  split: str  # the split ("train"), or "split:task_type" for a one-type set
  index: int
  scene: scene_lib.Scene
  task: scene_lib.Task
  rejected_rooms: tuple[str, ...]  # room type of each candidate the observation-only expert could not win
  infeasible: int  # candidates whose scene supported no task of the type

  @property
  def rejected(self) -> int:
    return len(self.rejected_rooms)

  @property
  def task_id(self) -> str:
    return f"{self.split}/{self.index}"


def expert_wins(scene: scene_lib.Scene, task: scene_lib.Task, max_steps: int = world_lib.MAX_STEPS) -> int:
  """Steps the observation-only expert needs to win, or 0 if it does not win within `max_steps`."""
  world = world_lib.World(scene, task, max_steps)
  expert = expert_lib.ObservationExpert(world.intro)
  while not world.done:
    command = expert.act(world.admissible_commands())
    feedback, _, _ = world.step(command)
    expert.observe(command, feedback)
  return world.steps if world.won else 0


def _task_type_schedule(split: str, size: int) -> list[str]:
  counts = SPLIT_TASK_COUNTS[split]
  total = sum(counts.values())
  exact = {t: c * size / total for t, c in counts.items()}
  scaled = {t: int(v) for t, v in exact.items()}
  by_remainder = sorted(counts, key=lambda t: (scaled[t] - exact[t], _TYPE_ORDER.index(t)))
  for t in by_remainder[:size - sum(scaled.values())]:
    scaled[t] += 1
  schedule = [t for t in _TYPE_ORDER for _ in range(scaled[t])]
  random.Random(f"{split}/task types/{size}").shuffle(schedule)
  return schedule


class GameSet:
  """Games of one split; `game(index)` is deterministic and cached."""

  def __init__(self, split: str, size: int | None = None, max_steps: int = world_lib.MAX_STEPS,
               task_type: str | None = None):
    if split not in SPLIT_TASK_COUNTS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if task_type is not None and task_type not in scene_lib.TASK_TYPES:
      raise ValueError(f"unknown task type {task_type!r}; expected one of {scene_lib.TASK_TYPES}")
    self.split = split
    self.only_task_type = task_type
    if size is None:
      size = DEFAULT_SIZES[split] if task_type is None else SPLIT_TASK_COUNTS[split][task_type]
    self.size = int(size)
    if self.size <= 0:
      raise ValueError(f"split size must be positive, got {size}")
    self.max_steps = max_steps
    if task_type is None:
      self._schedule = _task_type_schedule(split, self.size)
      self.name = split
    else:  # A set of one task type only (per-type evaluation); its own games and ids.
      self._schedule = [task_type] * self.size
      self.name = f"{split}:{task_type}"
    plans = floorplans.unseen_floor_plans() if split == "valid_unseen" else floorplans.train_floor_plans()
    self.floor_plans = plans
    self._eligible = {t: [p for p in plans if generator.plan_supports(floorplans.load_floor_plan(p), t)]
                      for t in scene_lib.TASK_TYPES}
    self._cache: dict[int, Game] = {}

  def __len__(self) -> int:
    return self.size

  def _check_index(self, index: int) -> None:
    if not 0 <= index < self.size:
      raise IndexError(f"game index {index} out of range for split {self.split!r} of size {self.size}")

  def task_type(self, index: int) -> str:
    self._check_index(index)
    return self._schedule[index]

  def game(self, index: int) -> Game:
    self._check_index(index)
    if index not in self._cache:
      self._cache[index] = self._draw(index)
    return self._cache[index]

  def _draw(self, index: int) -> Game:
    task_type = self._schedule[index]
    rejected, infeasible = [], 0
    for candidate in range(MAX_CANDIDATES):
      rng = random.Random(f"{self.name}/{index}/{task_type}/{candidate}")
      plan = floorplans.load_floor_plan(rng.choice(self._eligible[task_type]))
      scene = generator.sample_scene(plan, rng)
      task = generator.sample_task(scene, task_type, rng)
      if task is None:
        infeasible += 1
      elif not expert_wins(scene, task, self.max_steps):
        rejected.append(plan.room_type)
      else:
        return Game(self.name, index, scene, task, tuple(rejected), infeasible)
    raise RuntimeError(f"no solvable {task_type} game for {self.split}/{index} in {MAX_CANDIDATES} candidates")


def rejection_stats(games: list[Game]) -> dict[str, dict[str, float]]:
  """Rejected share of candidates (expert could not win) per room type and per task type."""
  drawn = collections.Counter()
  rejected = collections.Counter()
  for game in games:
    for room_type in (game.scene.room_type,) + game.rejected_rooms:
      drawn[room_type] += 1
    for room_type in game.rejected_rooms:
      rejected[room_type] += 1
    for key in (game.task.task_type, "all"):
      drawn[key] += 1 + game.rejected
      rejected[key] += game.rejected
  return {key: {"candidates": drawn[key], "rejected": rejected[key], "share": rejected[key] / drawn[key]}
          for key in drawn}
