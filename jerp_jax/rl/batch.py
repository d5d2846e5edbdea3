"""The token-level training batch of the GRPO learner, and a host-side builder for it.

verl-agent trains every agent turn as its own sequence: one row holds the prompt of that turn (task,
rules, history, admissible actions: all environment text) followed by the model's response. Only the
response tokens are trained on (`loss_mask`).

Alignment convention (every `[B, T]` per-token field uses it): column `t` describes TOKEN `t` of the
row, i.e. `input_ids[b, t]`. The model's logits at position `t - 1` predict token `t`, so
`old_logprobs[b, t] = log pi_old(input_ids[b, t] | input_ids[b, :t])`, and column 0 (which nothing
predicts) always has `loss_mask == 0`. `jerp_jax.rl.losses.token_logprobs` returns log-probs in the
same layout.

Scored window: a turn's trained tokens are one contiguous run at the end of its row, a few dozen tokens
after a prompt of hundreds (ALFWorld: ~16 after ~330). `TrainBatch.score_window = W` (static) tells the
train step that every row's loss tokens lie within W consecutive columns, so it computes the LM head,
log-softmax and entropy at those `[B, W]` columns only (`score_columns`) instead of all `[B, T]`
(BUILD_NOTES section 11 measures the gain). The loss is the same: the other columns have loss_mask 0.

Packed rows (`jerp_jax.rl.packing.pack_rows`): a row may hold several turns side by side, told apart by
`segment_ids` (1, 2, ...; 0 on padding). Each turn attends only to itself and counts its positions from
0, so it is scored exactly as in a row of its own; the score window is then W columns per segment, up to
`max_segments` segments per row, and the scored fields are `[B, max_segments, W]`
(`segment_score_columns`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jerp_jax.sampling.buckets import power_of_two


@flax.struct.dataclass
class TrainBatch:
  """One batch of turns for the policy-gradient step (a pytree; all fields are arrays).

  input_ids: [B, T] int32, prompt tokens then response tokens of one turn, then padding.
  attention_mask: [B, T] int32, 1 on real (prompt or response) tokens, 0 on padding. Left or right
    padding both work (the decoder derives positions from cumsum(attention_mask) - 1).
  loss_mask: [B, T] float32, 1 on the response tokens the loss trains on, 0 on prompt / env /
    padding tokens. loss_mask[:, 0] must be 0 (see the module docstring). With score_window W, each
    row's 1s lie within W consecutive columns.
  old_logprobs: [B, T] float32, behaviour-policy log-prob of token t (0 where loss_mask is 0).
  advantages: [B, T] float32, advantage of token t (an episode- or step-level scalar broadcast over
    the row's response tokens; 0 elsewhere).
  ref_logprobs: [B, T] float32 reference-policy log-prob of token t, or None (then the train step
    computes it from the same params with LoRA off, or KL is disabled).
  score_window: None (score every column), or a static int W: each row's loss tokens lie within W
    consecutive columns, and the train step scores only those (module docstring; one compilation per
    distinct W). Packed rows: W per segment (required).
  segment_ids: None (one turn per row), or [B, T] int32 for packed rows: 1, 2, ... for the turns packed
    side by side in a row (contiguous runs), 0 on padding.
  max_segments: packed rows only, a static bound on the segments of any row (the scored fields are
    [B, max_segments, W]).
  """
  input_ids: jax.Array
  attention_mask: jax.Array
  loss_mask: jax.Array
  old_logprobs: jax.Array
  advantages: jax.Array
  ref_logprobs: Optional[jax.Array] = None
  score_window: Optional[int] = flax.struct.field(pytree_node=False, default=None)
  segment_ids: Optional[jax.Array] = None
  max_segments: int = flax.struct.field(pytree_node=False, default=1)

  @property
  def batch_size(self) -> int:
    return int(self.input_ids.shape[0])

  @property
  def seq_len(self) -> int:
    return int(self.input_ids.shape[1])

  def num_loss_tokens(self) -> int:
    """Number of trained (response) tokens in the batch."""
    return int(np.asarray(self.loss_mask).sum())


def loss_span(loss_mask: np.ndarray, segment_ids: Optional[np.ndarray] = None) -> int:
  """The most consecutive columns any row (any segment of a packed row) needs to hold its loss tokens
  (first to last 1); 0 if none."""
  mask = np.asarray(loss_mask) > 0
  if segment_ids is not None:
    segment_ids = np.asarray(segment_ids)
    return max([loss_span(mask & (segment_ids == i)) for i in np.unique(segment_ids[mask])], default=0)
  if not mask.any():
    return 0
  columns = np.arange(mask.shape[1])
  first = np.where(mask, columns, mask.shape[1]).min(axis=1)
  last = np.where(mask, columns, -1).max(axis=1)
  return int(np.maximum(last - first + 1, 0).max())


def score_window_for(span: int, seq_len: int, minimum: int = 16) -> Optional[int]:
  """The static score window for a loss span: the next power of two >= span (at least `minimum`, so a
  run compiles for few distinct W); None when that would not be shorter than the row (score it all)."""
  window = max(minimum, power_of_two(span))
  return window if window < seq_len else None


def score_columns(loss_mask: jax.Array, window: int) -> jax.Array:
  """The W scored columns of each row: [B, T] mask -> [B, W] int32, W consecutive columns starting at
  the row's first loss token (moved left to fit the row; a row without loss tokens gets [0, W))."""
  seq_len = loss_mask.shape[1]
  if not 0 < window <= seq_len:
    raise ValueError(f"score_window must be in [1, T={seq_len}], got {window}")
  first = jnp.argmax(loss_mask > 0, axis=1)
  start = jnp.minimum(first, seq_len - window).astype(jnp.int32)
  return start[:, None] + jnp.arange(window, dtype=jnp.int32)


def segment_score_columns(loss_mask: jax.Array, segment_ids: jax.Array, window: int,
                          max_segments: int) -> tuple[jax.Array, jax.Array]:
  """The W scored columns of each segment of packed rows: ([B, M, W] int32 columns, [B, M, W] bool, True
  where the column belongs to the segment). Segment m + 1's window starts at its first loss token (moved
  left to fit the row; a segment without loss tokens, or absent, reads [0, W) and is all False or
  partly so): the caller multiplies the gathered loss mask by the bool, so no token counts twice."""
  batch, seq_len = loss_mask.shape
  if not 0 < window <= seq_len:
    raise ValueError(f"score_window must be in [1, T={seq_len}], got {window}")
  ids = jnp.arange(1, max_segments + 1, dtype=jnp.int32)
  segment_ids = segment_ids.astype(jnp.int32)
  in_segment = segment_ids[:, None, :] == ids[None, :, None]  # [B, M, T]
  first = jnp.argmax(in_segment & (loss_mask[:, None, :] > 0), axis=2)
  start = jnp.minimum(first, seq_len - window).astype(jnp.int32)
  columns = start[..., None] + jnp.arange(window, dtype=jnp.int32)  # [B, M, W]
  owner = jnp.take_along_axis(segment_ids, columns.reshape(batch, -1), axis=1).reshape(columns.shape)
  return columns, owner == ids[None, :, None]


def validate_train_batch(batch: TrainBatch) -> None:
  """Raises ValueError naming the field when shapes, dtypes or the mask convention are wrong."""
  if batch.input_ids.ndim != 2:
    raise ValueError(f"TrainBatch.input_ids must be [B, T], got shape {batch.input_ids.shape}")
  shape = tuple(batch.input_ids.shape)
  fields = {
      "attention_mask": batch.attention_mask,
      "loss_mask": batch.loss_mask,
      "old_logprobs": batch.old_logprobs,
      "advantages": batch.advantages,
  }
  if batch.ref_logprobs is not None:
    fields["ref_logprobs"] = batch.ref_logprobs
  if batch.segment_ids is not None:
    fields["segment_ids"] = batch.segment_ids
  for name, value in fields.items():
    if tuple(value.shape) != shape:
      raise ValueError(f"TrainBatch.{name} has shape {tuple(value.shape)}, expected {shape} "
                       "(the shape of input_ids)")
  if not jnp.issubdtype(batch.input_ids.dtype, jnp.integer):
    raise ValueError(f"TrainBatch.input_ids must be integer, got {batch.input_ids.dtype}")
  loss_mask = np.asarray(batch.loss_mask)
  if loss_mask[:, 0].any():
    raise ValueError("TrainBatch.loss_mask[:, 0] must be 0: token 0 has no prediction")
  if (loss_mask * (1 - np.asarray(batch.attention_mask))).any():
    raise ValueError("TrainBatch.loss_mask is 1 on a padding token (attention_mask == 0)")
  segment_ids = None
  if batch.segment_ids is not None:
    segment_ids = np.asarray(batch.segment_ids)
    if batch.score_window is None:
      raise ValueError("TrainBatch.segment_ids (packed rows) needs a score_window (W per segment)")
    if segment_ids.min(initial=0) < 0 or segment_ids.max(initial=0) > batch.max_segments:
      raise ValueError(f"TrainBatch.segment_ids must be in [0, max_segments={batch.max_segments}], got "
                       f"[{segment_ids.min()}, {segment_ids.max()}]")
    if (loss_mask * (segment_ids == 0)).any():
      raise ValueError("TrainBatch.loss_mask is 1 on a column of no segment (segment_ids == 0)")
    first_columns = np.concatenate([np.ones_like(segment_ids[:, :1], bool),
                                    segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    if (loss_mask * first_columns).any():
      raise ValueError("TrainBatch.loss_mask is 1 on a segment's first token: it has no prediction")
  if batch.score_window is not None:
    if not 0 < batch.score_window <= shape[1]:
      raise ValueError(f"TrainBatch.score_window must be in [1, T={shape[1]}], got {batch.score_window}")
    span = loss_span(loss_mask, segment_ids)
    if span > batch.score_window:
      raise ValueError(f"TrainBatch.score_window={batch.score_window} is shorter than a row's loss tokens "
                       f"(they span {span} columns)")


def build_train_batch(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    response_logprobs: Sequence[Sequence[float]],
    advantages: Sequence[float] | Sequence[Sequence[float]],
    *,
    seq_len: int | None = None,
    pad_id: int = 0,
    batch_multiple: int = 1,
    response_ref_logprobs: Sequence[Sequence[float]] | None = None,
    score_window: int | str | None = "auto",
) -> TrainBatch:
  """Packs turns (prompt + response token lists) into a right-padded `TrainBatch` (numpy arrays).

  Args:
    prompt_ids: per turn, the prompt token ids (everything the model conditioned on).
    response_ids: per turn, the sampled response token ids.
    response_logprobs: per turn, the behaviour log-prob of each response token.
    advantages: per turn, one scalar (broadcast over the response) or one value per response token.
    seq_len: row length T; default the longest turn. A longer turn raises ValueError.
    pad_id: token id written into padding.
    batch_multiple: rows are added until B is a multiple of this (micro-batches x data shards);
      an added row has one attended pad token and an all-zero loss mask, so it changes no loss.
    response_ref_logprobs: optional per-turn reference log-probs of the response tokens.
    score_window: "auto" (the longest response rounded up by `score_window_for`), an int W (checked to
      hold every response), or None (the train step scores every column).

  Returns:
    TrainBatch with [B, T] numpy fields, B = ceil(num_turns / batch_multiple) * batch_multiple.
  """
  num_turns = len(prompt_ids)
  lists = {"response_ids": response_ids, "response_logprobs": response_logprobs,
           "advantages": advantages}
  if response_ref_logprobs is not None:
    lists["response_ref_logprobs"] = response_ref_logprobs
  for name, values in lists.items():
    if len(values) != num_turns:
      raise ValueError(f"{name} has {len(values)} turns, prompt_ids has {num_turns}")
  if num_turns == 0:
    raise ValueError("build_train_batch needs at least one turn")
  if batch_multiple < 1:
    raise ValueError(f"batch_multiple must be >= 1, got {batch_multiple}")
  lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
  longest = max(lengths)
  if seq_len is None:
    seq_len = longest
  if longest > seq_len:
    i = int(np.argmax(lengths))
    raise ValueError(f"turn {i} has {lengths[i]} tokens (prompt {len(prompt_ids[i])} + response "
                     f"{len(response_ids[i])}), more than seq_len={seq_len}")
  rows = -(-num_turns // batch_multiple) * batch_multiple
  input_ids = np.full((rows, seq_len), pad_id, np.int32)
  attention_mask = np.zeros((rows, seq_len), np.int32)
  loss_mask = np.zeros((rows, seq_len), np.float32)
  old_logprobs = np.zeros((rows, seq_len), np.float32)
  token_advantages = np.zeros((rows, seq_len), np.float32)
  ref_logprobs = None
  if response_ref_logprobs is not None:
    ref_logprobs = np.zeros((rows, seq_len), np.float32)
  for i in range(num_turns):
    prompt, response = list(prompt_ids[i]), list(response_ids[i])
    if not prompt:
      raise ValueError(f"turn {i} has an empty prompt; the first response token needs a context")
    if len(response_logprobs[i]) != len(response):
      raise ValueError(f"turn {i}: {len(response_logprobs[i])} response_logprobs for "
                       f"{len(response)} response tokens")
    start, end = len(prompt), len(prompt) + len(response)
    input_ids[i, :end] = prompt + response
    attention_mask[i, :end] = 1
    loss_mask[i, start:end] = 1.0
    old_logprobs[i, start:end] = response_logprobs[i]
    advantage = np.asarray(advantages[i], np.float32)
    if advantage.ndim == 1 and advantage.shape[0] != len(response):
      raise ValueError(f"turn {i}: {advantage.shape[0]} advantages for {len(response)} tokens")
    token_advantages[i, start:end] = advantage
    if ref_logprobs is not None:
      if len(response_ref_logprobs[i]) != len(response):
        raise ValueError(f"turn {i}: {len(response_ref_logprobs[i])} response_ref_logprobs for "
                         f"{len(response)} response tokens")
      ref_logprobs[i, start:end] = response_ref_logprobs[i]
  attention_mask[num_turns:, 0] = 1  # Padding rows: one attended token keeps softmax finite.
  given = score_window
  if score_window == "auto":  # responses are contiguous: the longest one is the loss span
    score_window = score_window_for(max(len(r) for r in response_ids), seq_len)
  elif score_window is not None and not isinstance(score_window, int):
    raise ValueError(f"score_window must be 'auto', an int or None, got {score_window!r}")
  batch = TrainBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask,
                     old_logprobs=old_logprobs, advantages=token_advantages,
                     ref_logprobs=ref_logprobs, score_window=score_window)
  if isinstance(given, int):  # a caller's window is checked; "auto" holds every response by construction
    validate_train_batch(batch)
  return batch
