"""Multi-host training: global mini-batch planning (fast) and 2 local processes vs 1 process (slow).

The slow test launches the tiny trainer as 2 JAX processes (CPU, gloo, 2 simulated devices each: a global
mesh of 4) and as 1 process with 4 devices, with the same global batch: both hosts must end with
bitwise-identical parameters and rule pools, equal to the single-process run's (parameters to float
round-off: the padded batch layout differs, so XLA's sums run in a different order; rollouts, rewards,
rule pools and metrics exactly).

Worker: `python -m tests.training.test_multihost OUT_DIR RUN_DIR MESH` (process id / count from JAX_* env).
"""
import json
import os
import sys

import numpy as np
import pytest

from jerp_jax.testing.tiny_configs import tiny_config
from jerp_jax.training import global_batch



def _single_host_sets(counts, mini, seed):
  plan = global_batch.plan_minibatches([sum(counts)], 0, mini, seed)
  return [set(rows.tolist()) for rows in plan.local_rows]


@pytest.mark.parametrize("counts,mini,multiple", [([5, 7], 4, 1), ([9, 0, 3], 5, 2), ([16, 16], 64, 4),
                                                  ([1, 1], 1, 1)])
def test_plan_minibatches_partitions_the_single_host_minibatches(counts, mini, multiple):
  seed = [3, 1, 1]
  plans = [global_batch.plan_minibatches(counts, p, mini, seed, multiple) for p in range(len(counts))]
  offsets = np.concatenate([[0], np.cumsum(counts)])
  expected = _single_host_sets(counts, mini, seed)
  assert all(plan.rows_per_host == plans[0].rows_per_host for plan in plans)
  assert plans[0].num_minibatches == len(expected) == -(-sum(counts) // mini)
  for j, members in enumerate(expected):
    union = set()
    for p, plan in enumerate(plans):
      rows = plan.local_rows[j]
      assert list(rows) == sorted(rows) and len(rows) <= plan.rows_per_host[j]
      assert all(0 <= r < counts[p] for r in rows)
      union |= {int(r + offsets[p]) for r in rows}
    assert union == members
    assert plans[0].rows_per_host[j] % multiple == 0


def test_plan_minibatches_rejects_bad_input():
  with pytest.raises(ValueError, match="process_index"):
    global_batch.plan_minibatches([3, 3], 2, 4, [0])
  with pytest.raises(ValueError, match="mini_batch_size"):
    global_batch.plan_minibatches([3], 0, 0, [0])
  with pytest.raises(ValueError, match="row counts"):
    global_batch.plan_minibatches([3, -1], 0, 4, [0])


def test_padded_rows_keeps_selected_rows_and_pads_without_loss():
  from jerp_jax.rl.batch import build_train_batch
  batch = build_train_batch([[1, 2], [3], [4, 5, 6]], [[7], [8, 9], [10]], [[-0.5], [-0.1, -0.2], [-1.0]],
                            [1.0, -1.0, 0.5], seq_len=6, pad_id=0)
  out = global_batch.padded_rows(batch, np.array([0, 2]), 4, pad_id=0)
  assert out.input_ids.shape == (4, 6)
  np.testing.assert_array_equal(out.input_ids[:2], np.asarray(batch.input_ids)[[0, 2]])
  np.testing.assert_array_equal(out.advantages[:2], np.asarray(batch.advantages)[[0, 2]])
  assert not out.loss_mask[2:].any() and (out.attention_mask[2:, 0] == 1).all()
  assert out.attention_mask[2:, 1:].sum() == 0
  with pytest.raises(ValueError, match="do not fit"):
    global_batch.padded_rows(batch, np.array([0, 1, 2]), 2, pad_id=0)
  empty = global_batch.empty_batch(6, pad_id=0)
  assert global_batch.padded_rows(empty, np.zeros((0,), np.int64), 2, pad_id=0).input_ids.shape == (2, 6)
  windowed = build_train_batch([[1, 2], [3]], [[7], [8, 9]], [[-0.5], [-0.1, -0.2]], [1.0, -1.0], seq_len=32)
  assert global_batch.padded_rows(windowed, np.array([1]), 2, pad_id=0).score_window == windowed.score_window == 16


def seed_rules(pool) -> None:
  """Three rules under the global key, so retrieval, usage credit and reflection all edit the pool."""
  from jerp_jax.rules import ops as ops_lib
  key = pool.task_key("", "")
  pool.register_task(key, "any household task")
  pool.apply_ops(key, [ops_lib.Op("ADD", text=t) for t in
                       ("Look inside closed receptacles before giving up.", "Take the object before moving.",
                        "Go to the target receptacle last.")], step=0, source="test")


def _worker(out_dir: str, run_dir: str, mesh: str) -> None:
  import jax
  from flax import nnx
  from jerp_jax.training import loop
  config = tiny_config(run_dir)
  if mesh == "fsdp":  # parameters sharded over every device of every host
    config.mesh.data, config.mesh.fsdp = 1, -1
  trainer = loop.Trainer(config)
  pool = trainer.pool
  seed_rules(pool)
  trainer.set_pool(pool)
  try:
    results = trainer.run()
  finally:
    trainer.close()
  pid = jax.process_index()
  leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(trainer.state.params))[0]
  from jax.experimental import multihost_utils
  whole = lambda x: np.asarray(x if x.is_fully_addressable else multihost_utils.process_allgather(x, tiled=True))
  np.savez(os.path.join(out_dir, f"params_{pid}.npz"),
           **{jax.tree_util.keystr(path): whole(leaf) for path, leaf in leaves})
  with open(os.path.join(out_dir, f"pool_{pid}.json"), "w") as f:
    json.dump(trainer.pool.state_dict(), f, sort_keys=True, default=str)
  with open(os.path.join(out_dir, f"results_{pid}.json"), "w") as f:
    json.dump({"results": [r.__dict__ for r in results], "processes": jax.process_count(),
               "devices": jax.device_count(), "steps": int(trainer.state.step)}, f)


# wall-clock fields, and train/token_fill (how one host's packed rows are laid out: it depends on the hosts)
_NOT_REPRODUCED = ("time", "wall_s", "generate_s", "env_s", "tokens_per_s", "prompt_tokens_per_s",
                   "env_steps_per_s", "iteration_s", "token_fill")


def deterministic_records(path: str) -> list[dict]:
  """metrics.jsonl records without wall-clock and host-layout fields."""
  from jerp_jax.training.metrics import read_jsonl
  return [{k: v for k, v in r.items() if not k.endswith(_NOT_REPRODUCED)} for r in read_jsonl(path)]


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["data", "fsdp"])
def test_two_processes_match_one_process(tmp_path, mesh):
  """4-6 min per mesh on the shared 2-core CPU (three JAX processes, each compiling the sampler and train
  step). mesh "data": replicated parameters; "fsdp": parameters sharded over both hosts' devices (the
  hosts' samplers use all-gathered local copies)."""
  from tests.training import multihost_launch
  cache = str(tmp_path / "xla_cache")
  runs = {}
  for name, procs, devices in (("multi", 2, 2), ("single", 1, 4)):
    out_dir, run_dir = tmp_path / f"{name}_out", tmp_path / f"{name}_run"
    out_dir.mkdir()
    results = multihost_launch.run_processes("tests.training.test_multihost",
                                             [str(out_dir), str(run_dir), mesh],
                                             procs, devices, timeout=900, compile_cache=cache)
    for r in results:
      assert r.returncode == 0, r.stdout[-4000:]
    runs[name] = (out_dir, run_dir)
  multi, single = runs["multi"][0], runs["single"][0]
  info = [json.load(open(multi / f"results_{p}.json")) for p in range(2)]
  assert [i["processes"] for i in info] == [2, 2] and info[0]["devices"] == 4
  assert json.load(open(single / "results_0.json"))["devices"] == 4
  assert info[0]["steps"] > 0  # the policy was updated
  # both hosts: identical parameters and rule pools
  p0, p1, ps = (np.load(d / f"params_{p}.npz") for d, p in ((multi, 0), (multi, 1), (single, 0)))
  for name in p0.files:
    np.testing.assert_array_equal(p0[name], p1[name])
  pools = [open(multi / f"pool_{p}.json").read() for p in range(2)]
  assert pools[0] == pools[1]
  pool = json.loads(pools[0])
  assert sum(len(t["rules"]) for t in pool["tasks"]) >= 1
  # ... equal to the single-process run with the same global batch
  assert pools[0] == open(single / "pool_0.json").read()
  for name in p0.files:
    np.testing.assert_allclose(p0[name], ps[name], rtol=2e-5, atol=2e-6)
  assert info[0]["results"] == json.load(open(single / "results_0.json"))["results"]
  multi_records = deterministic_records(runs["multi"][1] / "metrics.jsonl")
  single_records = deterministic_records(runs["single"][1] / "metrics.jsonl")
  assert [sorted(r) for r in multi_records] == [sorted(r) for r in single_records]
  for m, s in zip(multi_records, single_records):
    for key in m:  # losses are float sums over a differently padded batch: round-off only
      if key.startswith("train/") and isinstance(m[key], float):
        np.testing.assert_allclose(m[key], s[key], rtol=1e-4, atol=1e-6, err_msg=key)
      else:
        assert m[key] == s[key], key
  assert not os.path.exists(runs["multi"][1] / "metrics.jsonl.tmp")



def test_rollout_keys_follow_the_episode_not_its_batch_position():
  """A host running only group 1 (episode ids 2, 3) passes the sampler the same per-row keys for those
  episodes as a single host running groups 0 and 1: fold_in(fold_in(rng, turn), episode id)."""
  import jax
  from jerp_jax.rl import rollout
  from jerp_jax.testing import tiny_tokenizer
  from tests.rl.test_rollout import CorridorEnv, ScriptedSampler, _respond

  class KeyRecorder(ScriptedSampler):
    def generate(self, state, prompts, **kwargs):
      self.keys = getattr(self, "keys", []) + [np.asarray(jax.random.key_data(kwargs["rng"]))]
      return super().generate(state, prompts, **kwargs)

  tokenizer = tiny_tokenizer.load_tiny_tokenizer()
  config = rollout.RolloutConfig(group_size=2, max_turns=2)
  rng = jax.random.key(7)
  both = KeyRecorder(tokenizer, lambda turn, row: _respond("look"))
  rollout.collect_rollouts(both, None, tokenizer, [CorridorEnv() for _ in range(4)],
                           [rollout.GroupSpec(seed=1), rollout.GroupSpec(seed=3)], config, rng=rng)
  second = KeyRecorder(tokenizer, lambda turn, row: _respond("look"))
  rollout.collect_rollouts(second, None, tokenizer, [CorridorEnv() for _ in range(2)],
                           [rollout.GroupSpec(seed=3)], config, rng=rng, episode_ids=[2, 3])
  assert len(both.keys) == len(second.keys) == 2
  for turn in range(2):
    expected = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.fold_in(rng, turn), e)))
                         for e in (2, 3)])
    np.testing.assert_array_equal(second.keys[turn], expected)
    np.testing.assert_array_equal(both.keys[turn][2:], expected)
  with pytest.raises(ValueError, match="episode_ids"):
    rollout.collect_rollouts(second, None, tokenizer, [CorridorEnv() for _ in range(2)],
                             [rollout.GroupSpec(seed=3)], config, rng=rng, episode_ids=[2])


if __name__ == "__main__":
  _worker(sys.argv[1], sys.argv[2], sys.argv[3])
