"""The results table of the training modes: warm start, grpo, rules, sequential, joint, over seeds.

For each seed, one warm-start run (behaviour cloning only, `rl.iterations=0`) is trained once and every
mode starts from its checkpoint (`--config.warm_start.init_from`), so the modes of a seed differ only in
what happens after the warm start. Each run is an ordinary `python -m experiments.<env>` subprocess with
its own run directory (resumable: a finished run is not re-run). The table reports success on each eval
split as mean +- sd over seeds (the warm-start row is each seed's first evaluation, before any update),
and for the rule modes the absorption gap (success with rules - without) at the first and the last
evaluation. Prints the markdown table and writes it to --out.

  python -m experiments.results_table --config=configs/alfworld_results.py --seeds=0,1,2 \
      --root=runs/results --jobs=2
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np
from absl import app, flags, logging

_CONFIG = flags.DEFINE_string("config", "configs/alfworld_results.py", "Experiment config file.")
_ENV = flags.DEFINE_enum("env", "alfworld", ["alfworld", "webshop"], "Which experiment app runs.")
_MODES = flags.DEFINE_list("modes", ["grpo", "joint", "rules", "sequential"], "Modes after the warm start.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"],
                          "Seeds (each gets its own warm start unless --warm_start_dir / "
                          "--shared_warm_start_seed is given).")
_ROOT = flags.DEFINE_string("root", "runs/results", "Parent directory of the run directories.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Runs at once (each pinned to its own CPU when --pin_cpus).")
_PIN = flags.DEFINE_bool("pin_cpus", True, "Pin run i to CPU i % jobs with taskset (Linux).")
_OUT = flags.DEFINE_string("out", "", "Write the markdown table here (default: ROOT/results.md).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "Extra --config.X=Y overrides for every run.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Only build the table from the finished runs.")
_SHARED = flags.DEFINE_integer(
    "shared_warm_start_seed", None,
    "Train ONE warm start (with this seed) for every seed's modes, instead of one per seed (CPU budget); "
    "the seeds then vary only the RL stage. The run dir is ROOT/warm_start_shared.")
_WARM_DIR = flags.DEFINE_string("warm_start_dir", "",
                                "Use this finished warm-start run dir instead of training one.")


def _command(seed: str, mode: str, run_dir: str, init_from: Optional[str]) -> list[str]:
  cmd = [sys.executable, "-m", f"experiments.{_ENV.value}", f"--config={_CONFIG.value}",
         f"--config.seed={seed}", f"--config.mode={mode}", f"--config.run_dir={run_dir}"]
  if init_from is None:
    cmd.append("--config.rl.iterations=0")
  else:
    cmd.append(f"--config.warm_start.init_from={init_from}")
  return cmd + [f"--config.{o}" for o in _OVERRIDES.value]


def _run_all(jobs: list[tuple[str, list[str]]], parallel: int) -> None:
  """Runs (run_dir, command) pairs, `parallel` at a time; a run with results.json is skipped (checked
  at launch, so a run another driver finished meanwhile is not started again)."""
  pending = list(jobs)
  running: list[tuple[str, subprocess.Popen, int, Any]] = []
  free = list(range(parallel))
  while pending or running:
    while pending and free:
      run_dir, cmd = pending.pop(0)
      if os.path.exists(os.path.join(run_dir, "results.json")):
        continue
      slot = free.pop(0)
      os.makedirs(run_dir, exist_ok=True)
      if _PIN.value and sys.platform.startswith("linux") and parallel > 1:
        cmd = ["taskset", "-c", str(slot % (os.cpu_count() or 1))] + cmd
      log = open(os.path.join(run_dir, "stdout.log"), "w", encoding="utf-8")  # pylint: disable=consider-using-with
      logging.info("start %s", " ".join(cmd))
      running.append((run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), slot, log))
    time.sleep(2)
    for item in list(running):
      run_dir, proc, slot, log = item
      if proc.poll() is not None:
        running.remove(item)
        log.close()
        free.append(slot)
        if proc.returncode:
          raise RuntimeError(f"run {run_dir} failed (exit {proc.returncode}); see {run_dir}/stdout.log")
        logging.info("done %s", run_dir)


def _load(run_dir: str) -> dict:
  with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
    return json.load(f)


def _finished(root: str, seeds: list[str], name: str) -> list[dict]:
  """results.json of the seeds whose `name` run finished (a grid cut short reports what it has)."""
  paths = [os.path.join(root, f"seed{seed}", name) for seed in seeds]
  return [_load(p) for p in paths if os.path.exists(os.path.join(p, "results.json"))]


def _metric(results: list[dict], split: str, with_rules: bool, key: str = "success") -> Optional[float]:
  for r in results:
    if r["split"] == split and r["with_rules"] == with_rules:
      return r[key]
  return None


def _gap(results: list[dict], split: str) -> Optional[float]:
  on, off = _metric(results, split, True), _metric(results, split, False)
  return None if on is None or off is None else on - off


def _cell(values: list[Optional[float]]) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  mean = 100 * float(np.mean(values))
  if len(values) == 1:
    return f"{mean:.1f}"
  return f"{mean:.1f} +- {100 * float(np.std(values, ddof=1)):.1f}"


def build_table(root: str, seeds: list[str], modes: list[str], splits: list[str]) -> str:
  """Markdown: one row per method; success and invalid-action rate per split (rules on where the mode
  uses rules), absorption gaps.

  The warm-start row is the first evaluation (iteration 0, rules off) of each seed's `modes[0]` run;
  runs without an iteration-0 evaluation (eval.at_start=False) give none."""
  header = (["method", "seeds"] + [f"{s} success %" for s in splits]
            + [f"{s} invalid %" for s in splits] + [f"gap first -> last ({s})" for s in splits])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  rows = [("warm start", "warm_start")] + [(m, m) for m in modes]
  for label, name in rows:
    if name == "warm_start":
      # The first evaluation of each seed's first mode run: the warm-started policy, before any RL or
      # rule update, evaluated with that run's seed (the same sampling as every later evaluation).
      # A run with eval.at_start=False has no iteration-0 evaluation: no warm-start row from it (its
      # first evaluation is already trained; a same-key control replaces the row).
      runs = [r for r in _finished(root, seeds, modes[0]) if r["history"] and r["history"][0]["iteration"] == 0]
      finals = [{"final": r["history"][0]["results"], "history": r["history"][:1]} for r in runs]
    else:
      finals = _finished(root, seeds, name)
    if not finals:
      continue
    uses_rules = name in ("rules", "sequential", "joint")
    cells = [label, str(len(finals))]
    for split in splits:
      cells.append(_cell([_metric(f["final"], split, uses_rules) for f in finals]))
    for split in splits:
      cells.append(_cell([_metric(f["final"], split, uses_rules, "invalid_action_rate") for f in finals]))
    for split in splits:
      if not uses_rules:
        cells.append("-")
        continue
      first = [_gap(f["history"][0]["results"], split) for f in finals]
      last = [_gap(f["history"][-1]["results"], split) for f in finals]
      cells.append(f"{_cell(first)} -> {_cell(last)}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  root = os.path.abspath(_ROOT.value)
  seeds, modes = list(_SEEDS.value), list(_MODES.value)
  if _TABLE_ONLY.value:
    warm = []
  elif _WARM_DIR.value:
    warm = [(os.path.abspath(_WARM_DIR.value), s) for s in seeds]
  elif _SHARED.value is not None:
    shared = os.path.join(root, "warm_start_shared")
    _run_all([(shared, _command(str(_SHARED.value), "grpo", shared, None))], 1)
    warm = [(shared, s) for s in seeds]
  else:
    warm = [(os.path.join(root, f"seed{s}", "warm_start"), s) for s in seeds]
    _run_all([(d, _command(s, "grpo", d, None)) for d, s in warm], _JOBS.value)
  # Mode-major order: a grid cut short still has whole rows (every seed of the first modes).
  if warm:
    _run_all([(os.path.join(root, f"seed{s}", m), _command(s, m, os.path.join(root, f"seed{s}", m), d))
              for m in modes for d, s in warm], _JOBS.value)
  first = _load(os.path.join(root, f"seed{seeds[0]}", modes[0]))
  splits = [r["split"] for r in first["final"] if not r["with_rules"]]
  table = build_table(root, seeds, modes, splits)
  out = _OUT.value or os.path.join(root, "results.md")
  with open(out, "w", encoding="utf-8") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
