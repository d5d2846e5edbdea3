"""The jitted GRPO train step: LoRA-off reference, zero gradients, accumulation, sharding, SFT."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jerp_jax.models.config import ModelConfig
from jerp_jax.models.decoder import Decoder
from jerp_jax.rl import train_step as ts
from jerp_jax.rl.advantages import grpo_advantages
from jerp_jax.rl.batch import TrainBatch, loss_span, segment_score_columns
from jerp_jax.rl.packing import pack_rows
from jerp_jax.rl.losses import LossConfig
from jerp_jax.sharding import MESH_AXES, make_mesh

CONFIG = ModelConfig.tiny(64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=8, lora_rank=4)
B, T = 8, 12


def _model(lora_rank: int = 4) -> Decoder:
  """Tiny decoder; LoRA B factors made non-zero (host RNG: no per-shape kernels to compile)."""
  model = Decoder(dataclasses.replace(CONFIG, lora_rank=lora_rank), rngs=nnx.Rngs(0))
  if lora_rank:
    rng = np.random.default_rng(1)
    lora = nnx.state(model, nnx.LoRAParam)
    nnx.update(model, jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x) + rng.normal(0, 0.2, x.shape).astype(np.float32)),
        lora))
  return model


def _batch(state: ts.TrainState, seed: int = 0, advantages=None) -> TrainBatch:
  """Right-padded rows with varied prompt/response lengths; old log-probs = current + noise."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, CONFIG.vocab_size, (B, T)).astype(np.int32)
  attention = np.zeros((B, T), np.int32)
  loss_mask = np.zeros((B, T), np.float32)
  for row in range(B):
    prompt, total = rng.integers(2, 6), rng.integers(7, T + 1)
    attention[row, :total] = 1
    loss_mask[row, prompt:total] = 1
  current = np.asarray(ts.compute_logprobs(state, ids, attention))
  old = (current + rng.normal(0, 0.3, (B, T))).astype(np.float32) * loss_mask
  if advantages is None:
    advantages = rng.normal(size=(B, 1))
  return TrainBatch(input_ids=ids, attention_mask=attention, loss_mask=loss_mask,
                    old_logprobs=old, advantages=(np.asarray(advantages) * loss_mask).astype(
                        np.float32))


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_lora_off_equals_base_model():
  model = _model()
  base = Decoder(dataclasses.replace(CONFIG, lora_rank=0), rngs=nnx.Rngs(5))
  _, _, base_weights = nnx.split(model, nnx.LoRAParam, ...)
  nnx.update(base, base_weights)
  state = ts.create_train_state(model, ts.OptimizerConfig())
  batch = _batch(state)
  ref = ts.compute_logprobs(state, batch.input_ids, batch.attention_mask, use_lora=False)
  base_state = ts.create_train_state(base, ts.OptimizerConfig(), mode="full")
  expected = ts.compute_logprobs(base_state, batch.input_ids, batch.attention_mask)
  np.testing.assert_allclose(ref, expected, rtol=1e-6, atol=1e-6)
  policy = ts.compute_logprobs(state, batch.input_ids, batch.attention_mask)
  assert np.abs(np.asarray(policy) - np.asarray(ref)).max() > 1e-3  # LoRA is really active.


def test_zero_gradient_when_group_rewards_are_equal():
  state = ts.create_train_state(_model(), ts.OptimizerConfig(learning_rate=1.0, weight_decay=0.0))
  advantages = grpo_advantages(np.full((2, 4), 0.7)).reshape(B, 1)
  batch = _batch(state, advantages=advantages)
  before = jax.tree.map(np.asarray, state.params)
  cfg = ts.TrainConfig(loss=LossConfig(kl_coef=0.0, entropy_coef=0.0))
  new_state, metrics = ts.jit_step(ts.train_step, cfg, state)(state, batch)
  assert float(metrics["grad_norm"]) == 0.0
  _assert_trees_close(new_state.params, before, rtol=0, atol=0)


def test_step_raises_positive_and_lowers_negative_advantage_responses():
  """On-policy rows (old = current log-probs): one step raises the response log-likelihood of the rows
  with advantage +1 and lowers it for the rows with -1 (the sign convention of the whole learner)."""
  state = ts.create_train_state(_model(lora_rank=0), ts.OptimizerConfig(learning_rate=1e-3, warmup_steps=0),
                                mode="full")
  signs = np.array([1.0, -1.0] * (B // 2))[:, None]
  batch = _batch(state, seed=3, advantages=signs)
  before = np.asarray(ts.compute_logprobs(state, batch.input_ids, batch.attention_mask))
  batch = dataclasses.replace(batch, old_logprobs=(before * batch.loss_mask).astype(np.float32))
  cfg = ts.TrainConfig(loss=LossConfig(kl_coef=0.0))
  new_state, metrics = ts.jit_step(ts.train_step, cfg, state)(state, batch)
  assert float(metrics["ppo_kl"]) == pytest.approx(0.0, abs=1e-6)  # on-policy: ratio 1 before the step
  after = np.asarray(ts.compute_logprobs(new_state, batch.input_ids, batch.attention_mask))
  change = ((after - before) * batch.loss_mask).sum(-1)
  assert change[signs[:, 0] > 0].mean() > 0 > change[signs[:, 0] < 0].mean(), change


SHARDED_OPT = ts.OptimizerConfig(learning_rate=1e-2, eps=1e-3, warmup_steps=1)
SHARDED_CFG = ts.TrainConfig(
    loss=LossConfig(clip_low=0.2, clip_high=0.28, kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01,
                    aggregation="seq-mean-token-mean"), micro_batches=2)


@pytest.fixture(scope="module")
def single_device_run():
  """Two LoRA steps of the plain single-device jit: (batch, per-step metrics, final state)."""
  state = ts.create_train_state(_model(), SHARDED_OPT)
  batch = _batch(state)
  step = ts.jit_step(ts.train_step, SHARDED_CFG, state)
  metrics = []
  for _ in range(2):
    state, m = step(state, batch)
    metrics.append(jax.tree.map(np.asarray, m))
  return batch, metrics, state


def test_gradient_accumulation_equals_one_batch(single_device_run):
  """k=2 interleaved micro-batches (the fixture's step) == one batch, incl. seq-mean, KL, entropy."""
  batch, accumulated_metrics, accumulated = single_device_run
  state = ts.create_train_state(_model(), SHARDED_OPT)
  step = ts.jit_step(ts.train_step, dataclasses.replace(SHARDED_CFG, micro_batches=1), state)
  for expected in accumulated_metrics:
    state, metrics = step(state, batch)
    assert metrics.keys() == expected.keys()
    for name in expected:
      np.testing.assert_allclose(metrics[name], expected[name], rtol=1e-5, atol=1e-7,
                                 err_msg=name)
  assert float(accumulated_metrics[0]["pg_clipfrac"]) > 0
  assert float(accumulated_metrics[0]["kl"]) > 0
  _assert_trees_close(state.params, accumulated.params, rtol=1e-4, atol=1e-6)


def _windowed(batch: TrainBatch) -> TrainBatch:
  """The batch with the tightest score window: some rows' windows must move left to fit the row."""
  window = loss_span(batch.loss_mask)
  first = np.argmax(batch.loss_mask > 0, axis=1)
  assert window < T and (first > T - window).any()
  return batch.replace(score_window=window)


def test_score_window_step_equals_whole_row_step(single_device_run):
  """Logits at the response columns only: same metrics (KL, entropy, seq-mean) and updates."""
  batch, expected_metrics, expected = single_device_run
  state = ts.create_train_state(_model(), SHARDED_OPT)
  step = ts.jit_step(ts.train_step, SHARDED_CFG, state)
  for expected_step in expected_metrics:
    state, metrics = step(state, _windowed(batch))
    for name in expected_step:
      np.testing.assert_allclose(metrics[name], expected_step[name], rtol=1e-5, atol=1e-7, err_msg=name)
  _assert_trees_close(state.params, expected.params, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mesh_shape,window", [((2, 2, 2), False), ((8, 1, 1), False), ((2, 2, 2), True)])
def test_sharded_step_equals_single_device(single_device_run, mesh_shape, window):
  batch, single_metrics, single = single_device_run
  if window:
    batch = _windowed(batch)
  # The windowed case takes its mesh from `jax.make_mesh` (Explicit axes), which the step runs in Auto mode.
  mesh = jax.make_mesh(mesh_shape, MESH_AXES) if window else make_mesh(*mesh_shape)
  sharded = ts.create_train_state(_model(), SHARDED_OPT, mesh=mesh)
  step = ts.jit_step(ts.train_step, SHARDED_CFG, sharded, mesh)
  for expected in single_metrics:
    sharded, metrics = step(sharded, batch)
    for name in expected:  # float32 sums in another order: ~1e-5 relative.
      np.testing.assert_allclose(metrics[name], expected[name], rtol=1e-4, atol=1e-6,
                                 err_msg=name)
  # Updates are ~1e-2 (lr); float32 reordering noise through Adam stays below 1e-5.
  _assert_trees_close(sharded.params, single.params, rtol=1e-4, atol=1e-5)
  _assert_trees_close(sharded.opt_state, single.opt_state, rtol=1e-3, atol=1e-6)
  _assert_trees_close(sharded.frozen, single.frozen, rtol=0, atol=0)
  assert int(sharded.step) == 2
  frozen_embed = sharded.frozen["embed"].get_value()
  assert len(frozen_embed.sharding.device_set) == 8
  if mesh_shape == (2, 2, 2):  # Base weights really split over fsdp x tensor.
    assert frozen_embed.addressable_shards[0].data.shape == (32, 16)


@pytest.mark.parametrize("mesh_shape", [None, (2, 2, 2)])
def test_packed_step_equals_unpacked_step(single_device_run, mesh_shape):
  """The fixture's rows packed side by side (two micro-batches, KL, entropy, seq-mean over segments,
  windows moved left over the previous segment): the same metrics and updates as the unpacked rows."""
  batch, expected_metrics, expected = single_device_run
  mesh = None if mesh_shape is None else make_mesh(*mesh_shape)
  packed = pack_rows(batch, seq_len=2 * T, row_multiple=8 if mesh else 2)
  assert packed.max_segments >= 2 and packed.score_window < 2 * T
  columns, owned = segment_score_columns(jnp.asarray(packed.loss_mask), jnp.asarray(packed.segment_ids),
                                         packed.score_window, packed.max_segments)
  assert not np.asarray(owned)[np.asarray(packed.segment_ids).max(1) > 1].all()  # some window moved left
  state = ts.create_train_state(_model(), SHARDED_OPT, mesh=mesh)
  step = ts.jit_step(ts.train_step, SHARDED_CFG, state, mesh)
  for expected_step in expected_metrics:
    state, metrics = step(state, packed)
    for name in expected_step:
      np.testing.assert_allclose(metrics[name], expected_step[name], rtol=1e-4, atol=1e-6, err_msg=name)
  _assert_trees_close(state.params, expected.params, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_full_finetune_reference_copy_and_kl():
  cfg = ts.TrainConfig(loss=LossConfig(kl_coef=0.1, kl_estimator="k3"), entropy_metric=False)
  state = ts.create_train_state(_model(0), ts.OptimizerConfig(learning_rate=1e-2), mode="full",
                                reference_copy=True)
  batch = _batch(state)
  step = ts.jit_step(ts.train_step, cfg, state)
  state, m0 = step(state, batch)
  assert float(m0["kl"]) == 0.0  # Policy == frozen reference before the first update.
  state, m1 = step(state, batch)
  assert float(m1["kl"]) > 0.0
  ref = ts.compute_logprobs(state, batch.input_ids, batch.attention_mask, use_lora=False)
  np.testing.assert_allclose(ref, ts.compute_logprobs(
      ts.create_train_state(_model(0), ts.OptimizerConfig(), mode="full"), batch.input_ids,
      batch.attention_mask), rtol=1e-6, atol=1e-6)
  no_ref = ts.create_train_state(_model(0), ts.OptimizerConfig(), mode="full")
  with pytest.raises(ValueError, match="no reference"):
    ts.train_step(no_ref, batch, cfg=cfg)
  with pytest.raises(ValueError, match="no LoRAParam"):
    ts.create_train_state(_model(0), ts.OptimizerConfig(), mode="lora")


def test_sft_step_learns_with_warmup():
  state = ts.create_train_state(_model(), ts.OptimizerConfig(learning_rate=3e-2, warmup_steps=2))
  batch = _batch(state)
  step = ts.jit_step(ts.sft_step, ts.TrainConfig(micro_batches=2), state)
  losses, rates = [], []
  for _ in range(6):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    rates.append(float(metrics["learning_rate"]))
  np.testing.assert_allclose(rates, [0.0, 0.015, 0.03, 0.03, 0.03, 0.03], rtol=1e-6)
  assert losses[0] == losses[1]  # Rate 0 at step 0.
  assert losses[-1] < losses[1] - 0.05
  # The same steps scoring only the response columns: the same losses and weights.
  windowed = ts.create_train_state(_model(), ts.OptimizerConfig(learning_rate=3e-2, warmup_steps=2))
  for loss in losses:
    windowed, metrics = step(windowed, _windowed(batch))
    np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
  _assert_trees_close(windowed.params, state.params, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_bf16_compute_close_to_float32():
  state32 = ts.create_train_state(_model(), ts.OptimizerConfig())
  batch = _batch(state32)
  model16 = Decoder(dataclasses.replace(CONFIG, dtype=jnp.bfloat16), rngs=nnx.Rngs(0))
  nnx.update(model16, nnx.state(ts.policy_model(state32)))
  state16 = ts.create_train_state(model16, ts.OptimizerConfig())
  lp32 = ts.compute_logprobs(state32, batch.input_ids, batch.attention_mask)
  lp16 = ts.compute_logprobs(state16, batch.input_ids, batch.attention_mask)
  assert np.asarray(lp16).dtype == np.float32
  np.testing.assert_allclose(lp16, lp32, atol=0.05)
