"""How far one policy has moved from another: the exact per-token KL over the vocabulary on given turns.

The GRPO loss's KL term (`losses.kl_penalty`) estimates KL(policy || reference) from the sampled token alone.
Here both next-token distributions are compared in full on any turns: the policy's own turns of held-out games
(the states a KL term would act on) or the expert's turns (the same states for every policy, so runs compare).
That is what a KL-to-reference term acts on between iterations (`experiments/policy_drift.py`; BUILD_NOTES 2.19).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jerp_jax.rl import train_step as train_step_lib
from jerp_jax.rl.losses import token_logprobs
from jerp_jax.rl.warm_start import SFTRow, scoring_batches

DIVERGENCE_FIELDS = ("kl", "reverse_kl", "logprob", "ref_logprob")


def categorical_kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis of two `[..., V]` logit arrays (float32)."""
  log_p = jax.nn.log_softmax(logits_p.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


@jax.jit
def token_divergence(policy: train_step_lib.TrainState, reference: train_step_lib.TrainState,
                     input_ids: jax.Array, attention_mask: jax.Array) -> dict[str, jax.Array]:
  """Per-token comparison of two policies, each `[B, T]` in TrainBatch alignment (column t: the distribution
  that predicts token t; column 0 is 0).

  Returns "kl" KL(policy || reference), "reverse_kl" KL(reference || policy), and the log-prob of each token
  under the policy ("logprob") and the reference ("ref_logprob"). Each state is evaluated as its own policy
  (LoRA factors applied when it has them).
  """
  def logits(state: train_step_lib.TrainState) -> jax.Array:
    return nnx.merge(state.graphdef, state.params, state.frozen)(input_ids, attention_mask).astype(jnp.float32)

  def shift(x: jax.Array) -> jax.Array:  # position t - 1's distribution scores token t
    return jnp.pad(x[:, :-1], ((0, 0), (1, 0)))

  policy_logits, reference_logits = logits(policy), logits(reference)
  logprob, _ = token_logprobs(policy_logits, input_ids)
  ref_logprob, _ = token_logprobs(reference_logits, input_ids)
  return {"kl": shift(categorical_kl(policy_logits, reference_logits)),
          "reverse_kl": shift(categorical_kl(reference_logits, policy_logits)),
          "logprob": logprob, "ref_logprob": ref_logprob}


def divergence_on_rows(policy: train_step_lib.TrainState, reference: train_step_lib.TrainState,
                       rows: Sequence[SFTRow], *, pad_id: int, batch_size: int = 16) -> dict[str, float]:
  """Compares `policy` with `reference` on the response tokens of `rows` (prompt + response turns).

  Returns means over the response tokens: "kl" (KL(policy || reference)), "reverse_kl", "nll" and "ref_nll"
  (negative log-likelihood of the response tokens under each); per turn: "kl_per_turn" (the KL summed over
  a turn's tokens, averaged over turns) and "kl_per_turn_p90"; and "turns", "tokens".
  """
  if not rows:
    raise ValueError("divergence_on_rows: no rows")
  sums = dict.fromkeys(DIVERGENCE_FIELDS, 0.0)
  per_turn: list[np.ndarray] = []
  tokens = 0.0
  for batch, count in scoring_batches(rows, pad_id=pad_id, batch_size=batch_size):
    out = jax.device_get(token_divergence(policy, reference, batch.input_ids, batch.attention_mask))
    mask = np.asarray(batch.loss_mask, np.float64)
    for name in DIVERGENCE_FIELDS:
      sums[name] += float((np.asarray(out[name], np.float64) * mask).sum())
    per_turn.append((np.asarray(out["kl"], np.float64) * mask).sum(axis=1)[:count])
    tokens += float(mask.sum())
  turn_kl = np.concatenate(per_turn)
  tokens = max(tokens, 1.0)
  return {"kl": sums["kl"] / tokens, "reverse_kl": sums["reverse_kl"] / tokens,
          "nll": -sums["logprob"] / tokens, "ref_nll": -sums["ref_logprob"] / tokens,
          "kl_per_turn": float(turn_kl.mean()), "kl_per_turn_p90": float(np.percentile(turn_kl, 90)),
          "turns": float(len(rows)), "tokens": tokens}
