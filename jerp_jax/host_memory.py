"""Host allocator settings for XLA:CPU and PyTorch CPU work: keep freed memory for reuse (glibc malloc).

XLA:CPU allocates each program's temporaries with malloc at every execution. glibc serves a block larger
than its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it on free, so each execution
page-faults on every page of its large buffers again: a `[32768, 128] @ [128, 384]` float32 dot (48 MiB
output) took 13.5k minor faults and 26 ms per call, 9.5 ms without them (BUILD_NOTES.md section 11,
"The host allocator"). Measured here: steps and rollouts 6-15% faster, compiles ~15% slower.
`keep_freed_memory()` makes this process serve every block from the heap and keep what it frees:
  M_MMAP_MAX = 0           no block gets its own mapping;
  M_TRIM_THRESHOLD = 2 GiB  freed memory at the top of the heap is not returned to the OS;
  M_TOP_PAD = 64 MiB        the heap grows in large steps;
  M_ARENA_MAX = 1           one heap for all threads, so a block freed by one execution's thread is reused
                            by the next execution's.
The cost: the process keeps its high-water mark of heap memory until it exits. Call it once, early
(before the first computation: arenas that threads already own are not merged).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20), (_M_ARENA_MAX, 1))


def keep_freed_memory() -> bool:
  """Applies SETTINGS with glibc's `mallopt`; False (nothing changed) where the C library is not glibc."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  for param, value in SETTINGS:
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
      raise OSError(f"glibc mallopt({param}, {value}) failed")
  return True
