"""GRPO / GiGPO advantages and reward shaping against hand-computed numbers."""
import numpy as np
import pytest

from jerp_jax.agent.episode import Episode, Step
from jerp_jax.rl import advantages as adv


def test_grpo_unbiased_std_hand_computed():
  out = np.asarray(adv.grpo_advantages(np.array([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]])))
  # Group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.577350.
  np.testing.assert_allclose(out[0], np.array([1, -1, -1, 1]) * 0.5 / (0.5773503 + 1e-6),
                             rtol=1e-6)
  # Group 1: mean 2, centered [1, -1, 0, 0], std sqrt(2 / 3) = 0.816497.
  np.testing.assert_allclose(out[1], np.array([1, -1, 0, 0]) / (0.8164966 + 1e-6), rtol=1e-6)


def test_grpo_mean_only_and_equal_groups_are_zero():
  out = adv.grpo_advantages(np.array([[3.0, 1.0, 2.0], [0.1, 0.1, 0.1]]), normalize_std=False)
  np.testing.assert_allclose(out[0], [1.0, -1.0, 0.0], atol=1e-7)
  np.testing.assert_array_equal(out[1], 0.0)  # Exactly zero, not rounding noise / eps.
  np.testing.assert_array_equal(adv.grpo_advantages(np.array([[0.7, 0.7, 0.7, 0.7]])), 0.0)
  np.testing.assert_array_equal(adv.grpo_advantages(np.array([[5.0], [2.0]])), 0.0)
  with pytest.raises(ValueError, match="num_groups, group_size"):
    adv.grpo_advantages(np.ones(4))


def test_discounted_returns_hand_computed():
  rewards = np.array([[0.0, -0.1, 10.0, 7.0], [1.0, 2.0, 0.0, 0.0]])
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  out = np.asarray(adv.discounted_returns(rewards, mask, 0.95))
  np.testing.assert_allclose(out[0], [0.95 * 9.4, -0.1 + 9.5, 10.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(out[1], [1.0 + 0.95 * 2.0, 2.0, 0.0, 0.0], rtol=1e-6)


def test_segment_normalize_hand_computed():
  values = np.array([1.0, 2.0, 3.0, 10.0, 10.0, 7.0, 99.0])
  ids = np.array([0, 0, 0, 1, 1, 2, 0])
  valid = np.array([1, 1, 1, 1, 1, 1, 0], bool)
  out = np.asarray(adv.segment_normalize(values, ids, valid, num_segments=3))
  # Group 0: mean 2, unbiased std 1 (the invalid 99 is excluded); group 1 equal; group 2 single.
  np.testing.assert_allclose(out, [-1 / (1 + 1e-6), 0, 1 / (1 + 1e-6), 0, 0, 0, 0], atol=1e-7)
  out = np.asarray(adv.segment_normalize(values, ids, valid, num_segments=3, normalize_std=False))
  np.testing.assert_allclose(out, [-1, 0, 1, 0, 0, 0, 0], atol=1e-7)


def test_shaped_step_rewards():
  out = adv.shaped_step_rewards(np.array([1.0, 0.0]), np.array([[0, 0, 0], [0, 1, 0]], bool),
                                np.array([[1, 1, 1], [1, 1, 0]], np.float32))
  np.testing.assert_allclose(out, [[0, 0, 10], [0, -0.1, 0]], atol=1e-7)


def _two_episodes():
  won = Episode("t/0", "pick", "g", [Step("A", [], "", "go", True), Step("B", [], "", "put", True)],
                reward=1.0, won=True, group_index=0, episode_index=0)
  lost = Episode("t/0", "pick", "g",
                 [Step("A", [], "", "x", True), Step("C", [], "?", "?", False, well_formed=False)],
                 reward=0.0, won=False, group_index=0, episode_index=1)
  return [won, lost]


def test_gigpo_hand_computed():
  # Shaped: won -> steps [0, 10], return [9.5, 10]; lost -> steps [0, -0.1], return [-0.095, -0.1].
  # Episode (mean-norm): totals 10, -0.1 -> +-5.05. Anchor "A": returns 9.5, -0.095 -> +-4.7975.
  # "B" and "C" are singletons -> 0.
  episodes = _two_episodes()
  cfg = adv.AdvantageConfig(estimator="gigpo", normalize_std=False)
  out = adv.episode_step_advantages(episodes, group_size=2, cfg=cfg)
  np.testing.assert_allclose(out[0], [5.05 + 4.7975, 5.05], rtol=1e-5)
  np.testing.assert_allclose(out[1], [-5.05 - 4.7975, -5.05], rtol=1e-5)
  grpo = adv.episode_step_advantages(episodes, group_size=2, cfg=adv.AdvantageConfig())
  # Two values: unbiased std = |10.1| / sqrt(2) -> +-1/sqrt(2) (up to eps).
  np.testing.assert_allclose(grpo[0], [0.70710678] * 2, rtol=1e-5)
  np.testing.assert_allclose(grpo[1], [-0.70710678] * 2, rtol=1e-5)


def _episode(group, index, steps, won):
  return Episode("t/0", "pick", "g", steps, reward=float(won), won=won, group_index=group,
                 episode_index=index)


def test_penalty_counts_format_errors_only_unless_inadmissible_is_asked():
  # Episode 1 has a well-formed but inadmissible action ("take apple 9" when no such command exists);
  # episode 0 has only admissible actions. Neither wins.
  ok = [Step("A", ["go"], "", "go", True), Step("B", ["go"], "", "go", True)]
  inadmissible = [Step("A", ["go"], "", "go", True),
                  Step("B", ["go"], "", "take apple 9", False, well_formed=True)]
  episodes = [_episode(0, 0, ok, False), _episode(0, 1, inadmissible, False)]
  fmt = adv.episode_step_advantages(episodes, 2, adv.AdvantageConfig(normalize_std=False))
  assert fmt == [[0.0, 0.0], [0.0, 0.0]]  # verl-agent: equal returns (0, 0), no signal.
  strict = adv.episode_step_advantages(
      episodes, 2, adv.AdvantageConfig(normalize_std=False, penalize="inadmissible"))
  np.testing.assert_allclose(strict, [[0.05, 0.05], [-0.05, -0.05]], rtol=1e-6)  # returns 0, -0.1
  with pytest.raises(ValueError, match="penalize"):
    adv.AdvantageConfig(penalize="everything")


def test_episode_turn_weighting_gives_each_episode_equal_total_weight():
  # A 1-step win and a 3-step loss: r - mean = +-5. Mean length 2 -> weights 2/1 and 2/3.
  win = [Step("A", ["put"], "", "put", True)]
  loss = [Step("A", ["go"], "", "go", True)] * 3
  episodes = [_episode(0, 0, win, True), _episode(0, 1, loss, False)]
  uniform = adv.episode_step_advantages(episodes, 2, adv.AdvantageConfig(normalize_std=False))
  np.testing.assert_allclose(uniform[0], [5.0])
  np.testing.assert_allclose(uniform[1], [-5.0] * 3)
  weighted = adv.episode_step_advantages(
      episodes, 2, adv.AdvantageConfig(normalize_std=False, turn_weighting="episode"))
  np.testing.assert_allclose(weighted[0], [10.0], rtol=1e-6)
  np.testing.assert_allclose(weighted[1], [-10.0 / 3] * 3, rtol=1e-6)
  # Per episode the step weights add up to the same total (+10 and -10), and the batch keeps its
  # total absolute weight (4 steps x 5 = 20 before, 10 + 10 after).
  assert sum(weighted[0]) == pytest.approx(-sum(weighted[1]))
  with pytest.raises(ValueError, match="turn_weighting"):
    adv.AdvantageConfig(turn_weighting="token")


def test_step_penalty_lands_on_the_erring_step_only():
  # Group of 2, neither wins; episode 1's second step is inadmissible (well formed). penalize=
  # "inadmissible": returns 0 and -0.1 -> r - mean = +-0.05 on every step; step_penalty 0.5 then takes
  # 0.5 more from that one step only (after the episode weighting, which is 1 here: equal lengths).
  ok = [Step("A", ["go"], "", "go", True), Step("B", ["go"], "", "go", True)]
  bad = [Step("A", ["go"], "", "go", True), Step("B", ["go"], "", "take apple 9", False, well_formed=True)]
  episodes = [_episode(0, 0, ok, False), _episode(0, 1, bad, False)]
  cfg = adv.AdvantageConfig(normalize_std=False, penalize="inadmissible", step_penalty=0.5,
                            turn_weighting="episode")
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg),
                             [[0.05, 0.05], [-0.05, -0.55]], rtol=1e-6)
  # Under the default scope ("format") a well-formed inadmissible step is not penalised at all.
  fmt = adv.episode_step_advantages(episodes, 2, adv.AdvantageConfig(normalize_std=False, step_penalty=0.5))
  assert fmt == [[0.0, 0.0], [0.0, 0.0]]
  with pytest.raises(ValueError, match="step_penalty"):
    adv.AdvantageConfig(step_penalty=-1.0)


def test_negative_weight_scales_only_the_push_down_side():
  # Returns 10 (won) and -0.1 (one format error): r - mean = +5.05 / -5.05 on every step.
  # negative_weight 0.2 keeps +5.05 and scales -5.05 to -1.01; weight 0 leaves only the won episode.
  episodes = _two_episodes()
  cfg = lambda w: adv.AdvantageConfig(normalize_std=False, negative_weight=w)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg(1.0)),
                             [[5.05, 5.05], [-5.05, -5.05]], rtol=1e-6)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg(0.2)),
                             [[5.05, 5.05], [-1.01, -1.01]], rtol=1e-6)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg(0.0)),
                             [[5.05, 5.05], [0.0, 0.0]], rtol=1e-6)
  with pytest.raises(ValueError, match="negative_weight"):
    adv.AdvantageConfig(negative_weight=1.5)


def test_credit_inadmissible_false_clips_only_inadmissible_steps():
  # A won episode whose first step was inadmissible ("Nothing happens."), against a lost one.
  # Returns 10 and 0 -> +-5 on every step; without credit the won episode's inadmissible step gets 0,
  # the lost episode's inadmissible step keeps its -5 (scaled by negative_weight 0.5 to -2.5).
  won = [Step("A", ["go"], "", "take x 1", False, well_formed=True), Step("B", ["put"], "", "put", True)]
  lost = [Step("A", ["go"], "", "go", True), Step("C", ["go"], "", "take y 1", False, well_formed=True)]
  episodes = [_episode(0, 0, won, True), _episode(0, 1, lost, False)]
  cfg = adv.AdvantageConfig(normalize_std=False, credit_inadmissible=False, negative_weight=0.5)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg), [[0.0, 5.0], [-2.5, -2.5]],
                             rtol=1e-6)
  # With a step penalty on inadmissible steps the clipped step then gets the penalty alone.
  cfg = adv.AdvantageConfig(normalize_std=False, credit_inadmissible=False, penalize="inadmissible",
                            step_penalty=0.5, invalid_penalty=0.0)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg), [[-0.5, 5.0], [-5.0, -5.5]],
                             rtol=1e-6)


def test_blame_inadmissible_false_clips_only_inadmissible_steps_from_below():
  # The same two episodes: returns 10 and 0 -> +-5 per step. Without blame the lost episode's
  # inadmissible step gets 0 and its admissible step keeps -5; the won episode is untouched.
  won = [Step("A", ["go"], "", "take x 1", False, well_formed=True), Step("B", ["put"], "", "put", True)]
  lost = [Step("A", ["go"], "", "go", True), Step("C", ["go"], "", "take y 1", False, well_formed=True)]
  episodes = [_episode(0, 0, won, True), _episode(0, 1, lost, False)]
  cfg = adv.AdvantageConfig(normalize_std=False, blame_inadmissible=False)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg), [[5.0, 5.0], [-5.0, 0.0]],
                             rtol=1e-6)
  # Neither credit nor blame: inadmissible steps carry nothing on either side.
  cfg = adv.AdvantageConfig(normalize_std=False, blame_inadmissible=False, credit_inadmissible=False)
  np.testing.assert_allclose(adv.episode_step_advantages(episodes, 2, cfg), [[0.0, 5.0], [-5.0, 0.0]],
                             rtol=1e-6)


def test_anchor_group_ids_and_errors():
  ids, n = adv.anchor_group_ids([["A", "B"], ["A", "C", "B"], ["A"]], [0, 0, 1])
  assert n == 4  # (0,A) (0,B) (0,C) (1,A): the same text in another task group is another anchor.
  np.testing.assert_array_equal(ids, [[0, 1, -1], [0, 2, 1], [3, -1, -1]])
  with pytest.raises(ValueError, match="expected group_size=3"):
    adv.episode_step_advantages(_two_episodes(), group_size=3)
  with pytest.raises(ValueError, match="estimator"):
    adv.AdvantageConfig(estimator="ppo")
