"""The tokenizer of the tiny CPU model: a small byte-level BPE trained on the environments' own text.

Two shipped variants differ only in pre-tokenization (PIECE_PATTERNS):
- "phrases" (`tiny_tokenizer.json`, config `model.tokenizer="builtin"`): pieces are not split at spaces, so
  frequent phrases become single tokens ("take cloth ", "go to cabinet "): short prompts, but an object
  name is a different token in the goal, the observation and the action, so a small model cannot copy it
  (measured: 0% expert agreement on "take" steps, BUILD_NOTES 2.2).
- "words" (`tiny_tokenizer_words.json`, `model.tokenizer="builtin_words"`): GPT-2-style word pieces
  (" cloth" is the same token everywhere): ~1.6x longer prompts, copyable names (it did not raise the
  take-step agreement either, at 810 SFT steps).
Text round-trips exactly either way (byte-level).

Trained with the `tokenizers` library on text the built-in environments generate (ALFWorld intros,
observations, admissible commands and goals; WebShop pages and instructions), the agent prompt template
and the answer format. `<think>`, `</think>`, `<action>`, `</action>` are added tokens (always one token
each, kept when decoding with skip_special_tokens); `<|endoftext|>` (padding), `<|im_start|>` and
`<|im_end|>` (end of turn, the EOS) are special tokens of a Qwen-style chat template. It is loaded as a
`transformers.PreTrainedTokenizerFast`, so the code that serves real checkpoints' AutoTokenizer serves it.

The file ships as `jerp_jax/testing/data/tiny_tokenizer.json`; rebuild it (deterministically) with
`python -m jerp_jax.testing.tiny_tokenizer`.
"""
from __future__ import annotations

import os
import random
from typing import Iterable, Iterator

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers
import transformers

from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.atomic_io import atomic_write

TOKENIZER_FILES = {"phrases": os.path.join(os.path.dirname(__file__), "data", "tiny_tokenizer.json"),
                   "words": os.path.join(os.path.dirname(__file__), "data", "tiny_tokenizer_words.json")}
TOKENIZER_FILE = TOKENIZER_FILES["phrases"]
VOCAB_SIZE = 2048  # total, special and added tokens included
PAD_TOKEN, CHAT_START, CHAT_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, CHAT_START, CHAT_END)
TAG_TOKENS = (agent_prompt.THINK_OPEN, agent_prompt.THINK_CLOSE, agent_prompt.ACTION_OPEN,
              agent_prompt.ACTION_CLOSE)
# Pre-tokenization, "phrases": every digit and every run of other non-letters (except spaces) is its own
# piece; runs of letters AND spaces stay whole, so BPE may merge across words ("go to cabinet " is one
# token). "words": a word or a digit with its leading space, a run of punctuation, or a lone space.
PIECE_PATTERNS = {"phrases": r"[0-9]|[^A-Za-z0-9 ]+", "words": r" ?[0-9]| ?[A-Za-z]+|[^A-Za-z0-9 ]+"}
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE, pieces: str = "phrases"
                    ) -> tokenizers.Tokenizer:
  """Trains a byte-level BPE on `texts`; the result has exactly `vocab_size` tokens when the text allows.

  pieces: "phrases" or "words" (PIECE_PATTERNS: what BPE may merge across).
  """
  if pieces not in PIECE_PATTERNS:
    raise ValueError(f"pieces must be one of {sorted(PIECE_PATTERNS)}, got {pieces!r}")
  num_fixed = len(SPECIAL_TOKENS) + len(TAG_TOKENS)
  if vocab_size <= 256 + num_fixed:
    raise ValueError(f"vocab_size {vocab_size} leaves no room for merges above the 256 byte tokens")
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(PIECE_PATTERNS[pieces]), "isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size - len(TAG_TOKENS), special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tokenizer.train_from_iterator(texts, trainer)
  tokenizer.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
  return tokenizer


def wrap_tokenizer(tokenizer: tokenizers.Tokenizer) -> transformers.PreTrainedTokenizerFast:
  """A `PreTrainedTokenizerFast` around a trained tokenizer: EOS `<|im_end|>`, pad `<|endoftext|>`, chat template."""
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, eos_token=CHAT_END, pad_token=PAD_TOKEN,
      additional_special_tokens=[CHAT_START], chat_template=CHAT_TEMPLATE, padding_side="left",
      model_max_length=8192, clean_up_tokenization_spaces=False)


def load_tiny_tokenizer(path: str = TOKENIZER_FILE) -> transformers.PreTrainedTokenizerFast:
  """Loads the shipped tiny tokenizer (or one written by `build_tiny_tokenizer`)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"tiny tokenizer file {path} is missing; rebuild it with "
                            "`python -m jerp_jax.testing.tiny_tokenizer`")
  return wrap_tokenizer(tokenizers.Tokenizer.from_file(path))


def _play_text(env, *, seed: int, rng: random.Random, max_steps: int, random_prob: float,
               prompt_config: agent_prompt.PromptConfig) -> Iterator[str]:
  """Yields the text of one episode: expert actions mixed with random admissible ones."""
  observation, info = env.reset(seed=seed)
  goal = info.get("goal", "")
  yield goal
  history: list[tuple[str, str]] = []
  for _ in range(max_steps):
    admissible = list(info.get("admissible_commands", []))
    yield observation
    yield "\n".join(admissible)
    if rng.random() < random_prob and admissible:
      action = rng.choice(admissible)
    else:
      action = env.unwrapped.expert_action()
    response = agent_prompt.format_response(action)
    if len(history) % 4 == 0:  # a sample of full chat turns teaches the template's merges
      text = agent_prompt.user_message(prompt_config, task=goal, observation=observation,
                                       admissible=admissible, history=history)
      yield f"{CHAT_START}user\n{text}{CHAT_END}\n{CHAT_START}assistant\n{response}{CHAT_END}\n"
    else:
      yield response
    history.append((observation, action))
    observation, _, terminated, truncated, info = env.step(action)
    if terminated or truncated:
      yield observation
      return


def environment_corpus(*, alfworld_games: int = 120, webshop_goals: int = 60, seed: int = 0,
                       max_steps: int = 30, random_prob: float = 0.2) -> Iterator[str]:
  """Deterministic training text from the built-in environments.

  ALFWorld: alfworld_games games spread over train / valid_seen / valid_unseen, the expert's actions
  mixed with random admissible ones (probability random_prob) so non-expert feedback appears too.
  WebShop: webshop_goals train goals played by the expert alone (its expert tracks the pages it chose).
  """
  import gymnasium  # pylint: disable=g-import-not-at-top
  import jerp_jax.envs  # pylint: disable=g-import-not-at-top,unused-import  (registers the envs)

  rng = random.Random(seed)
  for role in ("system", "user", "assistant"):
    yield f"{CHAT_START}{role}\n{CHAT_END}\n"
  specs = [("jerp_jax/ALFWorld-v0", "alfworld", {"split": split}, alfworld_games // 3, random_prob)
           for split in ("train", "valid_seen", "valid_unseen")]
  specs.append(("jerp_jax/WebShop-v0", "webshop", {"split": "train"}, webshop_goals, 0.0))
  for env_id, env_name, kwargs, count, env_random_prob in specs:
    if count <= 0:
      continue
    env = gymnasium.make(env_id, **kwargs)
    prompt_config = agent_prompt.PromptConfig(env_name=env_name)
    try:
      for game in range(count):
        yield from _play_text(env, seed=game, rng=rng, max_steps=max_steps, random_prob=env_random_prob,
                              prompt_config=prompt_config)
    finally:
      env.close()


def build_tiny_tokenizer(path: str = TOKENIZER_FILE, *, vocab_size: int = VOCAB_SIZE, pieces: str = "phrases",
                         **corpus_kwargs) -> transformers.PreTrainedTokenizerFast:
  """Trains on `environment_corpus(**corpus_kwargs)` and writes the tokenizer JSON atomically to `path`."""
  tokenizer = train_tokenizer(list(environment_corpus(**corpus_kwargs)), vocab_size, pieces)
  atomic_write(path, lambda f: f.write(tokenizer.to_str(pretty=False)))
  return wrap_tokenizer(tokenizer)


if __name__ == "__main__":
  for kind, file_name in TOKENIZER_FILES.items():
    built = build_tiny_tokenizer(file_name, pieces=kind)
    print(f"wrote {file_name}: {len(built)} tokens")
