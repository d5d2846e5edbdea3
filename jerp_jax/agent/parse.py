"""Maps a model response to the command the environment receives. Never raises.

Format: the response must hold exactly one `<action>...</action>` block and (by default, as verl-agent
requires) a `<think>...</think>` block before it. The action text is matched to the admissible commands:
exactly, then after normalisation (case, whitespace, punctuation and surrounding quotes ignored), and for
WebShop any `search[query]` is accepted when a search command is admissible. A response that fails any of
these is invalid: the env receives the extracted text (which it answers with "Nothing happens." / a no-op)
or `INVALID_COMMAND` when there is no action at all, and the turn is flagged invalid. Only the
format errors (`FORMAT_ERRORS`: no / several / empty action blocks, no think block) make a response
ill-formed; a well-formed action that names no admissible command is invalid but well formed. Which of the
two the reward shaping penalises is `AdvantageConfig.penalize` (verl-agent: format errors only).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from jerp_jax.agent.prompt import ACTION_CLOSE, ACTION_OPEN, THINK_CLOSE, THINK_OPEN

INVALID_COMMAND = "invalid action"
MAX_COMMAND_CHARS = 200
FORMAT_ERRORS = ("no_action", "multiple_actions", "missing_think", "empty_action")

_ACTION_RE = re.compile(re.escape(ACTION_OPEN) + r"(.*?)" + re.escape(ACTION_CLOSE), re.DOTALL)
_THINK_RE = re.compile(re.escape(THINK_OPEN) + r".*?" + re.escape(THINK_CLOSE), re.DOTALL)
_SEARCH_RE = re.compile(r"^search\s*\[(.*)\]$", re.IGNORECASE | re.DOTALL)
_NON_WORD_RE = re.compile(r"[^0-9a-z]+")


@dataclasses.dataclass(frozen=True)
class ParsedAction:
  """Outcome of parsing one response.

  command: what the environment receives.
  valid: the response was well formed and mapped to an admissible command.
  reason: "exact" | "normalised" | "search" (valid) or "no_action" | "multiple_actions" | "missing_think"
    | "empty_action" | "not_admissible" (invalid).
  """
  command: str
  valid: bool
  reason: str

  @property
  def well_formed(self) -> bool:
    """The response had the <think>/<action> format (whether or not the action was admissible)."""
    return self.reason not in FORMAT_ERRORS


def normalise(text: str) -> str:
  """Lower-cases and reduces every run of non-alphanumerics to one space ("Go to  Cabinet 1." -> "go to cabinet 1")."""
  return _NON_WORD_RE.sub(" ", text.lower()).strip()


def _match_admissible(text: str, admissible: Sequence[str]) -> tuple[str, str] | None:
  if text in admissible:
    return text, "exact"
  key = normalise(text)
  if key:
    for command in admissible:
      if normalise(command) == key:
        return command, "normalised"
  search = _SEARCH_RE.match(text.strip())
  if search and any(a.lower().startswith("search[") for a in admissible):
    query = " ".join(search.group(1).split())
    if query:
      return f"search[{query}]", "search"
  return None


def parse_action(response: str, admissible: Sequence[str], *, require_think: bool = True) -> ParsedAction:
  """Parses one response against the admissible commands of the current state."""
  if not isinstance(response, str):
    return ParsedAction(INVALID_COMMAND, False, "no_action")
  blocks = _ACTION_RE.findall(response)
  if not blocks:
    return ParsedAction(INVALID_COMMAND, False, "no_action")
  if len(blocks) > 1:
    return ParsedAction(INVALID_COMMAND, False, "multiple_actions")
  text = blocks[0].strip().strip("'\"`").strip()
  if not text:
    return ParsedAction(INVALID_COMMAND, False, "empty_action")
  fallback = " ".join(text.split())[:MAX_COMMAND_CHARS]
  if require_think:
    action_start = response.find(ACTION_OPEN)
    if not _THINK_RE.search(response[:action_start]):
      return ParsedAction(fallback, False, "missing_think")
  matched = _match_admissible(text, admissible)
  if matched is None:
    return ParsedAction(fallback, False, "not_admissible")
  command, reason = matched
  return ParsedAction(command, True, reason)


def parse_actions(responses: Sequence[str], admissible: Sequence[Sequence[str]], *,
                  require_think: bool = True) -> list[ParsedAction]:
  """`parse_action` over a batch (one admissible list per response)."""
  if len(responses) != len(admissible):
    raise ValueError(f"parse_actions: {len(responses)} responses but {len(admissible)} admissible lists")
  return [parse_action(r, a, require_think=require_think) for r, a in zip(responses, admissible)]
