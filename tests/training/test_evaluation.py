"""training/evaluation.py: invalid_action_kinds and action_verbs on hand-made episodes, the paired sign test and
the seed-level sign-flip test by hand."""
import pytest

from jerp_jax.training.evaluation import (action_verbs, invalid_action_kinds, outcome_record, paired_comparison,
                                        seed_sign_flip_test)
from jerp_jax.agent.episode import Episode, Step

_ADMISSIBLE = ["go to fridge 1", "go to toilet 1", "look"]


def _step(action, valid):
  if action is None:  # no <action> block: a format error, the env gets the invalid marker
    return Step("obs", _ADMISSIBLE, "<think>x</think>", "<invalid>", False, well_formed=False)
  return Step("obs", _ADMISSIBLE, f"<think>x</think><action>{action}</action>", action, valid)


def test_each_kind_and_the_repeats():
  steps = [_step("go to toilet 1", True),
           _step("go to toilet 1", False),     # already there
           _step("go to sidetable 1", False),  # the room has none
           _step("take soap 1 from toilet 1", False),
           _step("take soap 1 from toilet 1", False),  # the same inadmissible action again
           _step(None, False),
           _step("cool egg 1", False),
           _step("go to fridge 1", True)]
  kinds = invalid_action_kinds([Episode("t/0", "pick", "g", steps, reward=0.0, won=False)])
  assert kinds == {"steps": 8, "invalid": 6, "go_to_current_place": 1, "go_to_missing_receptacle": 1,
                   "take_absent_object": 2, "repeats_previous_invalid": 1, "format_error": 1,
                   "other_verb:cool": 1}


def test_action_verbs_counts_both_sides_and_the_episodes_that_took_something():
  first = [_step("go to toilet 1", True), _step("take soap 1 from toilet 1", False), _step(None, False)]
  second = [_step("go to fridge 1", True), _step("take egg 1 from fridge 1", True),
            _step("take egg 1 from fridge 1", False)]
  out = action_verbs([Episode("t/0", "pick", "g", first, reward=0.0, won=False),
                      Episode("t/1", "pick", "g", second, reward=0.0, won=False)])
  assert out == {"admissible_verbs": {"go": 2, "take": 1},
                 "inadmissible_verbs": {"take": 2, "<format_error>": 1}, "episodes_with_take": 1}


def test_outcome_record_lists_the_won_games_by_index():
  steps = [_step("go to toilet 1", True)]
  won = [False, True, False, True, True]
  episodes = [Episode(f"t/{i}", "pick", "g", steps, reward=10.0 * w, won=w) for i, w in enumerate(won)]
  assert outcome_record(episodes) == {"won": 3, "games": 5, "won_games": [1, 3, 4]}
  assert outcome_record([]) == {"won": 0, "games": 0, "won_games": []}
  header = dict(run_dir="r", warm_start=True, split="valid_seen", with_rules=False, seed=2, key_iteration=8)
  assert outcome_record(episodes, **header) == {**header, "won": 3, "games": 5, "won_games": [1, 3, 4]}


def test_paired_comparison_against_hand_computed_binomial_tails():
  # 10 games: a alone wins 7 (games 0-6), b alone wins 1 (game 7), both win game 8, neither game 9.
  a = [True] * 7 + [False, True, False]
  b = [False] * 7 + [True, True, False]
  out = paired_comparison(a, b)
  assert (out["games"], out["a_wins"], out["b_wins"], out["a_only"], out["b_only"]) == (10, 8, 2, 7, 1)
  # n = 8 discordant games: P(X >= 7) = (C(8,7) + C(8,8)) / 2^8 = 9 / 256.
  assert out["p_a_better"] == pytest.approx(9 / 256)
  assert out["p_two_sided"] == pytest.approx(18 / 256)
  # Swapping the sides: P(X >= 1) = 1 - 1/256; the two-sided value does not change.
  swapped = paired_comparison(b, a)
  assert swapped["p_a_better"] == pytest.approx(255 / 256)
  assert swapped["p_two_sided"] == pytest.approx(18 / 256)


def test_paired_comparison_without_discordant_games_and_bad_lengths():
  out = paired_comparison([True, False], [True, False])
  assert (out["a_only"], out["b_only"], out["p_a_better"], out["p_two_sided"]) == (0, 0, 1.0, 1.0)
  with pytest.raises(ValueError, match="same games"):
    paired_comparison([True], [True, False])


def test_seed_sign_flip_test_against_hand_enumerated_flips():
  # Gaps 0.1, -0.05, 0.2 (sum 0.25). The 8 sign flips sum to +-0.35, +-0.25, +-0.15, +-0.05: two of them
  # (0.35, 0.25) reach 0.25, four reach |0.25|.
  out = seed_sign_flip_test([0.1, -0.05, 0.2])
  assert (out["seeds"], out["seeds_ahead"], out["seeds_behind"]) == (3, 2, 1)
  assert out["p_a_better"] == pytest.approx(2 / 8)
  assert out["p_two_sided"] == pytest.approx(4 / 8)
  assert out["mean_difference"] == pytest.approx(0.25 / 3)
  assert out["std_difference"] == pytest.approx((0.031666666 / 2) ** 0.5)
  # Every seed ahead: only the identity reaches the sum, so p = 2^-n; every seed behind: p = 1.
  assert seed_sign_flip_test([0.02] * 6)["p_a_better"] == pytest.approx(1 / 64)
  assert seed_sign_flip_test([-0.02] * 3)["p_a_better"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="seeds"):
    seed_sign_flip_test([])
