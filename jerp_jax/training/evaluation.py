"""Evaluation with and without rules in the prompt (the absorption measurement) and the results table.

An evaluation (`Trainer.evaluate`) plays `num_games` fixed games of a split (game i = seed i), one greedy
episode each, through the same lockstep rollout as training (group size 1). With rules, each game's working set is retrieved
from the pool by its task text, so held-out games get the rules of their nearest training tasks. The
absorption gap is success(with rules) - success(without rules).
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Sequence

import numpy as np

from jerp_jax.agent import Episode


@dataclasses.dataclass
class EvalResult:
  """One split evaluated one way. success_by_type: task type -> success rate."""
  split: str
  with_rules: bool
  success: float
  reward: float
  episode_length: float
  invalid_action_rate: float
  success_by_type: dict[str, float]
  num_games: int

  def metrics(self) -> dict[str, float]:
    tag = f"{self.split}/{'rules' if self.with_rules else 'norules'}"
    out = {f"{tag}/success": self.success, f"{tag}/reward": self.reward,
           f"{tag}/episode_length": self.episode_length, f"{tag}/invalid_action_rate": self.invalid_action_rate}
    out.update({f"{tag}/success/{t}": v for t, v in self.success_by_type.items()})
    return out


def summarize(split: str, with_rules: bool, episodes: Sequence[Episode]) -> EvalResult:
  by_type: dict[str, list[bool]] = collections.defaultdict(list)
  for ep in episodes:
    by_type[ep.task_type].append(ep.won)
  steps = [s for ep in episodes for s in ep.steps]
  return EvalResult(
      split=split, with_rules=with_rules, success=float(np.mean([ep.won for ep in episodes])),
      reward=float(np.mean([ep.reward for ep in episodes])),
      episode_length=float(np.mean([ep.length for ep in episodes])),
      invalid_action_rate=float(np.mean([not s.valid for s in steps])) if steps else 0.0,
      success_by_type={t: float(np.mean(v)) for t, v in sorted(by_type.items())}, num_games=len(episodes))


def absorption_gap(results: Sequence[EvalResult]) -> dict[str, float]:
  """split -> success(with rules) - success(without rules), for splits evaluated both ways."""
  by = {(r.split, r.with_rules): r.success for r in results}
  return {split: by[(split, True)] - by[(split, False)] for split, with_rules in by
          if with_rules and (split, False) in by}


def format_table(results: Sequence[EvalResult], rule_count: int, title: str = "") -> str:
  """A plain-text table: one row per (split, rules on/off), overall and per-task-type success (%)."""
  types = sorted({t for r in results for t in r.success_by_type})
  short = {t: t.replace("pick_and_place_simple", "pick").replace("look_at_obj_in_light", "look")
           .replace("pick_clean_then_place_in_recep", "clean").replace("pick_heat_then_place_in_recep", "heat")
           .replace("pick_cool_then_place_in_recep", "cool").replace("pick_two_obj_and_place", "pick2")
           for t in types}
  header = ["split", "rules", "games", "success"] + [short[t] for t in types] + ["invalid", "length"]
  rows = [header]
  for r in results:
    rows.append([r.split, "on" if r.with_rules else "off", str(r.num_games), f"{100 * r.success:.1f}"]
                + [f"{100 * r.success_by_type[t]:.1f}" if t in r.success_by_type else "-" for t in types]
                + [f"{100 * r.invalid_action_rate:.1f}", f"{r.episode_length:.1f}"])
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  lines = [title] if title else []
  for n, row in enumerate(rows):
    lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    if n == 0:
      lines.append("  ".join("-" * w for w in widths))
  gaps = absorption_gap(results)
  if gaps:
    lines.append("absorption gap (success with rules - without): "
                 + ", ".join(f"{s} {100 * g:+.1f}" for s, g in gaps.items()))
  lines.append(f"rules in pool: {rule_count}")
  return "\n".join(lines)


def invalid_action_kinds(episodes: Sequence[Episode]) -> dict[str, int]:
  """The inadmissible steps of ALFWorld episodes by kind (`experiments/invalid_actions.py`).

  Kinds: "take_absent_object" (a `take` that is not admissible: the object is not there),
  "go_to_current_place" / "go_to_missing_receptacle", "other_verb:<verb>", "format_error" (no
  <think>/<action> format); "repeats_previous_invalid" counts the inadmissible steps that repeat the
  previous step's inadmissible action ("Nothing happens." -> the same action). Plus "steps" and
  "invalid" totals. Only kinds that occur are keys.
  """
  kinds: collections.Counter = collections.Counter()
  for ep in episodes:
    place, previous_invalid = None, None
    for step in ep.steps:
      kinds["steps"] += 1
      action = step.action  # the admissible command, or what an inadmissible one asked for
      if step.valid:
        if action.startswith("go to "):
          place = action[len("go to "):]
        previous_invalid = None
        continue
      kinds["invalid"] += 1
      if not step.well_formed:
        kinds["format_error"] += 1
        previous_invalid = None
        continue
      if action.startswith("go to "):
        # An inadmissible "go to" names the current place (left out of the commands) or a receptacle
        # that the room lacks.
        kinds["go_to_current_place" if action[len("go to "):] == place else "go_to_missing_receptacle"] += 1
      elif action.startswith("take "):
        kinds["take_absent_object"] += 1
      else:
        kinds[f"other_verb:{action.split()[0]}"] += 1
      if action == previous_invalid:
        kinds["repeats_previous_invalid"] += 1
      previous_invalid = action
  return dict(kinds)


def action_verbs(episodes: Sequence[Episode]) -> dict[str, object]:
  """How often each verb was played, admissible or not (`experiments/invalid_actions.py`).

  Returns {"admissible_verbs": {verb: steps}, "inadmissible_verbs": {verb: steps}, "episodes_with_take":
  episodes with at least one admissible `take`}; a step without the <think>/<action> format counts
  under the verb "<format_error>". A policy that stops trying to pick things up shows as fewer
  `take` steps on both sides and fewer episodes with a take, where the inadmissible kinds alone
  would only show fewer failed takes.
  """
  admissible, inadmissible = collections.Counter(), collections.Counter()
  with_take = 0
  for ep in episodes:
    took = False
    for step in ep.steps:
      verb = step.action.split()[0] if step.well_formed and step.action.strip() else "<format_error>"
      (admissible if step.valid else inadmissible)[verb] += 1
      took = took or (step.valid and verb == "take")
    with_take += took
  return {"admissible_verbs": dict(admissible.most_common()),
          "inadmissible_verbs": dict(inadmissible.most_common()), "episodes_with_take": with_take}


def outcome_record(episodes: Sequence[Episode], **header: object) -> dict[str, object]:
  """Which games were won: `header` (who was scored where: run_dir, warm_start, split, with_rules, seed,
  key_iteration) then {"won": count, "games": count, "won_games": [indices into `episodes`]}.

  Written for every in-run evaluation (`RUN_DIR/eval/`) and by `experiments/invalid_actions.py`, so two
  policies scored on the same games and sampling keys can be compared game by game
  (`paired_comparison`, `experiments/paired_outcomes.py`, which checks split, games, seed, key_iteration).
  """
  return {**header, "won": int(sum(ep.won for ep in episodes)), "games": len(episodes),
          "won_games": [i for i, ep in enumerate(episodes) if ep.won]}


def paired_comparison(won_a: Sequence[bool], won_b: Sequence[bool]) -> dict[str, float]:
  """Two policies scored on the same games with the same sampling keys, compared game by game.

  won_a / won_b: [games] success flags, game i of both lists being the same game and key. Only the
  discordant games carry information about which policy is better (the exact McNemar / sign test):
  under "equally good" each of the n = a_only + b_only discordant games goes either way with
  probability 1/2. Returns the counts, `p_a_better` = P(X >= a_only) for X ~ Binomial(n, 1/2)
  (one-sided: a is better) and `p_two_sided` = min(1, 2 x P(X >= max(a_only, b_only))).
  """
  if len(won_a) != len(won_b):
    raise ValueError(f"paired_comparison: {len(won_a)} games for a but {len(won_b)} for b; "
                     "both must be scored on the same games")
  a = np.asarray(won_a, bool)
  b = np.asarray(won_b, bool)
  a_only, b_only = int(np.sum(a & ~b)), int(np.sum(b & ~a))
  n = a_only + b_only

  def tail(k: int) -> float:  # P(X >= k), X ~ Binomial(n, 1/2)
    return sum(math.comb(n, j) for j in range(k, n + 1)) / 2 ** n

  return {"games": int(a.size), "a_wins": int(a.sum()), "b_wins": int(b.sum()), "a_only": a_only,
          "b_only": b_only, "p_a_better": tail(a_only), "p_two_sided": min(1.0, 2 * tail(max(a_only, b_only)))}


def seed_sign_flip_test(differences: Sequence[float]) -> dict[str, float]:
  """Is a better than b across training seeds? An exact sign-flip (randomisation) test on per-seed gaps.

  differences: [seeds] success(a) - success(b) of each seed (a trained policy and its same-key control).
  The pooled sign test of `paired_comparison` treats every (seed, game) pair as independent, so it covers the
  sampling noise but not the seed-to-seed spread of training; here the seed is the unit. Under "no
  effect" each seed's gap is as likely negative as positive, so the observed sum is compared with all 2^n
  sign assignments: `p_a_better` = the fraction whose sum >= the observed sum (one-sided),
  `p_two_sided` = the fraction whose |sum| >= |observed sum|. With n seeds the smallest possible one-sided
  p is 2^-n (1/8 for 3 seeds, 1/64 for 6). Also returns the mean and sample (n - 1) std of the gaps.
  """
  d = np.asarray(differences, np.float64)
  n = int(d.size)
  if not 1 <= n <= 20:
    raise ValueError(f"seed_sign_flip_test: {n} seeds; needs 1 to 20 (it enumerates all 2^n sign flips)")
  signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)  # [2^n, n] of +-1
  sums = signs @ d
  observed, tol = float(d.sum()), 1e-9 * max(1.0, float(np.abs(d).sum()))
  return {"seeds": n, "mean_difference": float(d.mean()),
          "std_difference": float(d.std(ddof=1)) if n > 1 else 0.0,
          "seeds_ahead": int(np.sum(d > 0)), "seeds_behind": int(np.sum(d < 0)),
          "p_a_better": float(np.mean(sums >= observed - tol)),
          "p_two_sided": float(np.mean(np.abs(sums) >= abs(observed) - tol))}
