"""Action parsing: exact, normalised, WebShop search, and every invalid form (never raises)."""
import pytest

from jerp_jax.agent import parse

ALF = ["go to cabinet 1", "go to cabinet 10", "open fridge 1", "take apple 1 from countertop 2", "look"]
WEB = ["search[<query>]", "click[buy now]", "click[b07xyz1234]", "click[< prev]"]


def _r(action, think="<think>hmm</think>"):
  return f"{think}<action>{action}</action>"


@pytest.mark.parametrize("response,command,reason", [
    (_r("go to cabinet 1"), "go to cabinet 1", "exact"),
    (_r("  go to cabinet 10 "), "go to cabinet 10", "exact"),
    (_r("Go To  Cabinet 1."), "go to cabinet 1", "normalised"),
    (_r("'take apple 1 from countertop 2'"), "take apple 1 from countertop 2", "exact"),
    (_r("Take Apple-1 from countertop 2!"), "take apple 1 from countertop 2", "normalised"),
    (_r("look", think="<think></think>"), "look", "exact"),
])
def test_valid_alfworld(response, command, reason):
  assert parse.parse_action(response, ALF) == parse.ParsedAction(command, True, reason)


@pytest.mark.parametrize("response,reason,command", [
    ("go to cabinet 1", "no_action", parse.INVALID_COMMAND),
    ("<think>x</think><action>go to cabinet 1", "no_action", parse.INVALID_COMMAND),
    ("<think>x</think>go to cabinet 1</action>", "no_action", parse.INVALID_COMMAND),
    ("", "no_action", parse.INVALID_COMMAND),
    (_r("look") + "<action>look</action>", "multiple_actions", parse.INVALID_COMMAND),
    (_r("   "), "empty_action", parse.INVALID_COMMAND),
    ("<action>look</action>", "missing_think", "look"),
    ("<action>look</action><think>late</think>", "missing_think", "look"),
    (_r("go to cabinet 2"), "not_admissible", "go to cabinet 2"),
    (_r("go to   the moon"), "not_admissible", "go to the moon"),
])
def test_invalid_alfworld(response, reason, command):
  result = parse.parse_action(response, ALF)
  assert result == parse.ParsedAction(command, False, reason)
  # Only a well-formed action that names no admissible command escapes the format penalty.
  assert result.well_formed == (reason == "not_admissible")


def test_think_optional_when_not_required():
  assert parse.parse_action("<action>look</action>", ALF, require_think=False).valid


def test_non_string_never_raises():
  assert parse.parse_action(None, ALF) == parse.ParsedAction(parse.INVALID_COMMAND, False, "no_action")


def test_long_invalid_text_is_truncated():
  result = parse.parse_action(_r("x" * 1000), ALF)
  assert not result.valid and len(result.command) == parse.MAX_COMMAND_CHARS


@pytest.mark.parametrize("action,command,reason", [
    ("click[Buy Now]", "click[buy now]", "normalised"),
    ("click[b07xyz1234]", "click[b07xyz1234]", "exact"),
    ("search[ red  running shoes ]", "search[red running shoes]", "search"),
    ("Search[cheap socks]", "search[cheap socks]", "search"),
])
def test_webshop(action, command, reason):
  assert parse.parse_action(_r(action), WEB) == parse.ParsedAction(command, True, reason)


def test_webshop_search_needs_search_admissible_and_a_query():
  assert not parse.parse_action(_r("search[shoes]"), ["click[buy now]"]).valid
  assert parse.parse_action(_r("search[  ]"), WEB).reason == "not_admissible"
  assert parse.parse_action(_r("click[nothing here]"), WEB).reason == "not_admissible"


def test_parse_actions_batch():
  out = parse.parse_actions([_r("look"), "junk"], [ALF, ALF])
  assert [p.valid for p in out] == [True, False]
  with pytest.raises(ValueError, match="2 responses but 1"):
    parse.parse_actions([_r("look"), "junk"], [ALF])
