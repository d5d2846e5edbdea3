"""Experts for the built-in ALFWorld: an observation-only searcher and an oracle.

`ObservationExpert` knows only what an agent knows: the intro text (receptacle names, task text), the
feedback of every command so far, and ALFWorld's class tables (which receptacle class may hold which
object class, which classes open). It searches the receptacles that may hold the target, cheapest first
(a closed class costs "go to" + "open"), opens what it visits, and never looks at hidden placement.
`oracle_memory()` fills the same memory from the world state, which turns it into the oracle.
"""
import re
from typing import Optional

import alfworld.gen.constants as alfred_constants

from jerp_jax.envs.alfworld import floorplans
from jerp_jax.envs.alfworld import scene as scene_lib
from jerp_jax.envs.alfworld import world as world_lib

_CLASS_OF = {c.lower(): c for c in set(alfred_constants.OBJECTS) | floorplans.STATIC_RECEPTACLES}
_OP_OF_TASK = {"pick_clean_then_place_in_recep": ("clean", "SinkBasin"),
               "pick_heat_then_place_in_recep": ("heat", "Microwave"),
               "pick_cool_then_place_in_recep": ("cool", "Fridge")}
_ARRIVE = re.compile(r"^You arrive at (.+?)\. (.*)$", re.S)
_OPEN = re.compile(r"^You open the (.+?)\. (.*)$", re.S)
_OPEN_STATE = re.compile(r"^The (.+?) is open\. In it, you see (.*)\.$", re.S)
_CLOSED_STATE = re.compile(r"^The (.+?) is closed\.$")
_ON_STATE = re.compile(r"^On the (.+?), you see (.*)\.$", re.S)
_PICK = re.compile(r"^You pick up the (.+?) from the (.+?)\.$")
_MOVE = re.compile(r"^You move the (.+?) to the (.+?)\.$")
_TREAT = re.compile(r"^You (heat|cool|clean) the (.+?) using the (.+?)\.$")
_CARRY = re.compile(r"^You are carrying: a (.+?)\.$")
_INTRO_RECEPS = re.compile(r"Looking quickly around you, you see (.*?)\.\n\nYour task is to: (.*)\.$", re.S)


def parse_list(text: str) -> list[str]:
  """ "a x 1, a y 2, and a z 1" -> ["x 1", "y 2", "z 1"]; "nothing" -> []."""
  if text == "nothing":
    return []
  items = []
  for part in text.split(", "):
    if part.startswith("and "):
      part = part[4:]
    items.append(part[2:] if part.startswith("a ") else part)
  return items


def class_of_name(name: str) -> str:
  """ "sinkbasin 1" -> "SinkBasin"; unknown names map to their lowercase stem."""
  stem = name.rsplit(" ", 1)[0]
  return _CLASS_OF.get(stem, stem)


def _goal_patterns() -> tuple[tuple[str, int, re.Pattern], ...]:
  patterns = []
  for task_type in scene_lib.TASK_TYPES:
    for index, template in enumerate(floorplans.goal_templates(task_type)):
      pattern = re.escape(template)
      for field in ("obj", "recep", "toggle"):
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>\\w+)")
      patterns.append((task_type, index, re.compile(pattern)))
  return tuple(patterns)


_GOAL_PATTERNS = _goal_patterns()


def _match_goal(goal_text: str) -> tuple[str, int, dict[str, str]]:
  """(task type, template index, the template's fields as written: obj / recep / toggle) of a goal text."""
  for task_type, index, pattern in _GOAL_PATTERNS:
    match = pattern.fullmatch(goal_text)
    if match:
      return task_type, index, match.groupdict()
  raise ValueError(f"goal text matches no ALFWorld template: {goal_text!r}")


def parse_goal(goal_text: str) -> scene_lib.Task:
  """Recovers the task from its text by matching goal_library's templates."""
  task_type, index, fields = _match_goal(goal_text)
  return scene_lib.Task(task_type, _CLASS_OF.get(fields.get("obj", ""), ""),
                        _CLASS_OF.get(fields.get("recep", ""), ""),
                        _CLASS_OF.get(fields.get("toggle", ""), ""), index, goal_text)


def goal_focus(goal_text: str) -> str:
  """The goal's object and where it must end up, in the game's own words (what to look for first).

  "put a clean apple in fridge" -> "apple to fridge"; "look at bowl under the desklamp" ->
  "bowl under desklamp". A deterministic restatement of the task text, nothing the agent cannot read.
  """
  _, _, fields = _match_goal(goal_text.strip().rstrip("."))
  if fields.get("toggle"):
    return f"{fields['obj']} under {fields['toggle']}"
  return f"{fields['obj']} to {fields['recep']}"


class ObservationExpert:
  """Acts on a memory built from the observations only."""

  def __init__(self, intro: str):
    match = _INTRO_RECEPS.search(intro)
    if match is None:
      raise ValueError("not an ALFWorld intro text")
    self.receptacles = parse_list(match.group(1))
    self.task = parse_goal(match.group(2))
    self.recep_class = {r: class_of_name(r) for r in self.receptacles}
    self.contents: dict[str, Optional[list[str]]] = {r: None for r in self.receptacles}
    self.is_open: dict[str, Optional[bool]] = {
        r: (None if self.recep_class[r] in floorplans.OPENABLE_CLASSES else True) for r in self.receptacles}
    self.location: Optional[str] = None
    self.holding: Optional[str] = None
    self.treated: set[str] = set()
    self.placed: list[str] = []
    self.destination: Optional[str] = None

  # --------------------------------------------------------------------------------------- memory
  def _see(self, text: str) -> None:
    for pattern, is_open in ((_OPEN_STATE, True), (_ON_STATE, True)):
      match = pattern.match(text)
      if match and match.group(1) in self.contents:
        self.contents[match.group(1)] = parse_list(match.group(2))
        if pattern is _OPEN_STATE:
          self.is_open[match.group(1)] = True
        return
    match = _CLOSED_STATE.match(text)
    if match and match.group(1) in self.is_open:
      self.is_open[match.group(1)] = False

  def observe(self, command: str, feedback: str) -> None:
    """Updates the memory with one command and the feedback it produced."""
    if feedback == world_lib.NOTHING_HAPPENS:
      return
    for pattern in (_ARRIVE, _OPEN):
      match = pattern.match(feedback)
      if match:
        if pattern is _ARRIVE:
          self.location = match.group(1)
        self._see(match.group(2))
        return
    match = _PICK.match(feedback)
    if match:
      self.holding = match.group(1)
      if match.group(1) in self.placed:  # Taken back out of the destination: no longer counts.
        self.placed.remove(match.group(1))
      if self.contents.get(match.group(2)) and match.group(1) in self.contents[match.group(2)]:
        self.contents[match.group(2)].remove(match.group(1))
      return
    match = _MOVE.match(feedback)
    if match:
      obj, recep = match.groups()
      self.holding = None
      if self.contents.get(recep) is not None:
        self.contents[recep].append(obj)
      if recep == self.destination and class_of_name(obj) == self.task.object_class:
        self.placed.append(obj)
      return
    match = _TREAT.match(feedback)
    if match:
      self.treated.add(match.group(2))
      return
    if feedback.startswith("You close the "):
      self.is_open[feedback[len("You close the "):-1]] = False
      return
    match = _CARRY.match(feedback)
    if match:
      self.holding = match.group(1)
      return
    if feedback == "You are not carrying anything.":
      self.holding = None
      return
    self._see(feedback)

  # -------------------------------------------------------------------------------------- policy
  def _cost(self, recep: str) -> int:
    return 1 if self.is_open[recep] else 2

  def _go_or(self, recep: str, command: str) -> str:
    return command if self.location == recep else f"go to {recep}"

  def _explore(self, may_hold: frozenset[str] | set[str]) -> str:
    """Next step of the search over unvisited receptacles whose class may hold one of `may_hold`."""
    if self.location is not None and self.contents[self.location] is None and self.is_open[self.location] is False:
      if any(c in floorplans.CAN_CONTAIN.get(self.recep_class[self.location], ()) for c in may_hold):
        return f"open {self.location}"
    options = [r for r in self.receptacles if self.contents[r] is None
               and any(c in floorplans.CAN_CONTAIN.get(self.recep_class[r], ()) for c in may_hold)]
    if not options:  # Everything searched and nothing found (things moved): search again.
      for r in self.receptacles:
        if r != self.location:
          self.contents[r] = None
      options = [r for r in self.receptacles if r != self.location]
    best = min(options, key=self._cost)
    return self._go_or(best, f"open {best}")

  def _find(self, cls: str, exclude: set[str]) -> Optional[str]:
    """A receptacle where an object of `cls` (not in `exclude`) was last seen, cheapest first."""
    found = [r for r in self.receptacles if self.contents[r]
             and any(class_of_name(o) == cls and o not in exclude for o in self.contents[r])]
    if not found:
      return None
    return self.location if self.location in found else min(found, key=self._cost)

  def _take(self, recep: str, cls: str, exclude: set[str]) -> str:
    if self.location != recep:
      return f"go to {recep}"
    if self.is_open[recep] is False:
      return f"open {recep}"
    obj = next(o for o in self.contents[recep] if class_of_name(o) == cls and o not in exclude)
    return f"take {obj} from {recep}"

  def _receptacle_of_class(self, cls: str) -> Optional[str]:
    options = [r for r in self.receptacles if self.recep_class[r] == cls]
    if not options:
      return None
    return self.location if self.location in options else min(options, key=self._cost)

  def _dispose(self, admissible: set[str]) -> str:
    here = f"move {self.holding} to {self.location}"
    if here in admissible:
      return here
    for r in self.receptacles:
      if (r != self.location and class_of_name(self.holding) in floorplans.CAN_CONTAIN.get(self.recep_class[r], ())
          and self.is_open[r] is not False):
        return f"go to {r}"
    return "look"

  def act(self, admissible: list[str]) -> str:
    """The next command."""
    allowed = set(admissible)
    command = self._decide(allowed)
    return command if command in allowed else ("look" if "look" in allowed else admissible[0])

  def _decide(self, allowed: set[str]) -> str:
    task = self.task
    target = task.object_class
    if task.task_type == "look_at_obj_in_light":
      if self.holding is not None and class_of_name(self.holding) != target:
        return self._dispose(allowed)
      lamp_at = self._find(task.toggle_class, set())
      if self.holding is None:
        recep = self._find(target, set())
        if recep is None:
          return self._explore({target})
        return self._take(recep, target, set())
      if lamp_at is None:
        return self._explore({task.toggle_class})
      lamp = next(o for o in self.contents[lamp_at] if class_of_name(o) == task.toggle_class)
      return self._go_or(lamp_at, f"use {lamp}")
    if self.destination is None:
      self.destination = self._receptacle_of_class(task.receptacle_class)
    placed = set(self.placed)
    if self.holding is not None:
      if class_of_name(self.holding) != target or self.holding in placed:
        return self._dispose(allowed)
      if task.task_type in _OP_OF_TASK and self.holding not in self.treated:
        op, appliance_cls = _OP_OF_TASK[task.task_type]
        appliance = self._receptacle_of_class(appliance_cls)
        return self._go_or(appliance, f"{op} {self.holding} with {appliance}")
      if self.location != self.destination:
        return f"go to {self.destination}"
      if self.is_open[self.destination] is False:
        return f"open {self.destination}"
      return f"move {self.holding} to {self.destination}"
    exclude = placed | (set(self.contents[self.destination] or ()) if task.task_type == "pick_two_obj_and_place"
                        else set())
    recep = self._find(target, exclude)
    if recep is None:
      return self._explore({target})
    return self._take(recep, target, exclude)


def oracle_memory(expert: ObservationExpert, world: world_lib.World) -> None:
  """Overwrites the expert's memory with the true state, making it an oracle."""
  names = world.scene.receptacles
  for r in names:
    expert.contents[r.name] = [world.scene.objects[o].name for o in world.contents[r.index]]
    expert.is_open[r.name] = world.is_open[r.index] or not r.openable
  expert.location = names[world.location].name if world.location >= 0 else None
  expert.holding = world.scene.objects[world.held].name if world.held >= 0 else None
