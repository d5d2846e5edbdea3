"""training/builders.py: the rules shown in the warm start's SFT prompts (warm_start.rules_from)."""
import pytest

from configs import base
from jerp_jax.agent.episode import Episode, Step
from jerp_jax.rules import ops as ops_lib
from jerp_jax.rules.embeddings import HashedNgramEmbedder
from jerp_jax.rules import pool as pool_lib
from jerp_jax.training import builders
from jerp_jax.training.settings import ConfigError, Settings

_CLEAN = "pick_clean_then_place_in_recep"


def _pool_dir(tmp_path):
  pool = pool_lib.RulePool()  # task-type granularity, hashed n-gram embeddings (the defaults)
  pool.register_task(_CLEAN, "put a clean apple in fridge", _CLEAN)
  pool.apply_ops(_CLEAN, [ops_lib.Op("ADD", (), "Clean the object at the sinkbasin first.")], step=1)
  pool.save(str(tmp_path / "rules"))
  return str(tmp_path / "rules")


def _episodes(n):
  step = Step("obs", ["look"], "<think>x</think><action>look</action>", "look", True)
  return [Episode(f"alfworld/train/{i}", _CLEAN, "put a clean egg in microwave", [step], 1.0, True)
          for i in range(n)]


@pytest.mark.parametrize("fraction, expected_with_rules", [(1.0, 8), (0.0, 0)])
def test_sft_rules_come_from_the_source_pool_for_the_chosen_share(tmp_path, fraction, expected_with_rules):
  config = base.get_config()
  config.warm_start.rules_from = _pool_dir(tmp_path)
  config.warm_start.rules_fraction = fraction
  settings = Settings.from_config(config)
  episodes = _episodes(8)
  rules = builders.build_sft_rules(settings, episodes, HashedNgramEmbedder(), lambda t: len(t.split()))
  shown = [rules(ep) for ep in episodes]
  assert sum(bool(s) for s in shown) == expected_with_rules
  assert all(s in ([], ["Clean the object at the sinkbasin first."]) for s in shown)


def test_sft_rules_share_is_seeded_and_partial(tmp_path):
  config = base.get_config()
  config.warm_start.rules_from = _pool_dir(tmp_path)
  settings = Settings.from_config(config)  # rules_fraction 0.5
  episodes = _episodes(200)
  count = lambda: sum(bool(rules(ep)) for ep in episodes)  # noqa: E731
  rules = builders.build_sft_rules(settings, episodes, HashedNgramEmbedder(), lambda t: 1)
  first = count()
  rules = builders.build_sft_rules(settings, episodes, HashedNgramEmbedder(), lambda t: 1)
  assert first == count() and 70 < first < 130
  assert builders.build_sft_rules(Settings.from_config(base.get_config()), episodes, None, len) is None


def test_rules_from_without_a_pool_is_a_config_error(tmp_path):
  config = base.get_config()
  config.warm_start.rules_from = str(tmp_path)
  with pytest.raises(ConfigError, match=r"config\.warm_start\.rules_from"):
    Settings.from_config(config)
