"""Checkpoints: exact round trip, keep-N, structure errors, SIGKILL-and-resume, HF export.

Run as a script this file is the resume worker: it trains a tiny LoRA model step by step, saving a
checkpoint after every step, printing each step's metrics (exact float reprs) and "CHECKPOINT <step>";
with --pause-after S it sleeps after checkpoint S so the test can SIGKILL it there.
"""
import argparse
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jerp_jax.models.config import ModelConfig
from jerp_jax.models.decoder import Decoder
from jerp_jax.rl import train_step as ts
from jerp_jax.rl.batch import TrainBatch
from jerp_jax.rl.losses import LossConfig
from jerp_jax.sharding import make_mesh
from jerp_jax.training.checkpointing import TrainCheckpointer, export_policy

CONFIG = ModelConfig.tiny(64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=8, lora_rank=4)
TRAIN_CFG = ts.TrainConfig(loss=LossConfig(), entropy_metric=False)  # Small program: fast compile.
B, T = 4, 10


def _fresh_state(mesh=None) -> ts.TrainState:
  return ts.create_train_state(Decoder(CONFIG, rngs=nnx.Rngs(0)),
                               ts.OptimizerConfig(learning_rate=1e-2, warmup_steps=1), mesh=mesh)


_JITTED = {}


def _step_fn(state: ts.TrainState):
  """One jitted train step per process (the tests in this file share its compile)."""
  if "train" not in _JITTED:
    _JITTED["train"] = ts.jit_step(ts.train_step, TRAIN_CFG, state)
  return _JITTED["train"]


def _batch(data_position: int, rng: jax.Array) -> TrainBatch:
  """Tokens from the data position, advantages from the run's RNG (both must resume exactly)."""
  tokens = np.random.default_rng(data_position)
  noise = np.random.default_rng(np.asarray(jax.random.key_data(rng)).tolist())
  ids = tokens.integers(0, CONFIG.vocab_size, (B, T)).astype(np.int32)
  loss_mask = np.zeros((B, T), np.float32)
  loss_mask[:, 4:] = 1
  advantages = noise.normal(size=(B, 1)).astype(np.float32) * loss_mask
  old = np.full((B, T), -np.log(CONFIG.vocab_size), np.float32) * loss_mask
  return TrainBatch(input_ids=ids, attention_mask=np.ones((B, T), np.int32), loss_mask=loss_mask,
                    old_logprobs=old, advantages=advantages)


def _train(directory: str, num_steps: int, pause_after: int = -1, out=sys.stdout) -> None:
  """The resumable loop: restore if a checkpoint exists, then step / save / report."""
  state = _fresh_state()
  rng, data_position, pool = jax.random.key(7), 0, {"rules": []}
  checkpointer = TrainCheckpointer(directory, max_to_keep=2)
  if checkpointer.latest_step() is not None:
    restored = checkpointer.restore(state)
    state, rng = restored.state, restored.rng
    data_position, pool = restored.data_position, restored.rule_pool
  step = _step_fn(state)
  while int(state.step) < num_steps:
    rng, batch_rng = jax.random.split(rng)
    state, metrics = step(state, _batch(data_position, batch_rng))
    data_position += 1
    pool = {"rules": pool["rules"] + [f"rule after step {int(state.step)}"]}
    print("METRICS", json.dumps({"step": int(state.step), "pool": pool,
                                 **{k: repr(float(v)) for k, v in metrics.items()}}),
          file=out, flush=True)
    checkpointer.save(state, rng=rng, data_position=data_position, rule_pool=pool)
    print("CHECKPOINT", int(state.step), file=out, flush=True)
    if int(state.step) == pause_after:
      time.sleep(600)  # Killed here by the test.
  checkpointer.close()


def _metrics_by_step(lines) -> dict:
  return {m["step"]: m for m in (json.loads(l.split(" ", 1)[1]) for l in lines
                                 if l.startswith("METRICS"))}


def _worker(directory, num_steps, pause_after=-1) -> subprocess.Popen:
  """The worker in a fresh process; the processes share a persistent compilation cache."""
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))),
             JAX_COMPILATION_CACHE_DIR=os.path.join(str(directory), "..", "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--dir", str(directory),
                           "--steps", str(num_steps), "--pause-after", str(pause_after)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def test_sigkill_and_resume_reproduces_next_steps(tmp_path):
  killed = _worker(tmp_path / "run", 4, pause_after=2)
  lines = []
  for line in killed.stdout:
    lines.append(line.strip())
    if line.strip() == "CHECKPOINT 2":
      break
  os.kill(killed.pid, signal.SIGKILL)
  killed.wait(timeout=30)
  assert killed.returncode == -signal.SIGKILL
  resumed = _worker(tmp_path / "run", 4)
  out, _ = resumed.communicate(timeout=300)
  assert resumed.returncode == 0
  after_resume = _metrics_by_step(out.splitlines())
  assert sorted(after_resume) == [3, 4]  # Nothing before the checkpoint was redone.
  uninterrupted = io.StringIO()
  _train(str(tmp_path / "reference"), 4, out=uninterrupted)
  reference = _metrics_by_step(uninterrupted.getvalue().splitlines())
  assert _metrics_by_step(lines)[2] == reference[2]
  for step in (3, 4):
    assert after_resume[step] == reference[step]  # Exact float reprs, rule pool included.


def test_round_trip_keep_n_and_errors(tmp_path):
  state = _fresh_state()
  step = _step_fn(state)
  checkpointer = TrainCheckpointer(tmp_path, max_to_keep=2)
  rng = jax.random.key(3)
  for i in range(3):
    state, _ = step(state, _batch(i, rng))
    checkpointer.save(state, rng=rng, data_position={"epoch": 0, "index": i},
                      rule_pool={"task/1": [{"text": "open the fridge", "score": 2}]})
  assert checkpointer.all_steps() == [2, 3]
  assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
  restored = checkpointer.restore(_fresh_state())
  assert restored.step == 3 and restored.data_position == {"epoch": 0, "index": 2}
  assert restored.rule_pool == {"task/1": [{"text": "open the fridge", "score": 2}]}
  np.testing.assert_array_equal(jax.random.key_data(restored.rng), jax.random.key_data(rng))
  for a, b in zip(jax.tree.leaves((state.params, state.opt_state, state.step)),
                  jax.tree.leaves((restored.state.params, restored.state.opt_state,
                                   restored.state.step)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  older = checkpointer.restore(_fresh_state(), step=2)
  assert older.data_position["index"] == 1
  with pytest.raises(FileNotFoundError, match="step 1"):
    checkpointer.restore(_fresh_state(), step=1)
  full = ts.create_train_state(Decoder(dataclasses.replace(CONFIG, lora_rank=0)),
                               ts.OptimizerConfig(), mode="full")
  with pytest.raises(ValueError, match="mode"):
    checkpointer.restore(full)
  other = ts.create_train_state(Decoder(dataclasses.replace(CONFIG, lora_rank=2)),
                                ts.OptimizerConfig())
  with pytest.raises(ValueError, match=r"leaf .*\['lora_a'\].* has shape \(2, 64, 4\) in the checkpoint "
                                       r"but \(2, 64, 2\) in the template"):
    checkpointer.restore(other)
  checkpointer.close()


def test_restore_onto_mesh_and_full_mode_saves_frozen(tmp_path):
  state = _fresh_state()
  checkpointer = TrainCheckpointer(tmp_path / "lora")
  checkpointer.save(state, rng=jnp.array([1, 2], jnp.uint32), data_position=5)
  mesh = make_mesh(2, 2, 2)
  restored = checkpointer.restore(_fresh_state(mesh))
  lora_a = restored.state.params["layers"]["q_proj"]["lora_a"].get_value()
  assert lora_a.sharding.mesh.shape == mesh.shape
  np.testing.assert_array_equal(restored.rng, [1, 2])
  np.testing.assert_array_equal(lora_a, state.params["layers"]["q_proj"]["lora_a"].get_value())
  checkpointer.close()
  full = ts.create_train_state(Decoder(dataclasses.replace(CONFIG, lora_rank=0)),
                               ts.OptimizerConfig(), mode="full", reference_copy=True)
  full_ckpt = TrainCheckpointer(tmp_path / "full")
  full_ckpt.save(full, rng=jax.random.key(0), data_position=0)
  template = ts.create_train_state(Decoder(dataclasses.replace(CONFIG, lora_rank=0),
                                           rngs=nnx.Rngs(9)), ts.OptimizerConfig(), mode="full",
                                   reference_copy=True)
  back = full_ckpt.restore(template).state
  full_ckpt.close()
  for a, b in zip(jax.tree.leaves((full.params, full.ref_params, full.frozen)),
                  jax.tree.leaves((back.params, back.ref_params, back.frozen)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_policy_merges_lora(tmp_path):
  from jerp_jax.models import load_pretrained  # pylint: disable=import-outside-toplevel
  model = Decoder(CONFIG, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  nnx.update(model, jax.tree.map(
      lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape).astype(np.float32)),
      nnx.state(model, nnx.LoRAParam)))
  state = ts.create_train_state(model, ts.OptimizerConfig())
  export_policy(state, tmp_path / "hf")
  exported, config = load_pretrained(tmp_path / "hf")
  assert config.lora_rank == 0
  ids = jnp.asarray(rng.integers(0, CONFIG.vocab_size, (2, 7)), jnp.int32)
  np.testing.assert_allclose(exported(ids), ts.policy_model(state)(ids), rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--dir", required=True)
  parser.add_argument("--steps", type=int, required=True)
  parser.add_argument("--pause-after", type=int, default=-1)
  args = parser.parse_args()
  _train(args.dir, args.steps, args.pause_after)
