"""Lockstep rollouts: group seeding, rules in prompts, parsing wired to the env, finished episodes leave
the batch, TrainBatch packing (masks exactly on response tokens) and behaviour log-probs that equal a
full forward pass of the model."""
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jerp_jax.envs  # noqa: F401  (registers the environments)
from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.models import Decoder, ModelConfig
from jerp_jax.rl import rollout
from jerp_jax.rl.batch import validate_train_batch
from jerp_jax.sampling import SampleOutput, Sampler, Temperature
from jerp_jax.testing import tiny_tokenizer

ADMISSIBLE = ["go to box 1", "go to box 2", "look"]


class CorridorEnv:
  """Scripted env: reaching "box 1" wins; an episode is truncated after `seed` + 1 steps."""

  def __init__(self):
    self.resets, self.commands = [], []

  def reset(self, seed=None, options=None):
    self.resets.append((seed, options))
    self.seed, self.t = seed, 0
    info = dict(admissible_commands=list(ADMISSIBLE), goal="go to box 1", task_type=f"type{seed % 2}",
                task_id=f"corridor/{seed}", won=False)
    return f"You are in corridor {seed}. Your task is to: go to box 1.", info

  def step(self, command):
    self.commands.append(command)
    self.t += 1
    won = command == "go to box 1"
    obs = "You arrive at box 1." if won else "Nothing happens."
    info = dict(admissible_commands=list(ADMISSIBLE), won=won)
    return obs, float(won), won, self.t >= self.seed + 1, info


@pytest.fixture(scope="module")
def tokenizer():
  return tiny_tokenizer.load_tiny_tokenizer()


class ScriptedSampler:
  """Returns fixed responses per (turn, row) without a model; records the batch size of each call."""

  def __init__(self, tokenizer, script):
    self.tokenizer, self.script, self.batch_sizes, self.prompts = tokenizer, script, [], []

  def generate(self, state, prompts, **kwargs):
    turn = len(self.batch_sizes)
    self.batch_sizes.append(len(prompts))
    self.prompts.append([self.tokenizer.decode(p) for p in prompts])
    texts = [self.script(turn, row) for row in range(len(prompts))]
    tokens = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    logprobs = [np.full(len(t), -0.5, np.float32) for t in tokens]
    return SampleOutput(tokens, logprobs, ["stop_string"] * len(texts), texts,
                        [len(p) for p in prompts], 1, len(prompts), 0, 0)


def _respond(action):
  return agent_prompt.format_response(action)


def test_groups_share_seed_rules_and_finished_episodes_leave_the_batch(tokenizer):
  # Group 0 (seed 1): truncated after 2 steps; group 1 (seed 3): after 4 steps.
  envs = [CorridorEnv() for _ in range(4)]
  groups = [rollout.GroupSpec(seed=1, rules=("Go to box 1 first.",), rule_ids=("r7",)),
            rollout.GroupSpec(seed=3, options={"k": 1})]
  sampler = ScriptedSampler(tokenizer, lambda turn, row: _respond("go to box 2") if row != 1 or turn
                            else "no tags at all")
  config = rollout.RolloutConfig(group_size=2, max_turns=10, require_think=True)
  result = rollout.collect_rollouts(sampler, None, tokenizer, envs, groups, config)
  assert [env.resets for env in envs] == [[(1, None)]] * 2 + [[(3, {"k": 1})]] * 2
  assert sampler.batch_sizes == [4, 4, 2, 2]
  assert [ep.length for ep in result.episodes] == [2, 2, 4, 4]
  assert [(ep.group_index, ep.episode_index) for ep in result.episodes] == [(0, 0), (0, 1), (1, 0), (1, 1)]
  assert [ep.rule_ids for ep in result.episodes] == [["r7"], ["r7"], [], []]
  assert all("Rules learned from experience:\n1. Go to box 1 first." in p for p in sampler.prompts[0][:2])
  assert not any("Rules learned" in p for p in sampler.prompts[0][2:])
  # Row 1 of turn 0 had no action: invalid, the env got the invalid command.
  assert envs[1].commands[0] == "invalid action" and not result.episodes[1].steps[0].valid
  assert result.episodes[1].steps[1].valid and envs[1].commands[1] == "go to box 2"
  assert result.metrics["invalid_action_rate"] == pytest.approx(1 / 12)
  assert not result.episodes[1].steps[0].well_formed and result.episodes[1].steps[1].well_formed
  assert result.metrics["format_error_rate"] == pytest.approx(1 / 12)
  assert result.metrics["episode_length"] == pytest.approx(3.0)
  assert result.metrics["success"] == 0.0 and "success/type1" in result.metrics
  assert len(result.turns) == 12
  # History: turn 3 of group 1 shows the last 2 of its 3 past steps (H = 2).
  fourth = sampler.prompts[3][0]
  assert "Observation 3:" in fourth and "Observation 2:" in fourth and "Observation 1:" not in fourth
  assert "already taken 3 step(s)" in fourth


def test_won_episodes_stop_and_record_reward(tokenizer):
  envs = [CorridorEnv() for _ in range(2)]
  sampler = ScriptedSampler(tokenizer, lambda turn, row: _respond("Go to Box 1." if row == 0 or turn
                                                                  else "look"))
  config = rollout.RolloutConfig(group_size=2, max_turns=10)
  result = rollout.collect_rollouts(sampler, None, tokenizer, envs, [rollout.GroupSpec(seed=5)], config)
  first, second = result.episodes
  assert first.won and first.reward == 1.0 and first.length == 1 and first.steps[0].action == "go to box 1"
  assert second.won and second.length == 2 and second.actions == ["look", "go to box 1"]
  assert sampler.batch_sizes == [2, 1]
  assert result.metrics["success"] == 1.0


def test_wrong_env_count_is_rejected(tokenizer):
  with pytest.raises(ValueError, match="2 groups x 8 = 16 envs, got 3"):
    rollout.collect_rollouts(None, None, tokenizer, [CorridorEnv()] * 3,
                             [rollout.GroupSpec(0), rollout.GroupSpec(1)], rollout.RolloutConfig())


def test_train_batch_masks_response_tokens_exactly(tokenizer):
  envs = [CorridorEnv() for _ in range(2)]
  sampler = ScriptedSampler(tokenizer, lambda turn, row: _respond("go to box 2"))
  result = rollout.collect_rollouts(sampler, None, tokenizer, envs, [rollout.GroupSpec(seed=2)],
                                    rollout.RolloutConfig(group_size=2, max_turns=10))
  advantages = [[0.5, -1.0, 2.0], [0.0, 0.25, 1.0]]
  batch = rollout.rollout_train_batch(result, advantages, pad_id=tokenizer.pad_token_id, seq_multiple=64,
                                      batch_multiple=4)
  validate_train_batch(batch)
  assert batch.input_ids.shape[0] == 8 and batch.input_ids.shape[1] % 64 == 0
  for row, turn in enumerate(result.turns):
    p, r = len(turn.prompt_ids), len(turn.response_ids)
    np.testing.assert_array_equal(batch.input_ids[row, :p + r], turn.prompt_ids + turn.response_ids)
    expected = np.zeros(batch.input_ids.shape[1]); expected[p:p + r] = 1
    np.testing.assert_array_equal(batch.loss_mask[row], expected)
    np.testing.assert_allclose(batch.advantages[row, p:p + r], advantages[turn.episode][turn.step])
    np.testing.assert_allclose(batch.old_logprobs[row, p:p + r], -0.5)
  assert batch.loss_mask[len(result.turns):].sum() == 0
  dropped = rollout.rollout_train_batch(result, advantages, pad_id=0, drop_zero_advantage=True)
  assert dropped.input_ids.shape[0] == 5
  for multiple, rows in [(1, 8), (2, 8), (3, 6), (4, 8)]:  # 6 turns -> multiple x a power of two
    bucketed = rollout.rollout_train_batch(result, advantages, pad_id=0, batch_multiple=multiple,
                                           row_buckets=True)
    assert bucketed.input_ids.shape[0] == rows
  with pytest.raises(ValueError, match="episode 0 has 3 steps but 2 advantages"):
    rollout.rollout_train_batch(result, [[1.0, 1.0], [1.0] * 3], pad_id=0)


def test_alfworld_rollout_with_tiny_model_logprobs_equal_full_forward(tokenizer):
  """2 ALFWorld tasks x 2 episodes with a random tiny decoder: consistent TrainBatch, exact log-probs."""
  config = ModelConfig.tiny(vocab_size=len(tokenizer), eos_token_ids=(tokenizer.eos_token_id,),
                            pad_token_id=tokenizer.pad_token_id, max_position_embeddings=1024)
  model = Decoder(config, rngs=nnx.Rngs(3))
  sampler = Sampler(model, prompt_buckets=(512,), cache_buckets=(528,))
  envs = [gymnasium.make("jerp_jax/ALFWorld-v0", split="train") for _ in range(4)]
  groups = [rollout.GroupSpec(seed=7, rules=("Open the fridge first.",), rule_ids=("r1",)),
            rollout.GroupSpec(seed=8)]
  result = rollout.collect_rollouts(
      sampler, None, tokenizer, envs, groups,
      rollout.RolloutConfig(group_size=2, max_turns=2, max_new_tokens=12, max_prompt_tokens=512),
      rng=jax.random.key(0), sampling=Temperature(1.0))
  assert [ep.task_id for ep in result.episodes] == ["train/7", "train/7", "train/8", "train/8"]
  assert all(ep.length == 2 and ep.goal and ep.task_type for ep in result.episodes)
  assert len(result.turns) == 8
  assert all(len(t.response_ids) == len(t.logprobs) > 0 for t in result.turns)
  for ep in result.episodes:  # a random model rarely answers in format: invalid turns reach the env
    for step in ep.steps:
      assert step.valid == (step.action in step.admissible)
  batch = rollout.rollout_train_batch(result, [[1.0, -1.0]] * 4, pad_id=tokenizer.pad_token_id,
                                      batch_multiple=8)
  validate_train_batch(batch)
  assert batch.input_ids.shape[0] == 8 and batch.input_ids.shape[1] % 64 == 0
  logits = model(jnp.asarray(batch.input_ids), jnp.asarray(batch.attention_mask))
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  recomputed = jnp.take_along_axis(logp, jnp.asarray(batch.input_ids)[:, 1:, None], axis=-1)[..., 0]
  mask = batch.loss_mask[:, 1:] > 0
  assert mask.sum() == sum(len(t.response_ids) for t in result.turns)
  np.testing.assert_allclose(np.asarray(recomputed)[mask], batch.old_logprobs[:, 1:][mask], atol=2e-4)
  for key in ("tokens_per_s", "env_steps_per_s", "invalid_action_rate", "episode_length", "success"):
    assert key in result.metrics
  assert result.metrics["tokens_per_s"] > 0 and result.metrics["episode_length"] == 2.0
