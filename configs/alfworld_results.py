"""The results-table config (issues 5 and 6): the tiny CPU model with a longer behaviour-cloning warm
start than configs/base.py (400 expert games x 6 epochs, ~810 SFT steps, ~30 CPU-minutes), and sampled
evaluation: the greedy tiny policy repeats an invalid action forever once it has made one ("Nothing
happens." -> the same action), so greedy success stays at 0 while sampled episodes escape the loop.

  python -m experiments.results_table --config=configs/alfworld_results.py --seeds=0,1,2 --jobs=2

Everything else is configs/base.py (model, GRPO hyper-parameters, rule settings).
"""
from configs import base


def get_config():
  c = base.get_config()
  c.warm_start.num_games = 400  # 4,252 SFT rows from the expert
  c.warm_start.epochs = 6  # ~810 SFT steps of 32 rows
  c.rl.iterations = 6
  c.eval.interval = 6  # evaluate at the start (after the warm start) and at the end
  c.eval.num_games = 16  # per split
  c.eval.greedy = False  # temperature-1 sampling, keyed by (seed, iteration): reproducible
  return c
