"""How far a trained policy has moved from its warm start, on held-out turns (prints JSON).

Games 0..num_games-1 of an eval split, two sets of turns: the trained policy's own (each game played once as
the run's evaluations play it, with the sampling key of iteration `--key_iteration`: the states a KL term
would act on) and the observation-only expert's (the same states for every policy, so runs compare). On
each set, the exact per-token KL(policy || warm start) over the vocabulary and the reverse, and the
negative log-likelihood of the response tokens under both (`jerp_jax.rl.drift.divergence_on_rows`); also on
the valid turns of the policy's won games alone ("won_policy_turns", absent when it won none: the turns the
push-up side of GRPO/GiGPO trains on).

  python -m experiments.policy_drift --config=configs/alfworld_gigpo.py --config.seed=0 \\
      --run_dir=runs/gigpo/seed0/grpo --warm_start_dir=runs/C2 --num_games=40

--config (with --config.X=Y overrides) must be the run's own config. --run_dir's latest checkpoint is the
policy; --warm_start_dir's warm-started checkpoint is the reference (a run's own warm start, or the
`warm_start.init_from` run it loaded). Both runs are only read.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from jerp_jax.rl import drift
from jerp_jax.rl import rollout as rollout_lib
from jerp_jax.rl import warm_start as warm_start_lib
from jerp_jax.training import app as app_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a program, so tests can import `measure` beside other apps' flags."""
  config_flags.DEFINE_config_file("config", "configs/alfworld_gigpo.py", "The run's config.")
  flags.DEFINE_string("run_dir", None, "The trained run (its latest checkpoint).", required=True)
  flags.DEFINE_string("warm_start_dir", None, "The run whose warm-started checkpoint is the reference.",
                      required=True)
  flags.DEFINE_string("split", "valid_seen", "Eval split.")
  flags.DEFINE_integer("num_games", 40, "Games 0..N-1 of the split.")
  flags.DEFINE_integer("key_iteration", 0, "Iteration whose evaluation sampling key plays the policy's own games.")
  flags.DEFINE_integer("batch_size", 16, "Turns per scoring batch.")


def measure(config: ml_collections.ConfigDict, run_dir: str, warm_start_dir: str, *, split: str,
            num_games: int, key_iteration: int = 0, batch_size: int = 16) -> dict[str, Any]:
  """The drift record of `run_dir`'s latest policy from `warm_start_dir`'s warm start (see the module doc)."""
  source, reference_dir = os.path.abspath(run_dir), os.path.abspath(warm_start_dir)
  for flag, path in (("run_dir", source), ("warm_start_dir", reference_dir)):
    if not os.path.isdir(os.path.join(path, "checkpoints")):
      raise ValueError(f"--{flag}: no checkpoints directory under {path}")
  if split not in config.env.eval_splits:
    raise ValueError(f"--split={split!r} is not one of the config's env.eval_splits {tuple(config.env.eval_splits)}")
  with app_lib.reading_trainer(config, num_games=num_games, resume_from=source, init_from=reference_dir) as trainer:
    if not trainer.warm_started:
      raise ValueError(f"--run_dir: {source} has no checkpoint written after its warm start")
    policy, iteration = trainer.state, trainer.iteration
    own = trainer.play_eval_games(split, with_rules=False, key_iteration=key_iteration)
    games = [rollout_lib.GroupSpec(seed=int(g)) for g in trainer.eval_games]
    expert = warm_start_lib.collect_expert_episodes(  # answered as the warm start was trained to answer
        trainer.eval_envs[split][0], games, max_steps=trainer.settings.rollout.max_turns,
        think=trainer.settings.warm_start.think)
    trainer.warm_start()  # trainer.state is now the reference
    reference = trainer.state
    record: dict[str, Any] = {"run_dir": source, "warm_start_dir": reference_dir, "iteration": iteration,
                              "split": split, "num_games": len(games), "key_iteration": key_iteration}
    won = [ep for ep in own if ep.won]  # the kind of turns GiGPO's push-up side trains on
    for name, episodes, invalid in (("policy_turns", own, True), ("won_policy_turns", won, False),
                                    ("expert_turns", expert, False)):
      if not episodes:
        continue
      rows = warm_start_lib.sft_rows(episodes, trainer.tokenizer, trainer.settings.rollout.prompt,
                                     include_invalid=invalid)
      result = drift.divergence_on_rows(policy, reference, rows, pad_id=trainer.pad_id, batch_size=batch_size)
      result["won"] = float(sum(ep.won for ep in episodes))
      record[name] = result
  return record


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  app_lib.apply_process_options(FLAGS.config)
  try:
    record = measure(FLAGS.config, FLAGS.run_dir, FLAGS.warm_start_dir, split=FLAGS.split,
                     num_games=FLAGS.num_games, key_iteration=FLAGS.key_iteration, batch_size=FLAGS.batch_size)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(json.dumps(record, indent=1))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
