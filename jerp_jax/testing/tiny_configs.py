"""The tiny trainer config shared by the training tests (smoke, multi-host, preemption)."""


def tiny_config(run_dir: str, iterations: int = 2):
  """The tiny trainer, shrunk for tests: random 1-layer policy, no warm start, 2 x 2 episodes of at most
  3 turns per iteration, one eval game. An entropy bonus and a KL term keep every turn in the batch, so
  the parameters move even when all rewards tie (a random policy rarely wins)."""
  from configs import base
  c = base.get_config()
  c.run_dir = run_dir
  c.compilation_cache_dir = ""  # tests choose their cache through JAX_COMPILATION_CACHE_DIR, or none
  c.sampling.pack_prompts = False  # one prefill shape per bucket (packing has its own sampler tests)
  c.model.hidden_size, c.model.intermediate_size, c.model.num_layers = 64, 128, 1
  c.model.num_heads, c.model.num_kv_heads = 2, 1
  c.warm_start.enabled = False
  c.rl.iterations = iterations
  c.rl.tasks_per_iteration = 2
  c.rl.group_size = 2
  c.rl.micro_batch_size = 4
  c.rl.entropy_coef = 0.01
  c.rl.kl_coef = 0.01
  c.agent.max_new_tokens = 12
  c.env.max_steps = 3
  c.env.eval_splits = ("valid_seen",)
  c.eval.interval = 0
  c.eval.num_games = 2
  c.checkpoint.interval = 1
  c.logging.tensorboard = False
  c.rules.granularity = "global"
  return c
