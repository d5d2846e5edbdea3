"""Every config file in configs/ builds and passes the trainer's validation (the real-checkpoint ones once
given a checkpoint directory; without one they name it)."""
import importlib
import os

import pytest

from jerp_jax.training.settings import ConfigError, Settings

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
NAMES = sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f != "__init__.py")


def test_the_config_directory_is_found():
  assert {"base", "alfworld_results", "alfworld_gigpo"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_validates(name, tmp_path):
  """The tiny-model configs validate as they are; a real-checkpoint config (no tokenizer of its own)
  first names the missing checkpoint, then validates once given a directory (settings only check it exists)."""
  config = importlib.import_module(f"configs.{name}").get_config()
  if not config.model.checkpoint and not config.model.tokenizer:
    with pytest.raises(ConfigError, match=r"config\.model\.checkpoint"):
      Settings.from_config(config)
    config.model.checkpoint = str(tmp_path)
  Settings.from_config(config)
