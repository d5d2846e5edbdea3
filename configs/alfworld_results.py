"""The results-table config (issues 5 and 6): the tiny CPU model with a longer behaviour-cloning warm
start than configs/base.py (1,200 expert games x 2 epochs, ~800 SFT steps with a cosine learning-rate
decay, ~40 minutes on 2 cores), the word-piece tiny tokenizer, and sampled evaluation on 48 games
per split: the greedy tiny policy
repeats an invalid action forever once it has made one ("Nothing happens." -> the same action), so
sampled episodes measure it better.

  python -m experiments.results_table --config=configs/alfworld_results.py --seeds=0,1,2 --jobs=2

Everything else is configs/base.py (model, GRPO hyper-parameters, rule settings).
"""
from configs import base


def get_config():
  c = base.get_config()
  # Word pieces: an object name is the same token in goal, observation and action, so the tiny model
  # can copy it (the phrase tokenizer's "take cloth " tokens gave 0% agreement on take steps).
  c.model.tokenizer = "builtin_words"
  c.warm_start.num_games = 1200  # ~13,000 SFT rows from the expert (fresh games beat more epochs)
  c.warm_start.epochs = 2
  c.warm_start.lr_schedule = "cosine"
  c.warm_start.warmup_steps = 20
  c.warm_start.final_lr_fraction = 0.1
  c.rl.iterations = 8
  c.eval.interval = 8  # evaluate at the start (after the warm start) and at the end
  c.eval.num_games = 48  # per split
  c.eval.greedy = False  # temperature-1 sampling, keyed by (seed, iteration): reproducible
  return c
