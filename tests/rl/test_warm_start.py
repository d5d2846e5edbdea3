"""Warm start: expert rows are formatted exactly like rollout turns, SFT batches train only the response,
a few SFT steps lower the loss, and (slow) a briefly trained tiny model answers with admissible actions."""
import gymnasium
import jax
import numpy as np
import pytest
from flax import nnx

import jerp_jax.envs  # noqa: F401  (registers the environments)
from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.models import Decoder, ModelConfig
from jerp_jax.rl import rollout, train_step, warm_start
from jerp_jax.sampling import Greedy, SampleOutput, Sampler
from jerp_jax.testing import tiny_tokenizer

PROMPT = agent_prompt.PromptConfig(env_name="alfworld", history_length=2)


@pytest.fixture(scope="module")
def tokenizer():
  return tiny_tokenizer.load_tiny_tokenizer()


def _alfworld():
  return gymnasium.make("jerp_jax/ALFWorld-v0", split="train")


class ReplaySampler:
  """Answers each turn with the expert's recorded response (to rebuild the rollout's prompts)."""

  def __init__(self, tokenizer, responses):
    self.tokenizer, self.responses, self.prompts = tokenizer, responses, []

  def generate(self, state, prompts, **kwargs):
    self.prompts.extend(list(p) for p in prompts)
    text = self.responses[len(self.prompts) - 1]
    tokens = self.tokenizer.encode(text, add_special_tokens=False)
    return SampleOutput([tokens], [np.zeros(len(tokens), np.float32)], ["stop_string"], [text],
                        [len(prompts[0])], 1, 1, 0, 0)


def test_expert_rows_match_rollout_prompts_exactly(tokenizer):
  games = [rollout.GroupSpec(seed=0)]
  episode, = warm_start.collect_expert_episodes(_alfworld(), games, think="task")
  assert episode.won and episode.task_id == "train/0" and episode.task_type
  assert all(s.valid and s.action in s.admissible for s in episode.steps)
  assert episode.steps[0].response.startswith("<think>My task is to ")
  rows = warm_start.sft_rows([episode], tokenizer, PROMPT)
  replay = ReplaySampler(tokenizer, [s.response for s in episode.steps])
  result = rollout.collect_rollouts(replay, None, tokenizer, [_alfworld()], games,
                                    rollout.RolloutConfig(group_size=1, max_turns=50, prompt=PROMPT))
  assert result.episodes[0].won and result.episodes[0].actions == episode.actions
  assert [r.prompt_ids for r in rows] == replay.prompts
  for row, step in zip(rows, episode.steps):
    assert tokenizer.decode(row.response_ids) == step.response


def test_expert_think_names_goal_object_and_destination():
  env = _alfworld()
  episode, = warm_start.collect_expert_episodes(env, [rollout.GroupSpec(seed=3)], think="expert")
  focus = episode.steps[0].response[len("<think>"):episode.steps[0].response.index("</think>")]
  prefix, obj, link, place = focus.split(" ")
  assert prefix == "Goal:"
  assert link in ("to", "under") and obj in episode.goal and place in episode.goal
  assert all(s.response == agent_prompt.format_response(s.action, focus) for s in episode.steps)
  assert any(s.action.startswith(f"take {obj} ") for s in episode.steps)  # the object the expert takes


def test_think_style_errors_name_the_problem():
  with pytest.raises(ValueError, match="think must be one of"):
    warm_start.collect_expert_episodes(_alfworld(), [rollout.GroupSpec(seed=0)], think="yes")
  with pytest.raises(ValueError, match="think must be one of"):
    warm_start.WarmStartConfig(think="True")

  class NoThinkEnv:
    unwrapped = object()
  with pytest.raises(ValueError, match="expert_think"):
    warm_start.collect_expert_episodes(NoThinkEnv(), [rollout.GroupSpec(seed=0)], think="expert")


def test_sft_batches_mask_only_responses(tokenizer):
  episodes = warm_start.collect_expert_episodes(_alfworld(), [rollout.GroupSpec(seed=1)])
  rows = warm_start.sft_rows(episodes, tokenizer, PROMPT, append_eos=True)
  assert all(r.response_ids[-1] == tokenizer.eos_token_id for r in rows)
  config = warm_start.WarmStartConfig(batch_size=8, seq_multiple=64)
  seq_len = warm_start.rows_seq_len(rows, config)
  assert seq_len % 64 == 0 and seq_len >= max(len(r.prompt_ids) + len(r.response_ids) for r in rows)
  batches = list(warm_start.sft_batches(rows, batch_size=8, seq_len=seq_len, pad_id=0,
                                        rng=np.random.default_rng(0)))
  assert all(b.input_ids.shape == (8, seq_len) for b in batches)
  assert sum(b.loss_mask.sum() for b in batches) == sum(len(r.response_ids) for r in rows)
  for b in batches:
    for i in range(8):
      positions = np.flatnonzero(b.loss_mask[i])
      if positions.size:  # response tokens are the last real tokens of the row
        assert positions[-1] == b.attention_mask[i].sum() - 1
  bucketed = list(warm_start.sft_batches(rows, batch_size=4, seq_len=seq_len, pad_id=0,
                                         rng=np.random.default_rng(1), seq_buckets=(128, 256)))
  lengths = sorted(len(r.prompt_ids) + len(r.response_ids) for r in rows)
  expected = {next((b for b in (128, 256) if b >= n), seq_len) for n in lengths}
  assert {b.input_ids.shape[1] for b in bucketed} == expected
  assert sum(b.loss_mask.sum() for b in bucketed) == sum(len(r.response_ids) for r in rows)
  assert sorted(int(b.attention_mask[i].sum()) for b in bucketed for i in range(4)
                if b.loss_mask[i].any()) == lengths
  with pytest.raises(ValueError, match="seq_len=16"):
    warm_start.rows_seq_len(rows, warm_start.WarmStartConfig(seq_len=16))
  # num_sft_steps (the length of the learning-rate schedule) counts exactly the batches of every epoch.
  assert warm_start.num_sft_steps(rows, config) == 2 * len(batches)  # WarmStartConfig.epochs = 2
  assert warm_start.num_sft_steps(rows, warm_start.WarmStartConfig(
      epochs=3, batch_size=4, seq_buckets=(128, 256))) == 3 * len(bucketed)


def test_repeat_verbs_repeat_their_rows_in_every_epoch(tokenizer):
  episodes = warm_start.collect_expert_episodes(_alfworld(), [rollout.GroupSpec(seed=s) for s in (1, 2)])
  rows = warm_start.sft_rows(episodes, tokenizer, PROMPT)
  assert [r.action for r in rows] == [s.action for e in episodes for s in e.steps]
  takes = [r for r in rows if r.action.startswith("take ")]
  config = warm_start.WarmStartConfig(epochs=2, batch_size=4, repeat_verbs=("take",), repeat_factor=3)
  seen = warm_start.epoch_rows(rows, config)
  assert takes and len(seen) == len(rows) + 2 * len(takes)
  assert sum(r is t for r in seen for t in takes) == 3 * len(takes)
  assert warm_start.epoch_rows(rows, warm_start.WarmStartConfig(repeat_verbs=("take",))) == rows
  batches = list(warm_start.sft_batches(seen, batch_size=4, seq_len=warm_start.rows_seq_len(rows, config),
                                        pad_id=0, rng=np.random.default_rng(0)))
  assert warm_start.num_sft_steps(rows, config) == 2 * len(batches)


def _tiny_state(tokenizer, learning_rate, seed=0, **sizes):
  config = ModelConfig.tiny(vocab_size=len(tokenizer), eos_token_ids=(tokenizer.eos_token_id,),
                            pad_token_id=tokenizer.pad_token_id, max_position_embeddings=1024, **sizes)
  model = Decoder(config, rngs=nnx.Rngs(seed))
  optimizer = train_step.OptimizerConfig(learning_rate=learning_rate, weight_decay=0.0)
  return train_step.create_train_state(model, optimizer, mode="full")


def test_a_few_sft_steps_reduce_the_loss(tokenizer):
  # One expert game: all its rows form one batch, seen once per epoch (history[0] is the initial loss).
  episodes = warm_start.collect_expert_episodes(_alfworld(), [rollout.GroupSpec(seed=0)])
  rows = warm_start.sft_rows(episodes, tokenizer, PROMPT)
  state = _tiny_state(tokenizer, learning_rate=1e-2)
  config = warm_start.WarmStartConfig(epochs=6, batch_size=len(rows))
  state, history = warm_start.run_warm_start(state, rows, config, pad_id=tokenizer.pad_token_id)
  losses = [h["loss"] for h in history]
  assert len(losses) == 6 and losses[-1] < 0.6 * losses[0], losses
  assert all(np.isfinite(losses))


@pytest.mark.slow
def test_short_warm_start_gives_admissible_actions(tokenizer):
  games = [rollout.GroupSpec(seed=i) for i in range(4)]
  episodes = warm_start.collect_expert_episodes(_alfworld(), games)
  rows = warm_start.sft_rows(episodes, tokenizer, PROMPT)
  state = _tiny_state(tokenizer, learning_rate=3e-3, hidden_size=128, intermediate_size=256)
  state, history = warm_start.run_warm_start(state, rows, warm_start.WarmStartConfig(epochs=40, batch_size=16),
                                             pad_id=tokenizer.pad_token_id)
  assert history[-1]["loss"] < 0.5 * history[0]["loss"]
  sampler = Sampler(train_step.policy_model(state))
  envs = [_alfworld() for _ in games]
  result = rollout.collect_rollouts(sampler, None, tokenizer, envs, games,
                                    rollout.RolloutConfig(group_size=1, max_turns=6, max_new_tokens=16,
                                                          max_prompt_tokens=1000, prompt=PROMPT),
                                    sampling=Greedy(), rng=jax.random.key(0))
  assert result.metrics["invalid_action_rate"] < 0.5, result.metrics


class ListSampler:
  """Answers prompt i (in call order, across batches) with texts[i]."""

  def __init__(self, texts):
    self.texts, self.seen = list(texts), 0

  def generate(self, state, prompts, **kwargs):
    texts = self.texts[self.seen:self.seen + len(prompts)]
    self.seen += len(prompts)
    return SampleOutput([[0]] * len(texts), [np.zeros(1, np.float32)] * len(texts), ["stop_string"] * len(texts),
                        texts, [len(p) for p in prompts], 1, len(prompts), 0, 0)


def test_expert_agreement_counts_matching_greedy_actions(tokenizer):
  episodes = warm_start.collect_expert_episodes(_alfworld(), [rollout.GroupSpec(seed=s) for s in (1, 2)])
  steps = [step for episode in episodes for step in episode.steps]
  expert = [agent_prompt.format_response(step.action) for step in steps]
  result = warm_start.expert_agreement(ListSampler(expert), None, tokenizer, episodes, PROMPT,
                                       max_new_tokens=24, batch_size=5)
  assert result["agreement"] == 1.0 and result["agreement_valid"] == 1.0
  assert result["agreement_steps"] == len(steps)
  # Every other answer replaced: an admissible but different command (valid, disagrees) or no action.
  answers, agree, valid, verb = [], 0, 0, 0
  for i, step in enumerate(steps):
    first = step.action.split()[0]
    others = [a for a in step.admissible if a != step.action]  # same verb first on even steps
    other = sorted(others, key=lambda a: (a.split()[0] == first) != (i % 2 == 0))[0]
    answers.append(expert[i] if i % 3 == 0 else agent_prompt.format_response(other) if i % 3 == 1 else "hello")
    agree, valid = agree + (i % 3 == 0), valid + (i % 3 != 2)
    verb += i % 3 == 0 or (i % 3 == 1 and other.split()[0] == step.action.split()[0])
  assert 0 < verb - agree < len(steps) // 3  # some replacements share the expert's verb, not all
  result = warm_start.expert_agreement(ListSampler(answers), None, tokenizer, episodes, PROMPT,
                                       max_new_tokens=24, batch_size=64)
  assert result["agreement"] == pytest.approx(agree / len(steps))
  assert result["agreement_valid"] == pytest.approx(valid / len(steps))
  assert result["agreement_verb"] == pytest.approx(verb / len(steps))
  take = [i for i, step in enumerate(steps) if step.action.startswith("take ")]
  assert take and result["agreement/take"] == pytest.approx(np.mean([i % 3 == 0 for i in take]))


def test_mistaken_command_changes_one_instance_number_to_a_non_admissible_command():
  rng = np.random.default_rng(0)
  admissible = ["take apple 1 from countertop 1", "go to cabinet 1", "go to cabinet 2"]
  for _ in range(50):
    mistake = warm_start.mistaken_command("take apple 1 from countertop 1", admissible, rng)
    assert mistake not in admissible and mistake.startswith("take apple ") and " from countertop " in mistake
    words, expert_words = mistake.split(), "take apple 1 from countertop 1".split()
    assert sum(a != b for a, b in zip(words, expert_words)) == 1 and len(words) == len(expert_words)
  assert warm_start.mistaken_command("look", admissible, rng) is None
  with pytest.raises(ValueError, match="mistake_rate"):
    warm_start.collect_expert_episodes(_alfworld(), [rollout.GroupSpec(seed=0)], mistake_rate=1.0)


def test_injected_mistakes_show_the_expert_recovering_and_are_never_targets(tokenizer):
  """With mistake_rate 0.3 the expert still wins every game; each mistake is an inadmissible step that
  the env answers "Nothing happens.", the next prompt shows it in its history, and no SFT row trains on
  it; without mistakes the same games give the plain demonstrations."""
  games = [rollout.GroupSpec(seed=i) for i in range(6)]
  plain = warm_start.collect_expert_episodes(_alfworld(), games)
  noisy = warm_start.collect_expert_episodes(_alfworld(), games, mistake_rate=0.3, seed=1)
  assert all(ep.won for ep in plain + noisy)
  mistakes = [(ep, i) for ep in noisy for i, st in enumerate(ep.steps) if not st.valid]
  assert len(mistakes) >= 5
  for ep, i in mistakes:
    assert ep.steps[i].action not in ep.steps[i].admissible
    assert ep.steps[i + 1].observation == "Nothing happens."
  rows = warm_start.sft_rows(noisy, tokenizer, PROMPT)
  assert len(rows) == sum(len(ep.steps) for ep in noisy) - len(mistakes)
  assert all(row.action in step.admissible for row, step in
             zip(rows, [st for ep in noisy for st in ep.steps if st.valid]))
  ep, i = mistakes[0]
  index = sum(st.valid for st in ep.steps[:i + 1]) + sum(sum(st.valid for st in e.steps)
                                                          for e in noisy[:noisy.index(ep)])
  recovery = tokenizer.decode(rows[index].prompt_ids)
  assert ep.steps[i].action in recovery and "Nothing happens." in recovery
  assert [len(ep.steps) for ep in warm_start.collect_expert_episodes(_alfworld(), games)] == \
      [len(ep.steps) for ep in plain]
