"""benchmarks/device_check.sh (the one command a lent GPU runs) at smoke sizes on the CPU: every step runs,
exits 0 and writes the JSON the notes are built from, so the script cannot rot between GPU loans."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_device_check_smoke_runs_every_step_and_writes_json(tmp_path):
  env = dict(os.environ, SIZE="smoke", OUT=str(tmp_path), PY=sys.executable)
  env.pop("JAX_PLATFORMS", None)
  env.pop("XLA_FLAGS", None)
  done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh")], env=env,
                        capture_output=True, text=True, timeout=600, check=True)
  steps = [line for line in done.stdout.splitlines() if line.startswith("step ")]
  assert [s.split(":")[0] for s in steps] == [
      "step tests", "step train_step_0p5b", "step decode_0p5b", "step decode_tiny"], done.stdout
  assert all("rc=0," in s for s in steps), done.stdout + (tmp_path / "stderr.log").read_text()
  assert "passed" in (tmp_path / "tests.log").read_text()

  train = json.loads((tmp_path / "train_step_0p5b.json").read_text())
  assert train["config"]["preset"] == "qwen2.5-0.5b" and train["config"]["dtype"] == "bfloat16"
  for mode in ("full", "lora"):
    assert train[mode]["jax_tokens_per_s"] > 0 and train[mode]["torch_tokens_per_s"] > 0
    assert 0 < train[mode]["jax_fraction_of_matmul_peak"] < 1.5
  decode = json.loads((tmp_path / "decode_0p5b.json").read_text())
  assert decode["config"]["dtype"] == "bfloat16" and decode["results"]["4"]["ratio"] > 0
  assert decode["results"]["4"]["ours_first_token_s"] > 0 and decode["results"]["4"]["decode_phase_ratio"] > 0
  tiny = json.loads((tmp_path / "decode_tiny.json").read_text())
  assert tiny["config"]["preset"] == "tiny" and tiny["results"]["8"]["greedy_tokens_identical"]
  assert len(os.listdir(tmp_path)) <= 8  # what the device tool brings back from $OUT
