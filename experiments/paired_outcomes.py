"""Game-by-game comparison of two policies scored on the same games and sampling keys (prints JSON).

Reads the JSON that `experiments/invalid_actions.py` prints (a file holding its stdout; log lines
before the JSON are skipped) or that every in-run evaluation writes (`RUN_DIR/eval/SPLIT_norules_iterNNNN.json`,
the same fields), one file per seed for each side, checks that each pair was scored on the
same split, games, seed and key, and reports per seed and pooled over seeds the success of both sides,
the discordant games and the exact sign-test p-values (`evaluation.paired_comparison`), and across seeds
an exact sign-flip test on the per-seed success gaps (`evaluation.seed_sign_flip_test`: the seed is the
unit, so it also covers the seed-to-seed spread of training that the pooled game-level test does not; file
pairs of the same seed, e.g. draws with other sampling keys, are averaged into that seed's one gap):

  python -m experiments.paired_outcomes \
      --a=runs/grpo_seed0.json,runs/grpo_seed1.json --b=runs/ctl_seed0.json,runs/ctl_seed1.json

`--by_task_type` (ALFWorld splits) also pools the (file pair, game) pairs by the games' task types.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Any, Callable, Optional

from absl import app, flags

from jerp_jax.training import evaluation

# Not `required=True`: that validator is global to absl's FLAGS, so importing this module (tests) would
# break every other app parsed in the same process; main() checks instead.
_A = flags.DEFINE_list("a", None, "Side a (e.g. the trained policy): one invalid_actions output or RUN_DIR/eval/ file per seed.")
_B = flags.DEFINE_list("b", None, "Side b (e.g. the warm-start control), in the same seed order.")
_BY_TYPE = flags.DEFINE_bool("by_task_type", False, "Also compare by task type (ALFWorld splits: game i of the "
                             "split's default-size game set, as the evaluation plays it).")

_MUST_MATCH = ("split", "games", "seed", "key_iteration")


def load_outcomes(path: str) -> dict[str, Any]:
  """The invalid_actions JSON in `path` (the first line that starts with '{' begins it)."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  start = re.search(r"^\{", text, re.MULTILINE)
  if start is None:
    raise ValueError(f"{path}: no JSON object (a line starting with '{{') in the file")
  record, _ = json.JSONDecoder().raw_decode(text[start.start():])
  if "won_games" not in record:
    raise ValueError(f"{path}: no 'won_games' list (written by experiments/invalid_actions.py since "
                     "session 11); rerun it")
  return record


def won_flags(record: dict[str, Any]) -> list[bool]:
  won = set(record["won_games"])
  return [i in won for i in range(int(record["games"]))]


def compare(a_paths: list[str], b_paths: list[str],
            task_type_of: Optional[Callable[[int], str]] = None) -> dict[str, Any]:
  """Per-seed and pooled paired comparisons of side a against side b.

  task_type_of: game index -> task type; when given, the pooled pairs are also compared by type
  (`by_task_type`, types sorted by name).
  """
  if len(a_paths) != len(b_paths):
    raise ValueError(f"--a has {len(a_paths)} files but --b has {len(b_paths)}: one per seed on each side")
  per_seed, all_a, all_b, split = [], [], [], None
  gaps: dict[Any, list[float]] = {}  # seed -> success(a) - success(b) of each of its file pairs
  by_type: dict[str, list[tuple[bool, bool]]] = collections.defaultdict(list)  # type -> (won a, won b)
  for pa, pb in zip(a_paths, b_paths):
    ra, rb = load_outcomes(pa), load_outcomes(pb)
    for key in _MUST_MATCH:
      if ra.get(key) != rb.get(key):
        raise ValueError(f"{pa} and {pb} differ in {key!r} ({ra.get(key)!r} vs {rb.get(key)!r}): "
                         "a paired comparison needs the same games and keys on both sides")
    split = ra["split"]
    wa, wb = won_flags(ra), won_flags(rb)
    pair = evaluation.paired_comparison(wa, wb)
    per_seed.append({"seed": ra["seed"], **pair})
    all_a += wa
    all_b += wb
    gaps.setdefault(ra["seed"], []).append((pair["a_wins"] - pair["b_wins"]) / pair["games"])
    if task_type_of is not None:
      for game, (x, y) in enumerate(zip(wa, wb)):
        by_type[task_type_of(game)].append((x, y))
  out = {"split": split, "per_seed": per_seed,
         "pooled": evaluation.paired_comparison(all_a, all_b),
         "across_seeds": evaluation.seed_sign_flip_test([sum(g) / len(g) for g in gaps.values()])}
  if task_type_of is not None:
    out["by_task_type"] = {t: evaluation.paired_comparison(*zip(*by_type[t])) for t in sorted(by_type)}
  return out


def alfworld_task_types(split: str) -> Callable[[int], str]:
  """Game index -> task type of an ALFWorld split's default game set (the games evaluations play)."""
  from jerp_jax.envs.alfworld.games import GameSet  # only this option needs the environment
  return GameSet(split).task_type  # a game outside the set raises IndexError naming the split


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _A.value or not _B.value:
    raise app.UsageError("--a and --b are required: invalid_actions outputs, one per seed on each side")
  task_type_of = None
  if _BY_TYPE.value:
    split = load_outcomes(_A.value[0])["split"]
    try:
      task_type_of = alfworld_task_types(split)
    except ValueError as e:
      raise app.UsageError(f"--by_task_type needs an ALFWorld split: {e}") from e
  print(json.dumps(compare(_A.value, _B.value, task_type_of), indent=1))


if __name__ == "__main__":
  app.run(main)
