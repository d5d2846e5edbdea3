"""experiments/results_table.py: the markdown table from run directories (hand-made results.json files)."""
import json
import os

from experiments import results_table


def _result(split, with_rules, success):
  return {"split": split, "with_rules": with_rules, "success": success, "reward": 0.0,
          "episode_length": 1.0, "invalid_action_rate": round(1.0 - success, 6), "success_by_type": {},
          "num_games": 10}


def _write(root, seed, name, first, last, iterations=(0, 8)):
  """first / last: {(split, with_rules): success} of the first and the last evaluation (first=None: the
  run has only the last one), at these iterations."""
  run_dir = os.path.join(root, f"seed{seed}", name)
  os.makedirs(run_dir)
  history = [{"iteration": i, "results": [_result(s, r, v) for (s, r), v in ev.items()]}
             for i, ev in zip(iterations, (first, last)) if ev is not None]
  with open(os.path.join(run_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"final": history[-1]["results"], "history": history, "rule_count": 0}, f)


def test_table_means_over_seeds_and_gaps(tmp_path):
  root = str(tmp_path)
  for seed, (ws, grpo) in enumerate([(0.1, 0.3), (0.3, 0.5)]):
    _write(root, seed, "grpo", {("valid_seen", False): ws}, {("valid_seen", False): grpo})
    _write(root, seed, "joint", {("valid_seen", False): ws, ("valid_seen", True): ws},
           {("valid_seen", False): grpo, ("valid_seen", True): grpo + 0.1 * (seed + 1)})
  table = results_table.build_table(root, ["0", "1"], ["grpo", "joint"], ["valid_seen"])
  lines = table.splitlines()
  assert lines[0] == ("| method | seeds | valid_seen success % | valid_seen invalid % "
                      "| gap first -> last (valid_seen) |")
  # warm start = each seed's first grpo evaluation; mean +- sample sd over two seeds: (10, 30) -> 20.0 +- 14.1
  assert lines[2] == "| warm start | 2 | 20.0 +- 14.1 | 80.0 +- 14.1 | - |"
  assert lines[3] == "| grpo | 2 | 40.0 +- 14.1 | 60.0 +- 14.1 | - |"
  # joint reports success with rules (0.4, 0.7); gaps first 0 -> last (0.1, 0.2)
  assert lines[4] == "| joint | 2 | 55.0 +- 21.2 | 45.0 +- 21.2 | 0.0 +- 0.0 -> 15.0 +- 7.1 |"
  # a mode with no finished run is left out; one with fewer seeds says so
  _write(root, 0, "rules", {("valid_seen", False): 0.1, ("valid_seen", True): 0.1},
         {("valid_seen", False): 0.1, ("valid_seen", True): 0.2})
  table = results_table.build_table(root, ["0", "1"], ["grpo", "rules", "sequential"], ["valid_seen"])
  assert table.splitlines()[4] == "| rules | 1 | 20.0 | 80.0 | 0.0 -> 10.0 |"
  assert len(table.splitlines()) == 5


def test_no_warm_start_row_without_an_iteration_0_evaluation(tmp_path):
  """eval.at_start=False: the only evaluation is the trained one; it must not be reported as the warm start."""
  root = str(tmp_path)
  _write(root, 0, "grpo", None, {("valid_seen", False): 0.25}, iterations=(0, 4))
  lines = results_table.build_table(root, ["0"], ["grpo"], ["valid_seen"]).splitlines()
  assert lines[2:] == ["| grpo | 1 | 25.0 | 75.0 | - |"]


def test_run_all_skips_finished_runs_and_reports_failures(tmp_path):
  import sys  # pylint: disable=import-outside-toplevel
  import pytest  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["test"])
  jobs = [(str(tmp_path / f"r{i}"), [sys.executable, "-c", f"print({i})"]) for i in range(3)]
  os.makedirs(jobs[1][0])
  with open(os.path.join(jobs[1][0], "results.json"), "w", encoding="utf-8") as f:
    f.write("{}")
  results_table._run_all(jobs, 2)  # pylint: disable=protected-access
  logs = [os.path.join(d, "stdout.log") for d, _ in jobs]
  assert [open(p, encoding="utf-8").read().strip() if os.path.exists(p) else None for p in logs] == ["0", None, "2"]
  bad = str(tmp_path / "bad")
  with pytest.raises(RuntimeError, match="failed \\(exit 3\\)"):
    results_table._run_all([(bad, [sys.executable, "-c", "raise SystemExit(3)"])], 1)  # pylint: disable=protected-access
