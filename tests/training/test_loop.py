"""The trainer end to end on the tiny config (the smoke test), and the config validation errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from configs import base
from experiments import paired_outcomes
from jerp_jax.rl import rollout, train_step, warm_start
from jerp_jax.training import evaluation, loop
from jerp_jax.training.metrics import read_jsonl
from jerp_jax.training.settings import ConfigError, Settings
from jerp_jax.testing.tiny_configs import tiny_config


@pytest.mark.parametrize("key, value, message", [
    ("mode", "ppo", "config.mode"),
    ("rl.group_size", 1, "config.rl.group_size"),
    ("rules.reflector", "oracle", "config.rules.reflector"),
    ("env.name", "minecraft", "config.env.name"),
    ("model.checkpoint", "/nonexistent/dir", "config.model.checkpoint"),
    ("env.eval_splits", ("valid_seen", 3), "config.env.eval_splits"),
    ("agent.think", "yes", "config.agent.think"),
    ("agent.penalize", "all", "config.agent.penalize"),
    ("rl.turn_weighting", "token", "config.rl.turn_weighting"),
    ("rl.step_penalty", -0.5, "config.rl.step_penalty"),
    ("rl.negative_weight", 1.5, "config.rl.negative_weight"),
    ("warm_start.rules_fraction", 1.5, "config.warm_start.rules_fraction"),
    ("warm_start.mistake_rate", 1.0, "config.warm_start.mistake_rate"),
    ("rl.ppo_epochs", 0, "config.rl.ppo_epochs"),
    ("rl.pack_length", -1, "config.rl.pack_length"),
])
def test_bad_config_values_name_the_key(key, value, message):
  config = base.get_config()
  node = config
  *parents, leaf = key.split(".")
  for name in parents:
    node = node[name]
  node[leaf] = value
  with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
    Settings.from_config(config)



@pytest.mark.parametrize("mode, policy, rules", [
    ("joint", [True] * 4, [True] * 4),
    ("grpo", [True] * 4, [False] * 4),
    ("rules", [False] * 4, [True] * 4),
    ("sequential", [False, False, True, True], [True, True, False, False]),
])
def test_modes_decide_which_half_learns(mode, policy, rules):
  config = base.get_config()
  config.mode = mode
  config.rl.iterations = 4
  config.rules.sequential_rule_iterations = 2
  settings = Settings.from_config(config)
  assert [settings.trains_policy(i) for i in range(4)] == policy
  assert [settings.updates_rules(i) for i in range(4)] == rules
  assert settings.uses_rules == (mode != "grpo")


def test_ppo_epochs_pass_over_the_rows_that_many_times(tmp_path):
  """rl.ppo_epochs=3: three shuffled passes of ceil(rows / micro_batch_size) updates each, and the
  parameters end elsewhere than after one pass from the same start (the later passes train)."""
  ends = {}
  for epochs in (1, 3):
    config = tiny_config(str(tmp_path / f"epochs{epochs}"), iterations=1)
    config.mode = "grpo"
    config.rl.ppo_epochs = epochs
    _, trainer = loop.run(config)
    train = [r for r in read_jsonl(os.path.join(config.run_dir, "metrics.jsonl")) if r["phase"] == "train"][0]
    per_pass = -(-int(train["train/rows"]) // config.rl.micro_batch_size)
    assert per_pass >= 1 and train["train/updates"] == epochs * per_pass
    ends[epochs] = jax.tree.leaves(nnx.state(train_step.policy_model(trainer.state)))
  assert any(not np.allclose(a, b) for a, b in zip(ends[1], ends[3]))


def test_packed_rows_train_like_unpacked_rows(tmp_path):
  """rl.pack_rows: one iteration from the same rollout gives the same train metrics and parameters as
  the unpacked mini-batches, with more of the step's columns holding tokens."""
  train, params = {}, {}
  for pack in (False, True):
    config = tiny_config(str(tmp_path / f"pack{pack}"), iterations=1)
    config.mode = "grpo"
    config.rl.pack_rows = pack
    config.rl.pack_length = 1024  # rows of ~300 tokens: several turns per packed row
    config.rl.micro_batch_size = 64  # one mini-batch of every turn
    config.rl.tasks_per_iteration = 8  # ~48 turns: more packed rows than the 8 data shards
    _, trainer = loop.run(config)
    train[pack] = [r for r in read_jsonl(os.path.join(config.run_dir, "metrics.jsonl"))
                   if r["phase"] == "train"][0]
    params[pack] = jax.tree.leaves(nnx.state(train_step.policy_model(trainer.state)))
  assert train[True]["train/updates"] >= 1
  for key, value in train[False].items():
    if key.startswith("train/") and key != "train/token_fill":
      assert train[True][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
  assert train[True]["train/token_fill"] > train[False]["train/token_fill"]
  for a, b in zip(params[False], params[True], strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_kl_all_rows_false_trains_only_the_rows_with_an_advantage(tmp_path):
  """With a KL term every turn is a loss row (verl); rl.kl_all_rows=False keeps only the turns with a
  nonzero advantage, the same rows as a run without KL, and the KL term is still in the loss on them.
  The tiny random policy wins nothing, so the first episode of each group is made a win (same seed: the
  same rollout in all three runs)."""
  train = {}
  for name, kl_coef, all_rows in (("nokl", 0.0, True), ("kl_all", 0.5, True), ("kl_trained", 0.5, False)):
    config = tiny_config(str(tmp_path / name), iterations=1)
    config.mode = "grpo"
    config.rl.entropy_coef = 0.0
    config.rl.negative_weight = 0.0  # the losers' turns get advantage 0
    config.rl.kl_coef = kl_coef
    config.rl.kl_all_rows = all_rows
    trainer = loop.Trainer(config)
    try:
      play = trainer._run_policy

      def first_episode_wins(*args, **kwargs):
        result = play(*args, **kwargs)
        for episode in result.episodes:
          episode.won = episode.episode_index == 0
          episode.reward = float(episode.won)
        return result

      trainer._run_policy = first_episode_wins
      train[name] = trainer.train_iteration()
    finally:
      trainer.close()
  turns = round(train["kl_all"]["rollout/num_episodes"] * train["kl_all"]["rollout/episode_length"])
  assert train["nokl"]["rollout/num_episodes"] == 4
  assert 0 < train["nokl"]["train/rows"] == train["kl_trained"]["train/rows"] < train["kl_all"]["train/rows"] == turns
  assert "train/kl" in train["kl_trained"] and "train/kl" not in train["nokl"]


def test_trainer_smoke_joint_run_writes_its_run_directory(tmp_path):
  """Warm start, one joint iteration, eval with and without rules; every artefact of the run dir."""
  run_dir = str(tmp_path / "run")
  config = tiny_config(run_dir)
  config.rl.iterations = 1
  config.warm_start.enabled = True
  config.warm_start.num_games = 2
  config.warm_start.epochs = 1
  config.warm_start.batch_size = 8
  config.warm_start.agreement_games = 2
  config.env.max_steps = 3
  config.logging.tensorboard = True
  config.sampling.pack_prompts = True  # as configs/base.py (tiny_config turns it off)
  results, trainer = loop.run(config)
  assert results is not None and trainer.sampler.pack_prompts
  assert {(r.split, r.with_rules) for r in results} == {("valid_seen", True), ("valid_seen", False)}
  assert all(r.num_games == 2 and 0.0 <= r.success <= 1.0 for r in results)
  phases = [r["phase"] for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]
  assert phases[0] == "warm_start" and "train" in phases and phases[-1] == "eval"
  warm = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))[0]
  assert 0.0 <= warm["warm_start/agreement"] <= warm["warm_start/agreement_valid"] <= 1.0
  assert warm["warm_start/agreement_steps"] >= 2
  # the agreement keys do not overwrite the SFT summary: warm_start/rows = the expert steps of the 2 train games
  expert = warm_start.collect_expert_episodes(
      trainer.train_envs[0], [rollout.GroupSpec(seed=loop._WARM_START_OFFSET + i) for i in range(2)],
      max_steps=config.warm_start.max_steps)
  assert warm["warm_start/rows"] == sum(len(e.steps) for e in expert if e.won)
  train = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r["phase"] == "train"][0]
  assert train["rollout/num_episodes"] == 4.0 and train["train/updates"] >= 1.0
  assert os.listdir(os.path.join(run_dir, "tb"))
  assert os.path.isfile(os.path.join(run_dir, "rules", "pool.json"))
  with open(os.path.join(run_dir, "results.json")) as f:
    saved = json.load(f)
  assert len(saved["final"]) == 2 and saved["history"][-1]["iteration"] == 1
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["mode"] == "joint"
  assert trainer.checkpoints.latest_step() is not None
  table = evaluation.format_table(results, len(trainer.pool))
  assert "valid_seen" in table and "absorption gap" in table
  out = subprocess.run([sys.executable, "-m", "jerp_jax.rules.inspect", run_dir], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip()


def test_builtin_tokenizer_choice(tmp_path):
  from jerp_jax.training import builders  # pylint: disable=import-outside-toplevel
  config = tiny_config(str(tmp_path / "run"))
  phrases = builders.build_tokenizer(Settings.from_config(config))
  config.model.tokenizer = "builtin_words"
  words = builders.build_tokenizer(Settings.from_config(config))
  assert words.tokenize("take cloth 1") == ["take", "Ġcloth", "Ġ1"]
  assert phrases.tokenize("take cloth 1") != words.tokenize("take cloth 1")
  config.model.checkpoint = str(tmp_path)  # a real checkpoint brings its own tokenizer
  with pytest.raises(ValueError, match="builtin_words"):
    builders.build_tokenizer(Settings.from_config(config))


def test_init_from_loads_a_warm_start_saved_without_the_kl_reference(tmp_path):
  """A warm-start run without KL (no reference copy in its checkpoint) seeds a run with a KL term: its
  policy equals what a run without KL loads, and its reference copy is that policy."""
  source = tiny_config(str(tmp_path / "warm"), iterations=0)
  source.rl.kl_coef = 0.0
  source.warm_start.enabled, source.warm_start.num_games = True, 2
  source.warm_start.epochs, source.warm_start.batch_size, source.warm_start.agreement_games = 1, 8, 0
  source.eval.num_games = 1
  loop.run(source)
  policies = {}
  for kl in (0.0, 0.1):
    target = tiny_config(str(tmp_path / f"kl{kl}"), iterations=0)
    target.rl.kl_coef = kl
    target.eval.num_games = 1
    target.warm_start.enabled, target.warm_start.init_from = True, source.run_dir
    target.warm_start.agreement_games = 0
    _, trainer = loop.run(target)
    policies[kl] = jax.tree.leaves(nnx.state(train_step.policy_model(trainer.state)))
  assert trainer.state.ref_params is not None
  assert len(policies[0.0]) == len(policies[0.1])
  assert all(np.array_equal(a, b) for a, b in zip(policies[0.0], policies[0.1]))
  reference = jax.tree.leaves(trainer.state.ref_params)
  assert len(reference) == len(policies[0.1])
  assert all(np.array_equal(a, b) for a, b in zip(reference, policies[0.1]))


@pytest.mark.parametrize("at_start, evaluated", [(True, [0, 1]), (False, [1])])
def test_eval_at_start_decides_the_iteration_0_evaluation(tmp_path, at_start, evaluated):
  """eval.interval=1 evaluates after every iteration; eval.at_start=False leaves out iteration 0's (a
  same-key control of the warm start replaces it), and the final evaluation still happens."""
  config = tiny_config(str(tmp_path / "run"), iterations=1)
  config.eval.interval, config.eval.at_start, config.eval.num_games = 1, at_start, 1
  _, trainer = loop.run(config)
  assert [h["iteration"] for h in trainer.eval_history] == evaluated
  # Each evaluation also wrote which games it won, readable by experiments/paired_outcomes.py.
  outcome_dir = tmp_path / "run" / "eval"
  assert config.mode == "joint"  # evaluated with and without rules
  assert sorted(os.listdir(outcome_dir)) == sorted(f"valid_seen_{tag}_iter{i:04d}.json" for i in evaluated
                                                   for tag in ("rules", "norules"))
  for entry in trainer.eval_history:
    record = paired_outcomes.load_outcomes(str(outcome_dir / f"valid_seen_norules_iter{entry['iteration']:04d}.json"))
    (result,) = [r for r in entry["results"] if r["split"] == "valid_seen" and not r["with_rules"]]
    assert (record["split"], record["seed"], record["key_iteration"]) == ("valid_seen", config.seed, entry["iteration"])
    assert record["games"] == result["num_games"] == 1
    assert record["won"] == len(record["won_games"]) == round(result["success"] * result["num_games"])
