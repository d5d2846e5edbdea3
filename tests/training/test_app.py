"""training/app.py: the reading trainer (the evaluation apps' view of a finished run) and the process options."""
import os
import subprocess
import sys

import jax
import numpy as np
from flax import nnx

from jerp_jax.rl import train_step
from jerp_jax.testing.tiny_configs import tiny_config
from jerp_jax.training import app, loop


def test_reading_trainer_reads_a_kl_run_with_a_config_without_kl(tmp_path):
  """A run trained with a KL term saved its reference copy; a reader given a config without KL (as the
  evaluation apps are, e.g. configs/alfworld_results.py) takes the run's rl.kl_coef and loads its policy."""
  source = tiny_config(str(tmp_path / "kl_run"), iterations=1)
  source.mode = "grpo"
  source.rl.kl_coef = 0.5
  source.eval.num_games = 1
  _, trained = loop.run(source)
  expected = jax.tree.leaves(nnx.state(train_step.policy_model(trained.state)))
  reader_config = tiny_config(str(tmp_path / "unused"), iterations=1)
  reader_config.rl.kl_coef = 0.0
  with app.reading_trainer(reader_config, num_games=1, resume_from=source.run_dir) as reader:
    assert reader.state.ref_params is not None and reader.iteration == 1
    got = jax.tree.leaves(nnx.state(train_step.policy_model(reader.state)))
  assert reader_config.rl.kl_coef == 0.0  # the caller's config is not changed
  assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))


_COMPILE_ONCE = """
import sys
import jax, jax.numpy as jnp, ml_collections
from jerp_jax.training import app
app.apply_process_options(ml_collections.ConfigDict({"compilation_cache_dir": sys.argv[1]}))
jax.jit(lambda x: x * 2.0 + 1.0)(jnp.ones(3)).block_until_ready()
print(jax.config.jax_compilation_cache_dir)
"""


def _compile_once(cache_dir: str, home: str) -> tuple[str, str]:
  """(jax_compilation_cache_dir after apply_process_options, stderr) of a fresh process that compiles once."""
  env = dict(os.environ, HOME=home)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  out = subprocess.run([sys.executable, "-c", _COMPILE_ONCE, cache_dir], env=env, capture_output=True,
                       text=True, timeout=120, check=True)
  return out.stdout.strip().splitlines()[-1], out.stderr


def test_compilation_cache_dir_caches_every_program_and_empty_or_unusable_leaves_it_off(tmp_path):
  home = str(tmp_path / "home")
  # "~" is the user's home; even a program that compiles in milliseconds is cached
  assert _compile_once("~/cache", home)[0] == os.path.join(home, "cache")
  assert any(name.startswith("jit_") for name in os.listdir(os.path.join(home, "cache")))
  assert _compile_once("", home)[0] == "None"
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  setting, log = _compile_once(str(blocker / "cache"), home)  # under a file: cannot be created
  assert setting == "None" and "compilation_cache_dir" in log and "running without" in log
