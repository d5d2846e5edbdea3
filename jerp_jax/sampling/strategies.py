"""Sampling strategies: how the next token is drawn from the model's logits.

Each strategy is a small frozen (hashable) dataclass with one method,
`sample(logits [batch, vocab] float32, keys [batch] PRNG keys) -> tokens [batch] int32`,
so a strategy is a static argument of the jitted decode loop (one compilation per distinct value).
Every row draws with its own key, so a row's samples do not depend on which other rows share its batch.

The log-probabilities the sampler returns are NOT those of the transformed (temperature / top-k / top-p)
distribution: `token_logprobs` is the log-softmax of the raw logits (temperature 1), i.e. the log-prob of
the sampled token under the policy's model distribution, which is what GRPO's importance ratio compares
against when it recomputes log-probs of the same tokens in the train step.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp

from jerp_jax.sampling.vocab_rows import argmax_rows, categorical_rows, nucleus_mask, token_logprobs

__all__ = ["Greedy", "SamplingConfig", "Temperature", "TopK", "TopP", "make_strategy", "token_logprobs"]


def _check_temperature(temperature: float) -> None:
  if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
    raise ValueError(
        f"temperature must be a finite number > 0, got {temperature!r}; use Greedy() for argmax decoding")


@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding (ties go to the lowest token id, as torch.argmax does)."""

  def sample(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    del keys
    return argmax_rows(logits)


@dataclasses.dataclass(frozen=True)
class Temperature:
  """Ancestral sampling from softmax(logits / temperature) over the whole vocabulary."""
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)

  def sample(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    return categorical_rows(keys, logits / self.temperature)


@dataclasses.dataclass(frozen=True)
class TopK:
  """Sampling from softmax(logits / temperature) restricted to the k highest logits.

  Ties at the k-th value are broken towards lower token ids (jax.lax.top_k order).
  """
  k: int
  temperature: float = 1.0

  def __post_init__(self):
    if not isinstance(self.k, int) or self.k < 1:
      raise ValueError(f"TopK.k must be an int >= 1, got {self.k!r}")
    _check_temperature(self.temperature)

  def sample(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    k = min(self.k, logits.shape[-1])
    values, indices = jax.lax.top_k(logits, k)
    choice = categorical_rows(keys, values / self.temperature)
    return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TopP:
  """Nucleus sampling: the smallest set of most-likely tokens whose probability reaches p.

  Probabilities are those of softmax(logits / temperature) (after the optional top_k cut, as vLLM and
  transformers apply them: temperature, then top-k, then top-p). A token is kept when the probability mass
  of the tokens ranked above it is < p, so the most likely token is always kept.
  """
  p: float
  temperature: float = 1.0
  top_k: int = 0  # 0 = no top-k cut before the nucleus

  def __post_init__(self):
    if not (isinstance(self.p, (int, float)) and 0.0 < self.p <= 1.0):
      raise ValueError(f"TopP.p must be in (0, 1], got {self.p!r}")
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"TopP.top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
    _check_temperature(self.temperature)

  def sample(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    scaled = logits / self.temperature
    if self.top_k == 0 or self.top_k >= scaled.shape[-1]:  # the whole vocabulary: no sort
      return categorical_rows(keys, jnp.where(nucleus_mask(scaled, self.p), scaled, -jnp.inf))
    # The k highest, descending with ties by lower token id: the order nucleus_mask ranks ties in.
    values, order = jax.lax.top_k(scaled, self.top_k)
    choice = categorical_rows(keys, jnp.where(nucleus_mask(values, self.p), values, -jnp.inf))
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


SamplingConfig = Union[Greedy, Temperature, TopK, TopP]


def make_strategy(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> SamplingConfig:
  """Builds a strategy from the numbers configs usually hold (vLLM / transformers conventions).

  temperature == 0 means greedy; top_k == 0 and top_p == 1 mean "no cut".
  """
  if temperature == 0:
    return Greedy()
  if top_p < 1.0:
    return TopP(p=top_p, temperature=temperature, top_k=top_k)
  if top_k > 0:
    return TopK(k=top_k, temperature=temperature)
  return Temperature(temperature=temperature)
