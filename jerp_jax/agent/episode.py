"""Host-side record of one finished episode: the common currency of rollouts, rules and metrics.

`rl.rollout` produces these (next to the token-level batch it trains on); `rules.reflection`,
`rules.miner` and the training loop read them. Plain Python, no arrays, so it serialises to JSON.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Step:
  """One agent turn.

  observation: the env text the agent saw before acting (for turn 0: the intro text).
  admissible: admissible commands at that point.
  response: the raw model output (e.g. "<think>..</think><action>..</action>"); "" for scripted agents.
  action: the command sent to the environment (the parsed action, or the invalid marker).
  valid: whether the response parsed to an admissible action.
  reward: env reward for this step.
  well_formed: whether the response had the <think>/<action> format (`ParsedAction.well_formed`); a
    valid step is always well formed. Defaults to True so records saved before the field load.
  """
  observation: str
  admissible: list[str]
  response: str
  action: str
  valid: bool
  reward: float = 0.0
  well_formed: bool = True


@dataclasses.dataclass
class Episode:
  """One finished (or truncated) episode of one task.

  task_id: stable id of the task instance, e.g. "alfworld/train/17" (same for the whole group).
  task_type: e.g. "pick_clean_then_place_in_recep" or "webshop".
  goal: the task text ("put a clean lettuce in diningtable.").
  steps: the turns, in order.
  reward: final episode reward in [0, 1] (ALFWorld: won; WebShop: purchase reward).
  won: success flag (WebShop: reward == 1).
  rule_ids: ids of the rules that were in the prompt (the episode's fixed working set).
  group_index / episode_index: position within the rollout batch.
  """
  task_id: str
  task_type: str
  goal: str
  steps: list[Step]
  reward: float
  won: bool
  rule_ids: list[str] = dataclasses.field(default_factory=list)
  group_index: int = 0
  episode_index: int = 0
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def length(self) -> int:
    return len(self.steps)

  @property
  def actions(self) -> list[str]:
    return [s.action for s in self.steps]

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "Episode":
    d = dict(d)
    d["steps"] = [Step(**s) for s in d["steps"]]
    return cls(**d)
