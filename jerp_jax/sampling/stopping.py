"""Stop conditions: stop token ids, stop token sequences (in the loop) and stop strings (on the host).

Stop strings are handled in two places, because a tokenizer may split the same string into different
token sequences depending on its neighbours (e.g. "</action>" vs ".</" + "action>"):

1. In the decode loop: each stop string's canonical tokenization (`tokenizer.encode(s)` without special
   tokens) is matched against the last generated tokens (`stop_sequence_hits`); this ends the common case
   without wasting decode steps.
2. On the host: `find_stop_string_cut` decodes the generated tokens and truncates at the first occurrence of
   any stop string, whatever tokens produced it. With `chunk_size` set the sampler runs this check between
   chunks too, so a non-canonical split costs at most one chunk of extra decode steps.

The stop string itself is kept in the output (the agent parser needs the closing "</action>"); a stop
token id is kept in the token ids (GRPO trains the model to emit it) but left out of the decoded text.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jerp_jax.sampling.buckets import power_of_two

# Finish-reason codes used on device; `FINISH_REASONS` maps them to the strings in SampleOutput.
RUNNING = 0
STOP_TOKEN = 1
STOP_STRING = 2
LENGTH = 3
FINISH_REASONS = {RUNNING: "running", STOP_TOKEN: "stop_token", STOP_STRING: "stop_string",
                  LENGTH: "length"}


def per_row_stop_ids(stop_token_ids: Sequence[int] | Sequence[Sequence[int]], batch_size: int,
                     vocab_size: int) -> list[tuple[int, ...]]:
  """Normalises stop token ids to one tuple per row.

  Accepts a flat sequence of ids (shared by every row) or a sequence of `batch_size` sequences.
  """
  items = list(stop_token_ids or ())
  if items and all(isinstance(x, (int, np.integer)) for x in items):
    rows = [tuple(int(x) for x in items)] * batch_size
  elif all(isinstance(x, (list, tuple, np.ndarray)) for x in items) and items:
    if len(items) != batch_size:
      raise ValueError(f"per-sequence stop_token_ids has {len(items)} entries for {batch_size} prompts")
    rows = [tuple(int(t) for t in row) for row in items]
  elif not items:
    rows = [()] * batch_size
  else:
    raise ValueError("stop_token_ids must be a flat sequence of ints or one sequence of ints per prompt, "
                     f"got {stop_token_ids!r}")
  for row in rows:
    for t in row:
      if not 0 <= t < vocab_size:
        raise ValueError(f"stop token id {t} is outside the vocabulary [0, {vocab_size})")
  return rows


def _round_up_pow2(n: int, lowest: int) -> int:
  return max(lowest, power_of_two(n))


def stop_ids_array(rows: Sequence[tuple[int, ...]], batch_size: int) -> np.ndarray:
  """Pads per-row stop ids to [batch_size, K] int32 with -1 (never matches a token).

  K is the longest row rounded up to a power of two (at least 4), to bound recompilations.
  """
  width = _round_up_pow2(max([0] + [len(r) for r in rows]), 4)
  out = np.full((batch_size, width), -1, np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def encode_stop_strings(stop_strings: Sequence[str], tokenizer) -> list[tuple[int, ...]]:
  """Canonical token sequences of the stop strings (no special tokens), for in-loop matching."""
  seqs = []
  for s in stop_strings:
    if not isinstance(s, str) or not s:
      raise ValueError(f"stop strings must be non-empty str, got {s!r}")
    ids = tuple(int(t) for t in tokenizer.encode(s, add_special_tokens=False))
    if ids:
      seqs.append(ids)
  return seqs


def stop_sequence_arrays(seqs: Sequence[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
  """Right-aligned stop sequences: tokens [M, window] int32 and mask [M, window] bool.

  mask marks the positions a sequence occupies. M (>= len(seqs)) and window (>= the longest sequence)
  are rounded up to powers of two (both at least 4, so calls with up to 4 short stop strings and calls
  with none share one compilation); padding rows hold a single -1, which never matches (the last recent
  token is always a real token when matching).
  """
  window = _round_up_pow2(max([0] + [len(s) for s in seqs]), 4)
  rows = _round_up_pow2(len(seqs), 4)
  tokens = np.full((rows, window), -1, np.int32)
  mask = np.zeros((rows, window), bool)
  mask[:, -1] = True
  for i, s in enumerate(seqs):
    tokens[i, window - len(s):] = s
    mask[i, window - len(s):] = True
  return tokens, mask


def stop_sequence_hits(recent: jax.Array, seq_tokens: jax.Array, seq_mask: jax.Array) -> jax.Array:
  """Whether the last generated tokens end with any stop sequence.

  recent [batch, window] (the last `window` generated tokens, -1 where fewer were generated),
  seq_tokens / seq_mask [num_seqs, window] -> [batch] bool.
  """
  equal = recent[:, None, :] == seq_tokens[None, :, :]
  match = jnp.all(equal | ~seq_mask[None, :, :], axis=-1)
  return jnp.any(match, axis=-1)


def find_stop_string_cut(tokens: Sequence[int], stop_strings: Sequence[str],
                         decode: Callable[[Sequence[int]], str]) -> tuple[int, str] | None:
  """Finds the first stop-string occurrence in the decoded tokens.

  Returns (num_tokens, text): the shortest token prefix whose decoded text contains that occurrence, and
  the text cut right after the stop string; or None when no stop string occurs.
  """
  if not stop_strings or not tokens:
    return None
  text = decode(tokens)
  hits = [(text.find(s), s) for s in stop_strings if s in text]
  if not hits:
    return None
  start, stop = min(hits)
  end = start + len(stop)
  # Decoding is monotone in the prefix (a longer prefix's text extends a shorter one's), so the shortest
  # prefix holding text[:end] is found by bisection.
  lo, hi = 1, len(tokens)
  while lo < hi:
    mid = (lo + hi) // 2
    if decode(tokens[:mid]).startswith(text[:end]):
      hi = mid
    else:
      lo = mid + 1
  return lo, text[:end]
