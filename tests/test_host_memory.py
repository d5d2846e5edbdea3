"""jerp_jax.host_memory: with freed memory kept, an XLA:CPU program with a large temporary stops
page-faulting on it at every execution (each case in a fresh process: the setting is process-wide)."""
import json
import os
import platform
import subprocess
import sys

import pytest

_PROBE = r"""
import json, resource, sys
from jerp_jax import host_memory
kept = host_memory.keep_freed_memory() if sys.argv[1] == "1" else False
import jax, jax.numpy as jnp
dot = jax.jit(lambda a, b: a @ b)
a, b = jnp.ones((32768, 128), jnp.float32), jnp.ones((128, 384), jnp.float32)  # 48 MiB output
faults = []
for _ in range(32):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(dot(a, b))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def _faults(keep: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", _PROBE, "1" if keep else "0"], env=env, check=True,
                       capture_output=True, text=True, timeout=120).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt")
def test_kept_memory_stops_page_faults_on_large_temporaries():
  default, kept = _faults(False), _faults(True)
  assert kept["kept"] and not default["kept"]
  # 48 MiB = 12,288 pages, mapped afresh at every call by default; kept, the heap grows while results
  # are still alive (the runtime frees a result's buffer asynchronously, so up to ~10 early calls fault
  # under load) and then serves every call from memory it already has: judged on the last 16 calls.
  median = lambda xs: sorted(xs)[len(xs) // 2]
  assert median(default["faults"][16:]) > 10_000, default
  assert median(kept["faults"][16:]) < 1_000, kept
