"""The results-table config (issues 5 and 6): the tiny CPU model with a longer behaviour-cloning warm
start than configs/base.py, so the policy starts above zero success and the modes can be compared.

  python -m experiments.results_table --config=configs/alfworld_results.py --seeds=0,1,2 --jobs=2

Everything else is configs/base.py (model, GRPO hyper-parameters, rule settings).
"""
from configs import base


def get_config():
  c = base.get_config()
  c.warm_start.num_games = 400  # ~4,200 SFT rows from the expert
  c.warm_start.epochs = 6  # ~800 SFT steps of 32 rows
  c.rl.iterations = 8
  c.eval.interval = 8  # evaluate at the start (after the warm start) and at the end
  c.eval.num_games = 20  # per split
  return c
