"""Token-level policy-gradient losses: PPO clipped surrogate, KL to the reference, entropy bonus.

All functions are pure and jittable. Per-token inputs follow the `TrainBatch` alignment: column t
describes token t, and `token_logprobs` turns logits (position t - 1 predicts token t) into that
layout.

Aggregation (verl's `loss_agg_mode`), over the tokens with loss_mask = 1:
- "token-mean": sum over all tokens / number of tokens.
- "seq-mean-token-mean": mean over sequences of (the sequence's token mean).
- "seq-mean-token-sum": mean over sequences of (the sequence's token sum).
Rows without any loss token (padding rows) count as no sequence. Every function takes an optional
precomputed `LossDenominators` so gradient accumulation over micro-batches can normalise by the
whole batch's counts: the sum of the micro-batch losses then equals the full-batch loss.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """PPO / GRPO loss settings (defaults follow verl: clip 0.2, low_var_kl).

  clip_low / clip_high: the ratio is clipped to [1 - clip_low, 1 + clip_high].
  dual_clip: None, or c > 1: for negative advantages the loss is capped at -A * c (verl clip_ratio_c).
  kl_coef: weight of the KL-to-reference term (0 disables it and the reference pass).
  kl_estimator: "k1" (logp - ref), "k2" (0.5 (logp - ref)^2), "k3" (exp(ref - logp) - (ref - logp)
    - 1, unbiased and >= 0), "low_var_kl" (k3 with verl's clamps: log-ratio to +-20, value to +-10).
  entropy_coef: weight of the entropy bonus (loss -= entropy_coef * entropy).
  aggregation: one of AGGREGATIONS.
  """
  clip_low: float = 0.2
  clip_high: float = 0.2
  dual_clip: Optional[float] = None
  kl_coef: float = 0.0
  kl_estimator: str = "low_var_kl"
  entropy_coef: float = 0.0
  aggregation: str = "token-mean"

  def __post_init__(self):
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"LossConfig.aggregation must be one of {AGGREGATIONS}, got "
                       f"{self.aggregation!r}")
    if self.kl_estimator not in KL_ESTIMATORS:
      raise ValueError(f"LossConfig.kl_estimator must be one of {KL_ESTIMATORS}, got "
                       f"{self.kl_estimator!r}")
    if self.clip_low < 0 or self.clip_high < 0:
      raise ValueError(f"clip_low / clip_high must be >= 0, got {self.clip_low}, {self.clip_high}")
    if self.dual_clip is not None and self.dual_clip <= 1.0:
      raise ValueError(f"LossConfig.dual_clip must be > 1 (verl uses 3.0), got {self.dual_clip}")


class LossDenominators(NamedTuple):
  """Normalisers of a whole batch: `loss` for the aggregation mode, `tokens` for token metrics."""
  loss: jax.Array
  tokens: jax.Array


def loss_denominators(loss_mask: jax.Array, aggregation: str) -> LossDenominators:
  """Counts of the batch [B, T] mask: tokens, and sequences (rows with a loss token) for seq modes."""
  mask = jnp.asarray(loss_mask, jnp.float32)
  tokens = jnp.maximum(mask.sum(), 1.0)
  if aggregation == "token-mean":
    loss = tokens
  elif aggregation in ("seq-mean-token-mean", "seq-mean-token-sum"):
    loss = jnp.maximum((mask.sum(-1) > 0).sum().astype(jnp.float32), 1.0)
  else:
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
  return LossDenominators(loss=loss, tokens=tokens)


def aggregate(values: jax.Array, loss_mask: jax.Array, aggregation: str,
              denominator: Optional[jax.Array] = None) -> jax.Array:
  """Reduces per-token values [B, T] to a scalar with the given aggregation mode.

  denominator: the batch-wide normaliser from `loss_denominators(...).loss`; default this batch's.
  """
  mask = jnp.asarray(loss_mask, jnp.float32)
  if denominator is None:
    denominator = loss_denominators(mask, aggregation).loss
  masked = values * mask
  if aggregation == "token-mean":
    total = masked.sum()
  elif aggregation == "seq-mean-token-mean":
    total = (masked.sum(-1) / jnp.maximum(mask.sum(-1), 1.0)).sum()
  elif aggregation == "seq-mean-token-sum":
    total = masked.sum()
  else:
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
  return total / denominator


def target_logprobs(logits: jax.Array, targets: jax.Array,
                    with_entropy: bool = False) -> tuple[jax.Array, Optional[jax.Array]]:
  """Log-prob of each target token under its own row of logits (and that distribution's entropy).

  Args:
    logits: [..., V], computed in float32.
    targets: [...] int tokens, one per logits row.
    with_entropy: also return the predictive entropy of each distribution.

  Returns:
    (logprobs [...], entropy [...] or None).
  """
  # The target logit is picked with a one-hot mask instead of a gather: the backward pass is one
  # elementwise fusion (softmax - one_hot) instead of a scatter.
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  one_hot = jnp.arange(logits.shape[-1], dtype=targets.dtype) == targets[..., None]
  logprobs = jnp.sum(jnp.where(one_hot, logits, 0.0), axis=-1) - lse
  entropy = None
  if with_entropy:
    probs = jax.nn.softmax(logits, axis=-1)
    entropy = lse - jnp.sum(probs * logits, axis=-1)
  return logprobs, entropy


def token_logprobs(logits: jax.Array, input_ids: jax.Array,
                   with_entropy: bool = False) -> tuple[jax.Array, Optional[jax.Array]]:
  """Log-prob (and entropy) of each token under next-token logits, in TrainBatch alignment.

  Args:
    logits: [B, T, V] (position t predicts token t + 1); computed in float32.
    input_ids: [B, T] int tokens.
    with_entropy: also return the predictive entropy of each token's distribution.

  Returns:
    (logprobs [B, T], entropy [B, T] or None); column 0 is 0 (nothing predicts token 0).
  """
  # Every position is scored against the next token (the last against a dummy 0, dropped by the shift
  # below): no [B, T - 1, V] slice copy of the logits.
  targets = jnp.pad(input_ids[:, 1:], ((0, 0), (0, 1)))
  logprobs, entropy = target_logprobs(logits, targets, with_entropy)
  shift = lambda x: jnp.pad(x[:, :-1], ((0, 0), (1, 0)))
  return shift(logprobs), None if entropy is None else shift(entropy)


def kl_penalty(logprobs: jax.Array, ref_logprobs: jax.Array, estimator: str) -> jax.Array:
  """Per-token estimate of KL(pi || pi_ref) from sampled-token log-probs (Schulman's k1/k2/k3)."""
  if estimator == "k1":
    return logprobs - ref_logprobs
  if estimator == "k2":
    return 0.5 * (logprobs - ref_logprobs)**2
  if estimator == "k3":
    log_ratio = ref_logprobs - logprobs
    return jnp.exp(log_ratio) - log_ratio - 1.0
  if estimator == "low_var_kl":
    log_ratio = jnp.clip(ref_logprobs - logprobs, -20.0, 20.0)
    return jnp.clip(jnp.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)
  raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def ppo_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
             loss_mask: jax.Array, cfg: LossConfig, *, ref_logprobs: Optional[jax.Array] = None,
             entropy: Optional[jax.Array] = None,
             denominators: Optional[LossDenominators] = None) -> tuple[jax.Array, dict]:
  """Token-level PPO clipped surrogate + kl_coef x KL - entropy_coef x entropy.

  Args:
    logprobs: [B, T] current-policy log-probs of the tokens (differentiated).
    old_logprobs: [B, T] behaviour log-probs.
    advantages: [B, T] per-token advantages.
    loss_mask: [B, T] 1 on trained tokens.
    cfg: LossConfig.
    ref_logprobs: [B, T] reference log-probs; required when cfg.kl_coef != 0.
    entropy: [B, T] per-token entropy; required when cfg.entropy_coef != 0, else only a metric.
    denominators: whole-batch normalisers (for micro-batching); default this batch's.

  Returns:
    (loss scalar, metrics dict of scalars). Metrics are token-means over the denominators' token
    count (so they also add up over micro-batches): pg_loss, pg_clipfrac, pg_clipfrac_lower,
    ppo_kl (mean of old - new log-prob), ratio_mean, and kl / entropy when available.
  """
  mask = jnp.asarray(loss_mask, jnp.float32)
  if denominators is None:
    denominators = loss_denominators(mask, cfg.aggregation)
  advantages = advantages.astype(jnp.float32)
  log_ratio = jnp.clip(logprobs - old_logprobs, -20.0, 20.0)
  ratio = jnp.exp(log_ratio)
  pg_losses1 = -advantages * ratio
  pg_losses2 = -advantages * jnp.clip(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
  pg_losses = jnp.maximum(pg_losses1, pg_losses2)
  clipped = (pg_losses2 > pg_losses1).astype(jnp.float32)
  clipped_lower = jnp.zeros_like(clipped)
  if cfg.dual_clip is not None:
    pg_losses3 = -advantages * cfg.dual_clip
    clipped_lower = ((pg_losses > pg_losses3) & (advantages < 0)).astype(jnp.float32)
    pg_losses = jnp.where(advantages < 0, jnp.minimum(pg_losses, pg_losses3), pg_losses)

  def token_mean(values):
    return jnp.sum(values * mask) / denominators.tokens

  pg_loss = aggregate(pg_losses, mask, cfg.aggregation, denominators.loss)
  loss = pg_loss
  metrics = {
      "pg_loss": pg_loss,
      "pg_clipfrac": token_mean(clipped),
      "pg_clipfrac_lower": token_mean(clipped_lower),
      "ppo_kl": token_mean(-log_ratio),
      "ratio_mean": token_mean(ratio),
  }
  if cfg.kl_coef != 0.0:
    if ref_logprobs is None:
      raise ValueError("LossConfig.kl_coef != 0 needs ref_logprobs")
    kl = aggregate(kl_penalty(logprobs, ref_logprobs, cfg.kl_estimator), mask, cfg.aggregation,
                   denominators.loss)
    loss = loss + cfg.kl_coef * kl
    metrics["kl"] = kl
  if cfg.entropy_coef != 0.0 and entropy is None:
    raise ValueError("LossConfig.entropy_coef != 0 needs entropy")
  if entropy is not None:
    entropy_value = aggregate(entropy, mask, cfg.aggregation, denominators.loss)
    loss = loss - cfg.entropy_coef * entropy_value
    metrics["entropy"] = entropy_value
  metrics["loss"] = loss
  return loss, metrics


def sft_loss(logprobs: jax.Array, loss_mask: jax.Array, aggregation: str = "token-mean",
             denominators: Optional[LossDenominators] = None) -> tuple[jax.Array, dict]:
  """Cross-entropy (negative log-likelihood) of the loss-mask tokens, aggregated like the PG loss."""
  mask = jnp.asarray(loss_mask, jnp.float32)
  if denominators is None:
    denominators = loss_denominators(mask, aggregation)
  loss = aggregate(-logprobs, mask, aggregation, denominators.loss)
  nll = jnp.sum(-logprobs * mask) / denominators.tokens
  return loss, {"loss": loss, "nll_per_token": nll}
