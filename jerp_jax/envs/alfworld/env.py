"""gymnasium env "jerp_jax/ALFWorld-v0": the built-in ALFWorld games (fast backend).

`reset(seed=s)` plays game `s % size` of the split (or `options={"game_index": i}`); without either a
game is drawn with the env's RNG. Observations are text; `info` holds `admissible_commands`, `task_type`,
`goal`, `won`, `task_id`, `room_type`, `floor_plan`. `step(command)` returns
(observation, reward, terminated=won, truncated=step limit without win, info).
"""
import collections
import string
from typing import Any, Optional

import gymnasium

from jerp_jax.envs.alfworld import expert as expert_lib
from jerp_jax.envs.alfworld import games as games_lib
from jerp_jax.envs.alfworld import scene as scene_lib
from jerp_jax.envs.alfworld import tw_export
from jerp_jax.envs.alfworld import world as world_lib

ENV_ID = "jerp_jax/ALFWorld-v0"
BACKENDS = ("fast", "textworld", "real_data")
_TEXT = gymnasium.spaces.Text(max_length=1_000_000, charset=string.printable)
_WORLD_CACHE = 64


class AlfWorldEnv(gymnasium.Env):
  """One built-in ALFWorld game at a time; see the module docstring.

  Args:
    split: "train", "valid_seen" or "valid_unseen".
    size: number of games in the split (default: ALFWorld's 3553 / 140 / 134).
    max_steps: episode step limit (ALFWorld: 50).
    render_mode: None or "ansi" (render returns the last observation).
    task_type: play only games of this task type (a separate one-type game set).
  """

  metadata = {"render_modes": ["ansi"], "render_fps": 4}

  def __init__(self, split: str = "train", size: Optional[int] = None, max_steps: int = world_lib.MAX_STEPS,
               render_mode: Optional[str] = None, task_type: Optional[str] = None):
    if render_mode not in (None, "ansi"):
      raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
    self.render_mode = render_mode
    self.games = games_lib.GameSet(split, size, max_steps, task_type)
    self.observation_space = _TEXT
    self.action_space = _TEXT
    self._worlds: collections.OrderedDict[int, world_lib.World] = collections.OrderedDict()
    self._world: Optional[world_lib.World] = None
    self._game: Optional[games_lib.Game] = None
    self._expert: Optional[expert_lib.ObservationExpert] = None
    self._oracle: Optional[expert_lib.ObservationExpert] = None
    self._unseen: list[tuple[str, str]] = []  # (command, feedback) not yet shown to the experts
    self._oracle_unseen: list[tuple[str, str]] = []

  # ------------------------------------------------------------------------------------ accessors
  @property
  def world(self) -> world_lib.World:
    if self._world is None:
      raise RuntimeError("call reset() first")
    return self._world

  @property
  def scene(self) -> scene_lib.Scene:
    return self.world.scene

  @property
  def task(self) -> scene_lib.Task:
    return self.world.task

  @property
  def game(self) -> games_lib.Game:
    if self._game is None:
      raise RuntimeError("call reset() first")
    return self._game

  # ------------------------------------------------------------------------------------- episodes
  def _world_for(self, index: int) -> world_lib.World:
    world = self._worlds.pop(index, None)
    if world is None:
      game = self.games.game(index)
      world = world_lib.World(game.scene, game.task, self.games.max_steps)
      if len(self._worlds) >= _WORLD_CACHE:
        self._worlds.popitem(last=False)
    self._worlds[index] = world
    return world

  def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[str, dict]:
    super().reset(seed=seed)
    options = options or {}
    if "game_index" in options:
      index = int(options["game_index"])
    elif seed is not None:
      index = int(seed) % len(self.games)
    else:
      index = int(self.np_random.integers(len(self.games)))
    self._game = self.games.game(index)
    self._world = self._world_for(index)
    observation = self._world.reset()
    self._expert = self._oracle = None  # Built on first use: most rollouts never ask.
    self._unseen, self._oracle_unseen = [], []
    return observation, self._info()

  def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
    world = self.world
    if not isinstance(action, str):
      action = str(action)
    feedback, reward, done = world.step(action)
    self._unseen.append((action, feedback))
    self._oracle_unseen.append((action, feedback))
    return feedback, reward, world.won, done and not world.won, self._info()

  def _info(self) -> dict[str, Any]:
    world, game = self._world, self._game
    return {"admissible_commands": world.admissible_commands(), "task_type": world.task.task_type,
            "goal": world.task.goal_text, "won": world.won, "task_id": game.task_id,
            "room_type": world.scene.room_type, "floor_plan": world.scene.floor_plan}

  def render(self) -> Optional[str]:
    if self.render_mode == "ansi" and self._world is not None:
      return self._world.last_feedback
    return None

  # -------------------------------------------------------------------------------------- experts
  def expert_action(self) -> str:
    """Next command of the observation-only expert (acts only on what the episode has shown)."""
    world = self.world
    if self._expert is None:
      self._expert = expert_lib.ObservationExpert(world.intro)
    for command, feedback in self._unseen:
      self._expert.observe(command, feedback)
    self._unseen = []
    return self._expert.act(world.admissible_commands())

  def expert_think(self) -> str:
    """The expert's one-line reasoning for warm-start think blocks: the goal's object and destination,
    "Goal: apple to fridge" (`expert.goal_focus`), the same every step of an episode. The "Goal:" prefix
    puts a space before the object name, so a word-piece tokenizer gives it the same token as in the
    observation and the admissible commands (" apple"); at the start of the block it would split."""
    return "Goal: " + expert_lib.goal_focus(self.world.task.goal_text)

  def oracle_action(self) -> str:
    """Next command of the oracle expert (knows where everything is)."""
    world = self.world
    if self._oracle is None:
      self._oracle = expert_lib.ObservationExpert(world.intro)
    for command, feedback in self._oracle_unseen:
      self._oracle.observe(command, feedback)
    self._oracle_unseen = []
    expert_lib.oracle_memory(self._oracle, world)
    return self._oracle.act(world.admissible_commands())

  def export_tw_pddl(self, path: str) -> str:
    """Writes the current game as a `game.tw-pddl` file the real ALFWorld engine loads; returns the path."""
    return tw_export.export_tw_pddl(self.scene, self.task, path)


def make_env(split: str = "train", backend: str = "fast", size: Optional[int] = None,
             max_steps: int = world_lib.MAX_STEPS, render_mode: Optional[str] = None,
             game_dir: Optional[str] = None, task_type: Optional[str] = None) -> gymnasium.Env:
  """Entry point of "jerp_jax/ALFWorld-v0".

  backend: "fast" (this module), "textworld" (our games on the real engine) or "real_data" (the
  downloaded ALFWorld games under $ALFWORLD_DATA or `game_dir`, on the real engine).
  """
  if backend == "fast":
    return AlfWorldEnv(split, size, max_steps, render_mode, task_type)
  if backend == "textworld":
    from jerp_jax.envs.alfworld import textworld_backend  # Heavy: imports textworld.
    if max_steps != world_lib.MAX_STEPS:
      raise ValueError("the textworld backend uses ALFWorld's 50-step limit")
    return textworld_backend.TextWorldAlfWorldEnv(
        lambda: AlfWorldEnv(split, size, max_steps, task_type=task_type), game_dir)
  if backend == "real_data":
    from jerp_jax.envs.alfworld import real_adapter  # Heavy: imports textworld.
    if size is not None or task_type is not None or max_steps != world_lib.MAX_STEPS:
      raise ValueError("the real_data backend plays the downloaded games as they are (no size/task_type/max_steps)")
    return real_adapter.RealAlfWorldEnv(split, game_dir)
  raise ValueError(f"unknown ALFWorld backend {backend!r}; expected one of {BACKENDS}")
