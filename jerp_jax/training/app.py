"""The shared body of the absl experiment apps (`experiments/alfworld.py`, `experiments/webshop.py`), and the
read-only trainer of the apps that score finished runs (`experiments/invalid_actions.py`, `policy_drift.py`)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Callable, Iterator

import jax
import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from jerp_jax import host_memory
from jerp_jax.training import evaluation, loop
from jerp_jax.training.metrics import quiet_library_logs

_TITLES = {"alfworld": "ALFWorld", "webshop": "WebShop"}


def define_flags(default_config: str) -> tuple[flags.FlagHolder, flags.FlagHolder]:
  """--config (an ml-collections config file, overridable with --config.a.b=...) and --checkpoint."""
  config = config_flags.DEFINE_config_file("config", default_config, "Experiment config file.")
  checkpoint = flags.DEFINE_string("checkpoint", None,
                                   "Hugging Face checkpoint directory (sets config.model.checkpoint).")
  return config, checkpoint


def make_main(env_name: str, config_flag: flags.FlagHolder, checkpoint_flag: flags.FlagHolder
              ) -> Callable[[list[str]], None]:
  """An absl `main`: train in the configured mode on `env_name`, then print the results table."""

  def main(argv: list[str]) -> None:
    from absl import app  # local: only needed for the usage error
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    config = config_flag.value
    apply_process_options(config)
    config.env.name = env_name
    if checkpoint_flag.value:
      config.model.checkpoint = checkpoint_flag.value
    results, trainer = loop.run(config)
    if results is None:
      logging.info("stopped early (SIGTERM); resume with the same command")
      return
    title = f"{_TITLES[env_name]}, mode={config.mode}, seed={config.seed}, run_dir={trainer.run_dir}"
    print(evaluation.format_table(results, len(trainer.pool), title=title))

  return main


def apply_process_options(config: ml_collections.ConfigDict) -> None:
  """Process-wide settings a config asks for; call before anything is compiled.

  `keep_freed_memory`: glibc keeps freed blocks (`jerp_jax.host_memory`). `compilation_cache_dir`: JAX's
  persistent compilation cache in that directory ("~" expanded), every program cached whatever its compile
  time, so a second run of the same config on the same machine and jax version loads its programs instead
  of compiling them (an entry is keyed by the program, its shardings, the backend and the compiler flags,
  so a stale entry cannot be picked up). "" leaves JAX's own setting (off, unless JAX_COMPILATION_CACHE_DIR
  is set); a directory that cannot be created is one warning and no cache.
  """
  if config.get("keep_freed_memory", False):
    host_memory.keep_freed_memory()
  cache_dir = os.path.expanduser(config.get("compilation_cache_dir", ""))
  if cache_dir:
    try:
      os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:  # a cache is an optimisation: say so once and run without it
      logging.warning("compilation_cache_dir=%r cannot be created (%s): running without the compilation cache",
                      cache_dir, e)
      return
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@contextlib.contextmanager
def reading_trainer(config: ml_collections.ConfigDict, *, num_games: int, resume_from: str = "",
                    init_from: str = "") -> Iterator[loop.Trainer]:
  """A Trainer over finished runs that writes only to a scratch run directory (removed on exit), closed on exit.

  resume_from: a run directory whose latest checkpoint is resumed (its checkpoints/ is linked, not copied);
  without it nothing is resumed. init_from: `warm_start.init_from` (what `Trainer.warm_start()` loads).
  num_games: `eval.num_games`. A copy of `config` is changed, not `config` itself. The warm start's expert
  agreement (`warm_start.agreement_games`) is turned off: a reader measures only what it plays.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  with tempfile.TemporaryDirectory() as scratch:
    config.run_dir = scratch
    config.resume = bool(resume_from)
    config.logging.tensorboard = False
    config.eval.num_games = num_games
    config.warm_start.init_from = init_from
    config.warm_start.agreement_games = 0
    if resume_from:
      _take_saved_kl_coef(config, resume_from)
      os.symlink(os.path.join(os.path.abspath(resume_from), "checkpoints"), os.path.join(scratch, "checkpoints"))
    trainer = loop.Trainer(config)
    try:
      yield trainer
    finally:
      trainer.close()


def _take_saved_kl_coef(config: ml_collections.ConfigDict, run_dir: str) -> None:
  """Sets config.rl.kl_coef to the one `run_dir` trained with (its config.json), when it has one.

  A full fine-tuning run with a KL term saves its frozen reference copy, so its checkpoints only restore
  into a trainer built with a KL term too; a reader does not train, so it takes the run's own setting
  rather than failing on the checkpoint's structure when the config given to it differs."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    saved = json.load(f).get("rl", {}).get("kl_coef")
  if saved is not None and float(saved) != float(config.rl.kl_coef):
    logging.info("reading %s with its own rl.kl_coef=%s (the config says %s)", run_dir, saved,
                 config.rl.kl_coef)
    config.rl.kl_coef = float(saved)
