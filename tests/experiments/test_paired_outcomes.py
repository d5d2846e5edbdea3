"""experiments/paired_outcomes.py: reads invalid_actions output (after log lines), checks the pairing."""
import json

import pytest

from experiments import paired_outcomes


def _write(path, seed, won, games=4, key_iteration=12, split="valid_seen", log_lines=True):
  record = {"run_dir": "/r", "warm_start": False, "split": split, "seed": seed,
            "key_iteration": key_iteration, "steps": 10, "invalid": 5, "won": len(won), "games": games,
            "won_games": list(won)}
  with open(path, "w", encoding="utf-8") as f:
    if log_lines:
      f.write("I1203 18:20:00 loop.py:161] resumed {not json}\n")
    f.write(json.dumps(record, indent=1) + "\n")
  return str(path)


def test_pools_the_seeds_game_by_game(tmp_path):
  a = [_write(tmp_path / "a0", 0, [0, 1, 2]), _write(tmp_path / "a1", 1, [3], log_lines=False)]
  b = [_write(tmp_path / "b0", 0, [2]), _write(tmp_path / "b1", 1, [0])]
  out = paired_outcomes.compare(a, b)
  assert [(s["seed"], s["a_only"], s["b_only"]) for s in out["per_seed"]] == [(0, 2, 0), (1, 1, 1)]
  pooled = out["pooled"]
  assert (pooled["games"], pooled["a_wins"], pooled["b_wins"], pooled["a_only"], pooled["b_only"]) == (8, 4, 2, 3, 1)
  assert pooled["p_a_better"] == pytest.approx(5 / 16)  # P(X >= 3), X ~ Binomial(4, 1/2)
  # Across seeds the gaps are 3/4 - 1/4 = 0.5 and 1/4 - 1/4 = 0: flips sum to +-0.5, two of four reach 0.5.
  seeds = out["across_seeds"]
  assert (seeds["seeds"], seeds["seeds_ahead"], seeds["mean_difference"]) == (2, 1, pytest.approx(0.25))
  assert seeds["p_a_better"] == pytest.approx(0.5)


def test_unpaired_inputs_are_named(tmp_path):
  with pytest.raises(ValueError, match="key_iteration"):
    paired_outcomes.compare([_write(tmp_path / "a", 0, [1])], [_write(tmp_path / "b", 0, [1], key_iteration=8)])
  with pytest.raises(ValueError, match="one per seed"):
    paired_outcomes.compare([_write(tmp_path / "a", 0, [1])], [])
  (tmp_path / "old").write_text('{"split": "valid_seen", "games": 4}\n')
  with pytest.raises(ValueError, match="won_games"):
    paired_outcomes.load_outcomes(str(tmp_path / "old"))


def test_draws_of_one_seed_make_one_unit_across_seeds(tmp_path):
  # Seed 0 scored twice (other keys): gaps 0.5 and -0.25 average to 0.125; seed 1's gap is 0.25. Two units,
  # both ahead: only the identity flip reaches the sum, p = 1/4 (as three separate units it would be 3/8).
  a = [_write(tmp_path / "a0", 0, [0, 1, 2]), _write(tmp_path / "a0k", 0, [0], key_iteration=8),
       _write(tmp_path / "a1", 1, [0, 1])]
  b = [_write(tmp_path / "b0", 0, [3]), _write(tmp_path / "b0k", 0, [0, 1], key_iteration=8),
       _write(tmp_path / "b1", 1, [1])]
  seeds = paired_outcomes.compare(a, b)["across_seeds"]
  assert (seeds["seeds"], seeds["seeds_ahead"]) == (2, 2)
  assert seeds["mean_difference"] == pytest.approx((0.125 + 0.25) / 2)
  assert seeds["p_a_better"] == pytest.approx(1 / 4)


def test_by_task_type_pools_the_games_of_each_type(tmp_path):
  # Types by parity of the game index; 4 games in each of two file pairs. Even games (0, 2): a alone wins
  # game 0 in both pairs, b alone wins game 2 in the second; odd games (1, 3): both win game 1 in the first.
  a = [_write(tmp_path / "a0", 0, [0, 1]), _write(tmp_path / "a1", 1, [0])]
  b = [_write(tmp_path / "b0", 0, [1]), _write(tmp_path / "b1", 1, [2])]
  out = paired_outcomes.compare(a, b, task_type_of=lambda i: "even" if i % 2 == 0 else "odd")
  even, odd = out["by_task_type"]["even"], out["by_task_type"]["odd"]
  assert (even["games"], even["a_wins"], even["b_wins"], even["a_only"], even["b_only"]) == (4, 2, 1, 2, 1)
  assert (odd["games"], odd["a_wins"], odd["b_wins"], odd["a_only"], odd["b_only"]) == (4, 1, 1, 0, 0)
  assert "by_task_type" not in paired_outcomes.compare(a, b)


def test_alfworld_task_types_follow_the_evaluated_game_set():
  from jerp_jax.envs.alfworld.games import GameSet
  task_type_of = paired_outcomes.alfworld_task_types("valid_seen")
  games = GameSet("valid_seen")
  assert [task_type_of(i) for i in (0, 7, 139)] == [games.game(i).task.task_type for i in (0, 7, 139)]
  for outside in (len(games), -1):
    with pytest.raises(IndexError, match="out of range for split 'valid_seen'"):
      task_type_of(outside)
  with pytest.raises(ValueError, match="unknown split"):
    paired_outcomes.alfworld_task_types("webshop_test")
