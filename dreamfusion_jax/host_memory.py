"""Host malloc settings that stop XLA:CPU from paying page faults for its temporaries every step.

XLA:CPU allocates a step's temporaries (about 0.35 GiB for the CPU-sized DreamFusion step) with
malloc on its worker threads and frees them when the call returns. With glibc's defaults each
worker thread has its own arena, whose large blocks are mmap'd and unmapped on free; the next call
touches fresh pages, and the kernel zero-fills every one of them: about 87,000 minor page faults
and 0.2 s of system time per step on 2 CPU cores (benchmarks/NOTES.md, item 8).

`keep_freed_memory` makes freed memory stay in the process for reuse: one malloc arena for all
threads, no mmap below 1 GiB, and no trimming of the heap below 2 GiB. It must run before JAX
starts its backend (the worker threads pick their arenas when they start); entry points call it
first. It changes nothing but the host allocator, so results are bitwise the same.
"""

import ctypes
import ctypes.util
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # mallopt takes an int.


def _backend_started():
  """Whether JAX has created its backends (and so its CPU worker threads)."""
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def keep_freed_memory():
  """Sets glibc malloc to keep freed memory for reuse; call before JAX's first computation.

  Returns:
    True if the settings were applied; False where they cannot help: not glibc (macOS, musl), or
    JAX's backend already started (its worker threads already hold their own arenas).
  """
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if _backend_started():
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  applied = (libc.mallopt(_M_ARENA_MAX, 1) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
  # Newer glibc refuses a mmap threshold above 32 MiB; then large blocks come from the heap.
  if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
    applied = applied and libc.mallopt(_M_MMAP_MAX, 0)
  return bool(applied)
