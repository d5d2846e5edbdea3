"""benchmarks/memory_plan.py: per-device memory of a config's programs, compiled on simulated devices."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_memory_plan_of_the_gpu8_config_at_a_tiny_shape():
  """The 8-GPU config's shapes (256 episodes, 4096-token prompt bucket + 512 new tokens, 32-turn
  mini-batches on fsdp 8) with the tiny model: the compiler's KV-cache output equals the hand-computed
  size, and the cache is the 4608-slot bucket (prompt + 512), not the next power of two."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "memory_plan.py"), "--config=configs/qwen2_5_1_5b_gpu8.py",
       "--preset=alfworld-tiny", "--devices=8", "--row_lengths=1024"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=True)
  plan = json.loads(done.stdout)
  assert plan["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1} and plan["train_mode"] == "lora"
  assert plan["dtype"] == "bfloat16" and plan["remat"]
  train, prefill, decode = (plan["programs"][k] for k in ("train_step_32x1024", "prefill", "decode"))
  assert train["rows_per_device"] == 4 and train["score_window"] == 512
  assert train["aliased_gb"] > 0 and train["peak_gb"] >= train["arguments_gb"]
  assert prefill["batch"] == 256 and prefill["prompt_bucket"] == 4096 and prefill["cache_len"] == 4608
  # 2 layers x (k, v) x 32 rows per device x 2 kv heads x 4608 slots x head_dim 32 x 2 bytes (bf16)
  kv = 2 * 2 * 32 * 2 * 4608 * 32 * 2 / 2**30
  assert abs(plan["kv_cache_gb_per_device_computed"] - round(kv, 3)) < 1e-3
  # prefill returns the loop state: the cache plus [rows, new tokens] buffers of a few MB
  assert kv <= prefill["outputs_gb"] < kv + 0.01
  assert decode["aliased_gb"] >= kv * 0.999  # the donated loop state is updated in place
