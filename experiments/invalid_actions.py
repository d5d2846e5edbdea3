"""Which inadmissible actions a trained ALFWorld policy takes, by kind (prints JSON).

Plays games 0..num_games-1 of an eval split with the policy of a finished run (its latest checkpoint) or of
a warm start (`--warm_start`: the run's warm-started checkpoint) as the run's evaluations play them
(`Trainer.play_eval_games`: sampled when eval.greedy is False) with the sampling key of iteration
`--key_iteration` (default 0; passing the run's last iteration, e.g. 6, replays its final evaluation's
key, so the warm start can be scored on the same games and keys as a trained policy), and sorts every
step whose action was not admissible into a kind (`evaluation.invalid_action_kinds`): a `take` of an object that is not there, a
`go to` the place the agent already is or a receptacle the room lacks, another verb, or a format error;
also counts the steps that repeat the previous step's inadmissible action, every verb played (admissible
and not: `evaluation.action_verbs`) and the episodes that picked something up.

  python -m experiments.invalid_actions --config=configs/alfworld_results.py --run_dir=runs/C2 \
      --warm_start --num_games=16
  python -m experiments.invalid_actions --config=configs/alfworld_results.py \
      --run_dir=runs/r6b/seed0/grpo --num_games=16

--config (with --config.X=Y overrides) must be the run's own config (the model shape, tokenizer and
prompt it was trained with). The source run is only read: its checkpoints are reached through a link from
a scratch run directory.
"""
from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from jerp_jax.training import app as app_lib
from jerp_jax.training import evaluation

_CONFIG = config_flags.DEFINE_config_file("config", "configs/alfworld_results.py", "The run's config.")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "A finished (or warm-start) run directory.", required=True)
_WARM = flags.DEFINE_bool("warm_start", False, "Use the run's warm-started checkpoint, not its latest.")
_SPLIT = flags.DEFINE_string("split", "valid_seen", "Eval split.")
_GAMES = flags.DEFINE_integer("num_games", 16, "Games 0..N-1 of the split, one sampled episode each.")
_KEY_ITERATION = flags.DEFINE_integer("key_iteration", 0, "Iteration whose evaluation sampling key to use.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  source = os.path.abspath(_RUN_DIR.value)
  if not os.path.isdir(os.path.join(source, "checkpoints")):
    raise app.UsageError(f"--run_dir: no checkpoints directory under {source}")
  config = _CONFIG.value
  app_lib.apply_process_options(config)
  with app_lib.reading_trainer(config, num_games=_GAMES.value, resume_from="" if _WARM.value else source,
                               init_from=source if _WARM.value else "") as trainer:
    if _WARM.value:
      trainer.warm_start()
    episodes = trainer.play_eval_games(_SPLIT.value, with_rules=False, key_iteration=_KEY_ITERATION.value)
  # Which games were won (indices into the split), so two policies scored on the same games and keys
  # can be compared game by game (experiments/paired_outcomes.py); then the inadmissible kinds and verbs.
  record = evaluation.outcome_record(episodes, run_dir=source, warm_start=_WARM.value, split=_SPLIT.value,
                                     with_rules=False, seed=int(config.seed), key_iteration=_KEY_ITERATION.value)
  record.update(evaluation.invalid_action_kinds(episodes))
  record.update(evaluation.action_verbs(episodes))
  print(json.dumps(record, indent=1))


if __name__ == "__main__":
  app.run(main)
