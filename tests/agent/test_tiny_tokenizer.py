"""The shipped tiny tokenizer: size, exact round trips of environment text, single-token tags, chat
template, deterministic training and a reproducible rebuild of the shipped file."""
import gymnasium
import pytest

import jerp_jax.envs  # noqa: F401  (registers the environments)
from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
  return tiny_tokenizer.load_tiny_tokenizer()


def _episode_texts(env_id, env_name, steps=8, **kwargs):
  env = gymnasium.make(env_id, **kwargs)
  observation, info = env.reset(seed=3)
  goal, texts, history = info["goal"], [], []
  for _ in range(steps):
    texts.append(observation)
    texts.extend(info["admissible_commands"])
    texts.append(agent_prompt.build_prompt(agent_prompt.PromptConfig(env_name=env_name), task=goal,
                                           observation=observation, admissible=info["admissible_commands"],
                                           history=history, rules=["Open the fridge 1 before taking."]))
    action = env.unwrapped.expert_action()
    texts.append(agent_prompt.format_response(action, think="I look for it."))
    history.append((observation, action))
    observation, _, terminated, truncated, info = env.step(action)
    if terminated or truncated:
      break
  return texts


def test_size_and_special_ids(tokenizer):
  assert len(tokenizer) == tiny_tokenizer.VOCAB_SIZE == 2048
  assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
  assert tokenizer.eos_token_id != tokenizer.pad_token_id
  assert max(tokenizer.get_vocab().values()) == len(tokenizer) - 1


@pytest.mark.parametrize("env_id,env_name,kwargs", [
    ("jerp_jax/ALFWorld-v0", "alfworld", {"split": "valid_unseen"}),
    ("jerp_jax/WebShop-v0", "webshop", {"split": "test", "num_products": 100}),
])
def test_round_trips_environment_text(tokenizer, env_id, env_name, kwargs):
  for text in _episode_texts(env_id, env_name, **kwargs):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
  assert tokenizer.decode(tokenizer.encode("  odd  spacing\n\tand ünïcode € 3.5")) == "  odd  spacing\n\tand ünïcode € 3.5"


def test_tags_and_chat_tokens_are_single_tokens(tokenizer):
  for tag in tiny_tokenizer.TAG_TOKENS + tiny_tokenizer.SPECIAL_TOKENS:
    assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
  ids = tokenizer.encode("<think>x</think><action>go to cabinet 1</action>", add_special_tokens=False)
  pieces = tokenizer.convert_ids_to_tokens(ids)
  assert pieces[0] == "<think>" and pieces[-1] == "</action>" and "<action>" in pieces
  # Tags survive skip_special_tokens (they are plain added tokens); the chat markers do not.
  assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True).endswith("</action>")


def test_phrase_merges_keep_prompts_short(tokenizer):
  # "go to countertop " is one token and each digit another: an ALFWorld command costs few tokens.
  assert len(tokenizer.encode("go to countertop 1", add_special_tokens=False)) <= 3


def _name_ids(tok, text, name):
  """The token ids that make up the first occurrence of `name` (with its leading space) in `text`."""
  encoding = tok(text, add_special_tokens=False, return_offsets_mapping=True)
  start = text.index(" " + name)
  return [i for i, (a, b) in zip(encoding["input_ids"], encoding["offset_mapping"])
          if a < start + len(name) + 1 and b > start]


def test_word_pieces_make_object_names_copyable(tokenizer):
  """With word pieces an object name is the same tokens in the goal, the observation and the action; with
  phrase pieces it is not (the reason the word-piece tokenizer exists; BUILD_NOTES 2.2)."""
  words = tiny_tokenizer.load_tiny_tokenizer(tiny_tokenizer.TOKENIZER_FILES["words"])
  assert len(words) == tiny_tokenizer.VOCAB_SIZE
  texts = ["Your task is to: put a clean cloth in bathtubbasin.",
           "On the bathtubbasin 1, you see a soapbar 1, and a cloth 1.",
           "<think></think><action>take cloth 1 from bathtubbasin 1</action>"]
  assert len({tuple(_name_ids(words, t, "cloth")) for t in texts}) == 1
  assert len(_name_ids(words, texts[0], "cloth")) == 1
  assert len({tuple(_name_ids(tokenizer, t, "cloth")) for t in texts}) > 1
  for text in texts:
    assert words.decode(words.encode(text, add_special_tokens=False)) == text
  with pytest.raises(ValueError, match="pieces"):
    tiny_tokenizer.train_tokenizer(texts, vocab_size=300, pieces="letters")


def test_chat_template_renders_a_user_turn(tokenizer):
  text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
  assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  rendered = agent_prompt.build_prompt(agent_prompt.PromptConfig(), task="t", observation="o",
                                       admissible=["look"], tokenizer=tokenizer)
  assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_start|>assistant\n")


def test_training_is_deterministic():
  texts = [f"You arrive at cabinet {i}. On the cabinet {i}, you see a mug {i % 3}." for i in range(200)]
  first = tiny_tokenizer.train_tokenizer(texts, vocab_size=300).to_str()
  assert first == tiny_tokenizer.train_tokenizer(texts, vocab_size=300).to_str()
  with pytest.raises(ValueError, match="no room"):
    tiny_tokenizer.train_tokenizer(texts, vocab_size=200)


def test_missing_file_names_the_rebuild_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m jerp_jax.testing.tiny_tokenizer"):
    tiny_tokenizer.load_tiny_tokenizer(str(tmp_path / "absent.json"))


@pytest.mark.slow
@pytest.mark.parametrize("pieces", sorted(tiny_tokenizer.TOKENIZER_FILES))
def test_rebuild_reproduces_the_shipped_file(tmp_path, pieces):
  path = str(tmp_path / "rebuilt.json")
  tiny_tokenizer.build_tiny_tokenizer(path, pieces=pieces)
  with open(path) as rebuilt, open(tiny_tokenizer.TOKENIZER_FILES[pieces]) as shipped:
    assert rebuilt.read() == shipped.read()


def test_save_pretrained_round_trips_through_auto_tokenizer(tokenizer, tmp_path):
  """Exported with a policy checkpoint, the tokenizer loads back through the real-checkpoint path."""
  from jerp_jax.models import load_tokenizer  # pylint: disable=import-outside-toplevel
  tokenizer.save_pretrained(tmp_path)
  loaded = load_tokenizer(tmp_path)
  text = agent_prompt.build_prompt(agent_prompt.PromptConfig(), task="put a mug in cabinet",
                                   observation="You arrive at cabinet 1.", admissible=["look"],
                                   tokenizer=loaded) + "<think></think><action>look</action>"
  assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
  assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
  assert len(loaded) == len(tokenizer)
