"""experiments/policy_drift.py on tiny runs: no drift for a run that only loaded the warm start, some after an
RL iteration, and a missing checkpoint directory named."""
import shutil

import pytest

from experiments import policy_drift
from jerp_jax.testing.tiny_configs import tiny_config
from jerp_jax.training import loop


def _warm_config(run_dir, iterations: int, init_from: str = ""):
  c = tiny_config(run_dir, iterations=iterations)
  c.warm_start.enabled, c.warm_start.num_games = True, 2
  c.warm_start.epochs, c.warm_start.batch_size, c.warm_start.agreement_games = 1, 8, 0
  c.warm_start.init_from = init_from
  c.eval.num_games = 1
  return c


def test_drift_is_zero_at_the_warm_start_and_positive_after_an_iteration(tmp_path):
  trained = _warm_config(str(tmp_path / "trained"), iterations=1)
  trained.checkpoint.keep = 3  # the warm start's checkpoint (1), iteration 1's (2), the final one (3)
  loop.run(trained)
  loaded = _warm_config(str(tmp_path / "loaded"), iterations=0, init_from=trained.run_dir)
  loop.run(loaded)

  same = policy_drift.measure(loaded, loaded.run_dir, trained.run_dir, split="valid_seen", num_games=1)
  assert same["iteration"] == 0
  for turns in ("policy_turns", "expert_turns"):
    assert same[turns]["turns"] > 0
    assert same[turns]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert same[turns]["nll"] == pytest.approx(same[turns]["ref_nll"], rel=1e-6)

  moved = policy_drift.measure(trained, trained.run_dir, trained.run_dir, split="valid_seen", num_games=1)
  assert moved["iteration"] == 1
  # the expert's turns are the same states for both policies, so only the parameters differ
  assert moved["expert_turns"]["turns"] == same["expert_turns"]["turns"]
  assert moved["expert_turns"]["kl"] > 1e-6 and moved["expert_turns"]["reverse_kl"] > 1e-6
  assert moved["expert_turns"]["ref_nll"] == pytest.approx(same["expert_turns"]["ref_nll"], rel=1e-6)
  assert moved["policy_turns"]["kl"] > 1e-6
  assert ("won_policy_turns" in moved) == (moved["policy_turns"]["won"] > 0)

  # without the warm start's own checkpoint the reference would be a trained policy: refused by name
  shutil.copytree(trained.run_dir, tmp_path / "pruned")
  shutil.rmtree(tmp_path / "pruned" / "checkpoints" / "1")
  with pytest.raises(ValueError, match="not the warm start"):
    policy_drift.measure(trained, trained.run_dir, str(tmp_path / "pruned"), split="valid_seen", num_games=1)


def test_a_run_without_checkpoints_is_named(tmp_path):
  config = _warm_config(str(tmp_path / "none"), iterations=0)
  with pytest.raises(ValueError, match="--run_dir: no checkpoints"):
    policy_drift.measure(config, str(tmp_path / "none"), str(tmp_path / "none"), split="valid_seen", num_games=1)
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  with pytest.raises(ValueError, match="not one of the config's env.eval_splits"):
    policy_drift.measure(config, str(tmp_path / "run"), str(tmp_path / "run"), split="valid_unseen",
                         num_games=1)
