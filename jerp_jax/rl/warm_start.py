"""Behaviour-cloning warm start: supervised fine-tuning on the observation-only expert's trajectories.

Each expert step becomes one SFT row formatted EXACTLY like an agent turn: the prompt that
`jerp_jax.agent.prompt.build_prompt` would show the policy at that point (task, no rules, last H steps,
admissible actions, chat template) and the response "<think>{think}</think><action>{expert action}</action>"
(followed by the tokenizer's end-of-turn token when it has one), trained with the RL learner's `sft_step`
on the response tokens only. The same code serves the tiny model and real checkpoints.
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import numpy as np

from jerp_jax.agent import Episode, Step
from jerp_jax.agent import parse as agent_parse
from jerp_jax.agent import prompt as agent_prompt
from jerp_jax.rl import train_step as train_step_lib
from jerp_jax.rl.batch import TrainBatch, build_train_batch
from jerp_jax.rl.rollout import GroupSpec, bucket_length
from jerp_jax.sampling import Greedy


THINK_STYLES = ("none", "task", "expert")


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
  """Warm-start settings.

  epochs: passes over the rows; batch_size: rows per SFT step (the last batch is padded with empty rows).
  seq_len: row length; None = the longest row rounded up to seq_multiple (one shape, one compile).
  seq_buckets: optional row lengths; each row goes to the smallest bucket that holds it and batches are
    drawn within a bucket (less padding: ALFWorld rows average ~60% of the longest; one compile per
    bucket). Empty = every batch has the single length above.
  think: what the think block holds: "none" (empty), "task" (`think_text`: the task restated and the
    action announced), "expert" (the env expert's own one-line reasoning, `env.unwrapped.expert_think()`;
    ALFWorld: the goal's object and destination, "Goal: apple to fridge", which puts the word a tiny model
    must copy right before the action).
  append_eos: end each response with the tokenizer's EOS (the rollout stops on "</action>" first, so
    this only teaches the model to close its turn).
  max_steps: expert steps per game at most.
  seed: shuffling seed.
  max_seconds: stop after the first step that ends past this wall-clock budget (None: no budget).
  repeat_verbs / repeat_factor: rows whose expert action starts with one of these words (e.g. "take")
    appear repeat_factor times per epoch: rare decisive steps get more of the gradient (`epoch_rows`).
  """
  epochs: int = 2
  batch_size: int = 32
  seq_len: Optional[int] = None
  seq_multiple: int = 64
  seq_buckets: tuple[int, ...] = ()
  think: str = "none"
  append_eos: bool = False
  max_steps: int = 50
  seed: int = 0
  max_seconds: Optional[float] = None
  repeat_verbs: tuple[str, ...] = ()
  repeat_factor: int = 1

  def __post_init__(self):
    for name in ("epochs", "batch_size", "seq_multiple", "max_steps", "repeat_factor"):
      if getattr(self, name) < 1:
        raise ValueError(f"WarmStartConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.think not in THINK_STYLES:
      raise ValueError(f"WarmStartConfig.think must be one of {THINK_STYLES}, got {self.think!r}")


@dataclasses.dataclass
class SFTRow:
  """One supervised turn: prompt_ids (conditioning), response_ids (trained), the expert's command."""
  prompt_ids: list[int]
  response_ids: list[int]
  action: str = ""


def think_text(goal: str, action: str) -> str:
  """The short deterministic reasoning of think style "task"."""
  return f"My task is to {goal.strip().rstrip('.')}. Next: {action}."


_NUMBER = re.compile(r"\b\d+\b")


def mistaken_command(action: str, admissible: Sequence[str], rng: np.random.Generator) -> Optional[str]:
  """A state-tracking mistake next to the expert's `action`: one of its instance numbers changed, e.g.
  "take apple 3 from countertop 1" (an apple that is not there) for "take apple 1 from countertop 1", or
  "go to cabinet 9" in a room with 4 cabinets, the kinds of inadmissible action the tiny policy makes
  (BUILD_NOTES 2.7). None when the action has no number or no change names a non-admissible command."""
  numbers = list(_NUMBER.finditer(action))
  if not numbers:
    return None
  taken = set(admissible)
  for _ in range(8):
    match = numbers[int(rng.integers(len(numbers)))]
    value = int(match.group())
    other = int(rng.integers(1, max(value, 4) + 4))
    candidate = action[:match.start()] + str(other) + action[match.end():]
    if other != value and candidate not in taken:
      return candidate
  return None


def collect_expert_episodes(env: Any, games: Sequence[GroupSpec], *, max_steps: int = 50,
                            think: str = "none", mistake_rate: float = 0.0, seed: int = 0) -> list[Episode]:
  """Plays each game with the env's observation-only expert (`env.unwrapped.expert_action()`).

  Steps are recorded like agent turns (response = the formatted answer with the think block of style
  `think`, see WarmStartConfig; valid = True). Games the expert does not win within max_steps are kept
  too (flagged by Episode.won); callers usually keep winners.

  mistake_rate: before each expert step, with this probability (numpy generator seeded by `seed`), the
  demonstration first plays `mistaken_command` (the env answers "Nothing happens."); that step is recorded
  with valid = False (`sft_rows` keeps it in the history but trains no row on it), so the next rows show the
  expert recovering from a mistake the policy makes, which error-free demonstrations never show (DART-style
  noise injection, Laskey et al. 2017).
  """
  if think not in THINK_STYLES:
    raise ValueError(f"collect_expert_episodes: think must be one of {THINK_STYLES}, got {think!r}")
  if not 0.0 <= mistake_rate < 1.0:
    raise ValueError(f"collect_expert_episodes: mistake_rate must be in [0, 1), got {mistake_rate!r}")
  rng = np.random.default_rng(seed)
  if think == "expert" and not hasattr(env.unwrapped, "expert_think"):
    raise ValueError(f"think='expert' needs an env with expert_think(); {type(env.unwrapped).__name__} "
                     "has none (use 'task' or 'none')")
  episodes = []
  for index, game in enumerate(games):
    observation, info = env.reset(seed=game.seed, options=game.options)
    first_info = dict(info)
    goal = str(first_info.get("goal", ""))
    steps: list[Step] = []
    won = False
    for _ in range(max_steps):
      admissible = list(info.get("admissible_commands", []))
      action = env.unwrapped.expert_action()
      valid = True
      if mistake_rate and rng.random() < mistake_rate:
        mistake = mistaken_command(action, admissible, rng)
        if mistake is not None:
          action, valid = mistake, False
      reasoning = (think_text(goal, action) if think == "task" else
                   env.unwrapped.expert_think() if think == "expert" else "")
      response = agent_prompt.format_response(action, reasoning)
      next_observation, reward, terminated, truncated, info = env.step(action)
      steps.append(Step(observation=observation, admissible=admissible, response=response, action=action,
                        valid=valid, reward=float(reward)))
      observation = next_observation
      won = bool(info.get("won", False))
      if terminated or truncated:
        break
    episodes.append(Episode(task_id=str(first_info.get("task_id", "")) or f"expert/{index}",
                            task_type=str(first_info.get("task_type", "")), goal=goal, steps=steps,
                            reward=float(sum(s.reward for s in steps)), won=won, episode_index=index))
  return episodes


def sft_rows(episodes: Sequence[Episode], tokenizer: Any, prompt_config: agent_prompt.PromptConfig, *,
             append_eos: bool = False, rules: Callable[[Episode], Sequence[str]] | None = None,
             include_invalid: bool = False) -> list[SFTRow]:
  """One row per valid step: the agent prompt of that step (same builder as the rollout) and the response
  (an invalid step, an injected mistake, only enters the history of the rows after it).

  rules: optional per-episode rule texts to show in the prompts (default none, as the warm start has no
  rule pool yet).
  include_invalid: one row for the invalid steps too (a policy's own inadmissible turns, when its episodes
  are scored rather than imitated).
  """
  eos = getattr(tokenizer, "eos_token_id", None) if append_eos else None
  rows = []
  for episode in episodes:
    history: list[tuple[str, str]] = []
    episode_rules = list(rules(episode)) if rules is not None else []
    for step in episode.steps:
      text = agent_prompt.build_prompt(prompt_config, task=episode.goal, observation=step.observation,
                                       admissible=step.admissible, history=history, rules=episode_rules,
                                       tokenizer=tokenizer)
      history.append((step.observation, step.action))
      if not step.valid and not include_invalid:  # an injected mistake: in later prompts' history, no target
        continue
      response_ids = tokenizer.encode(step.response, add_special_tokens=False)
      if eos is not None:
        response_ids = response_ids + [int(eos)]
      rows.append(SFTRow(tokenizer.encode(text, add_special_tokens=False), response_ids, step.action))
  return rows


def sft_batches(rows: Sequence[SFTRow], *, batch_size: int, seq_len: int, pad_id: int,
                rng: np.random.Generator, seq_buckets: Sequence[int] = ()) -> Iterator[TrainBatch]:
  """One epoch of shuffled [batch_size, length] batches (loss_mask on response tokens only).

  Without seq_buckets every batch has length seq_len. With them, rows are grouped by the smallest bucket
  that holds them (rows longer than every bucket use seq_len), batches are cut within a group and the
  batches of all groups are visited in a shuffled order.
  """
  groups: dict[int, list[int]] = {}
  for i in rng.permutation(len(rows)):
    groups.setdefault(_row_bucket(rows[i], seq_buckets, seq_len), []).append(int(i))
  plan = [(length, members[start:start + batch_size]) for length, members in sorted(groups.items())
          for start in range(0, len(members), batch_size)]
  for k in rng.permutation(len(plan)):
    length, chunk_ids = plan[k]
    chunk = [rows[i] for i in chunk_ids]
    yield build_train_batch([r.prompt_ids for r in chunk], [r.response_ids for r in chunk],
                            [[0.0] * len(r.response_ids) for r in chunk], [0.0] * len(chunk),
                            seq_len=length, pad_id=pad_id, batch_multiple=batch_size)


def epoch_rows(rows: Sequence[SFTRow], config: WarmStartConfig) -> list[SFTRow]:
  """The rows one epoch visits: every row once, rows of config.repeat_verbs config.repeat_factor times."""
  verbs = set(config.repeat_verbs)
  if not verbs or config.repeat_factor == 1:
    return list(rows)
  return [r for r in rows for _ in range(config.repeat_factor if _verb(r.action) in verbs else 1)]


def _verb(command: str) -> str:
  """The first word of a command ("take apple 1 from ..." -> "take"; "" for an empty command)."""
  words = command.split(maxsplit=1)
  return words[0] if words else ""


def _row_bucket(row: SFTRow, seq_buckets: Sequence[int], seq_len: int) -> int:
  """The length of the batch `row` goes to: the smallest bucket that holds it, else seq_len."""
  total = len(row.prompt_ids) + len(row.response_ids)
  return min((int(b) for b in seq_buckets if int(b) >= total), default=seq_len)


def num_sft_steps(rows: Sequence[SFTRow], config: WarmStartConfig) -> int:
  """How many SFT steps `run_warm_start` takes over `rows` (all epochs; bucketing cuts batches per bucket)."""
  seq_len = rows_seq_len(rows, config)
  sizes: dict[int, int] = {}
  for row in epoch_rows(rows, config):
    length = _row_bucket(row, config.seq_buckets, seq_len)
    sizes[length] = sizes.get(length, 0) + 1
  per_epoch = sum(-(-n // config.batch_size) for n in sizes.values())
  return config.epochs * per_epoch


def rows_seq_len(rows: Sequence[SFTRow], config: WarmStartConfig) -> int:
  """The fixed row length: config.seq_len, or the longest row rounded up to config.seq_multiple."""
  if not rows:
    raise ValueError("warm start has no SFT rows (no expert steps collected)")
  longest = max(len(r.prompt_ids) + len(r.response_ids) for r in rows)
  if config.seq_len is not None:
    if longest > config.seq_len:
      raise ValueError(f"an SFT row has {longest} tokens, more than WarmStartConfig.seq_len="
                       f"{config.seq_len}")
    return config.seq_len
  return bucket_length(longest, config.seq_multiple)


def run_warm_start(state: train_step_lib.TrainState, rows: Sequence[SFTRow], config: WarmStartConfig, *,
                   pad_id: int, train_config: train_step_lib.TrainConfig = train_step_lib.TrainConfig(),
                   mesh: Optional[jax.sharding.Mesh] = None, step_fn: Optional[Callable] = None,
                   log: Optional[Callable[[dict[str, float]], None]] = None,
                   clock: Callable[[], float] = time.perf_counter
                   ) -> tuple[train_step_lib.TrainState, list[dict[str, float]]]:
  """Runs config.epochs epochs of `sft_step` over `rows`.

  Args:
    state: the learner's TrainState (its params are updated; it is donated to the jitted step).
    rows: from `sft_rows`.
    pad_id: padding token id.
    train_config: micro-batching / aggregation of the SFT loss.
    mesh: shard the step on this mesh (batch rows must divide over data x fsdp).
    step_fn: a jitted SFT step to reuse (default: `jit_step(sft_step, ...)` built here).
    log: called with each step's metrics.
    clock: the clock config.max_seconds is measured on (e.g. time.process_time on a shared machine).

  Returns:
    (new state, per-step metrics: loss, nll_per_token, grad_norm, epoch, step, seconds).
  """
  seq_len = rows_seq_len(rows, config)
  rows = epoch_rows(rows, config)
  run = step_fn or train_step_lib.jit_step(train_step_lib.sft_step, train_config, state, mesh)
  rng = np.random.default_rng(config.seed)
  history = []
  start = clock()
  for epoch in range(config.epochs):
    for batch in sft_batches(rows, batch_size=config.batch_size, seq_len=seq_len, pad_id=pad_id, rng=rng,
                             seq_buckets=config.seq_buckets):
      tick = time.perf_counter()
      state, metrics = run(state, batch)
      record = {k: float(v) for k, v in jax.device_get(metrics).items()}
      record.update(epoch=float(epoch), step=float(len(history)), seconds=time.perf_counter() - tick)
      history.append(record)
      if log is not None:
        log(record)
      if config.max_seconds is not None and clock() - start > config.max_seconds:
        return state, history
  return state, history


def expert_agreement(sampler: Any, state: Any, tokenizer: Any, episodes: Sequence[Episode],
                     prompt_config: agent_prompt.PromptConfig, *, max_new_tokens: int,
                     require_think: bool = True, batch_size: int = 64) -> dict[str, float]:
  """How often the greedy policy picks the expert's action in the expert's own states (teacher forcing).

  Every step of `episodes` (e.g. held-out games played by the expert) is shown to the policy with the
  rollout's prompt (the prompts of `sft_rows`); its greedy answer is parsed like a rollout turn. Returns
  "agreement" (the parsed command equals the expert's), "agreement_valid" (it parsed to an admissible
  command), "agreement_verb" (its first word equals the expert's: the right kind of step, e.g. "take",
  whatever its object), "agreement_steps" (how many states), and "agreement/{verb}" per the expert
  action's first word (go, take, open, ...). This isolates imitation quality from compounding errors: an episode fails
  on one wrong step, this counts each step once.
  """
  prompts = [row.prompt_ids for row in sft_rows(episodes, tokenizer, prompt_config)]
  expected = [(step.action, step.admissible) for episode in episodes for step in episode.steps]
  if not prompts:
    raise ValueError("expert_agreement: the episodes have no steps")
  texts: list[str] = []
  for start in range(0, len(prompts), batch_size):
    out = sampler.generate(state, prompts[start:start + batch_size], max_new_tokens=max_new_tokens,
                           sampling=Greedy(), stop_strings=[agent_prompt.ACTION_CLOSE], tokenizer=tokenizer)
    texts.extend(out.texts)
  hits: dict[str, list[int]] = {}
  agree = valid = same_verb = 0
  for text, (action, admissible) in zip(texts, expected):
    parsed = agent_parse.parse_action(text, admissible, require_think=require_think)
    same = int(parsed.valid and parsed.command == action)
    verb = _verb(action)
    agree += same
    valid += int(parsed.valid)
    same_verb += int(parsed.valid and _verb(parsed.command) == verb)
    hits.setdefault(verb, []).append(same)
  result = {"agreement": agree / len(texts), "agreement_valid": valid / len(texts),
            "agreement_verb": same_verb / len(texts), "agreement_steps": float(len(texts))}
  result.update({f"agreement/{verb}": float(np.mean(v)) for verb, v in sorted(hits.items())})
  return result


def scoring_batches(rows: Sequence[SFTRow], *, pad_id: int, batch_size: int = 32, seq_len: Optional[int] = None,
                    seq_multiple: int = 64) -> Iterator[tuple[TrainBatch, int]]:
  """`rows` in order as (batch, number of real rows) pairs for scoring without an update: `[batch_size, T]`
  batches (a short last batch is padded with all-masked rows), T = `seq_len` or each batch's longest row
  rounded up to `seq_multiple` (few compiles); loss_mask marks the response tokens."""
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    length = seq_len or bucket_length(max(len(r.prompt_ids) + len(r.response_ids) for r in chunk), seq_multiple)
    batch = build_train_batch([r.prompt_ids for r in chunk], [r.response_ids for r in chunk],
                              [[0.0] * len(r.response_ids) for r in chunk], [0.0] * len(chunk),
                              seq_len=length, pad_id=pad_id, batch_multiple=batch_size)
    yield batch, len(chunk)


def sft_loss_on_rows(state: train_step_lib.TrainState, rows: Sequence[SFTRow], *, pad_id: int,
                     seq_len: int, batch_size: int = 32) -> float:
  """Mean negative log-likelihood per response token of `rows` under the current policy (no update)."""
  total, count = 0.0, 0.0
  for batch, _ in scoring_batches(rows, pad_id=pad_id, batch_size=batch_size, seq_len=seq_len):
    logprobs = np.asarray(train_step_lib.compute_logprobs(state, batch.input_ids, batch.attention_mask))
    total += float(-(logprobs * batch.loss_mask).sum())
    count += float(batch.loss_mask.sum())
  return total / max(count, 1.0)
