"""A step that fits the device: XLA's compiled plan against the memory there is.

`render.remat_chunks` changes neither values nor gradients, only memory and time (steps.py), so
with `render.remat_chunks = AUTO` the run compiles the step with the fewest chunks whose plan fits
what the device has and trains with that executable. The plan is XLA's buffer assignment of the
compiled program (arguments + outputs + temporaries - donated aliases): on a GPU or TPU what the
step allocates; on a CPU XLA:CPU's plan, a guide. What the device has is
`config.memory_limit_gib` where given, else JAX's memory stats (GPU, TPU: the allocator's limit
less what is in use), else the host's available memory (CPU).
"""

import dataclasses
import os

import jax

from dreamfusion_jax import config_checks

AUTO = -1
# Chunk counts tried, in order of memory (more chunks: less memory, one more NeRF forward each).
CANDIDATES = (0, 2, 4, 8, 16, 32, 64)
GIB = 2**30


def planned_bytes(executable):
  """XLA's buffer plan for one call: arguments + outputs + temporaries - donated aliases."""
  mem = executable.memory_analysis()
  if mem is None:
    return float('nan')
  return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes)


def host_available_bytes():
  """The host's available memory (MemAvailable of /proc/meminfo; free pages elsewhere)."""
  try:
    with open('/proc/meminfo') as meminfo:
      for line in meminfo:
        if line.startswith('MemAvailable:'):
          return float(line.split()[1]) * 1024
  except OSError:
    pass
  return float(os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))


def available_bytes(config, device=None):
  """Bytes a step may plan: config.memory_limit_gib, else the device's free memory."""
  limit = config.get('memory_limit_gib', 0.0)
  if limit > 0:
    return float(limit) * GIB
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'bytes_limit' in stats:
    return float(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
  return host_available_bytes()


def candidates(config):
  """The remat chunk counts a step of config can use, fewest (least recompute) first."""
  rays = config_checks.step_rays(config)
  groups = config.render.get('parallel_chunks', 1)
  return [c for c in CANDIDATES
          if (c <= 1 or rays % c == 0)
          and (groups <= 1 or (rays // max(c, 1)) % groups == 0)]


@dataclasses.dataclass(frozen=True)
class Fit:
  """The chunk count chosen, its compiled step and its plan against what is available."""
  chunks: int
  step: object
  planned: float
  available: float


def with_chunks(config, chunks, batch_size=None):
  """A copy of config with render.remat_chunks = chunks (and batch_size, where given)."""
  config = config.copy_and_resolve_references()
  config.render.remat_chunks = chunks
  if batch_size:
    config.batch_size = batch_size
  return config


def fit_step(config, compile_step, available=None):
  """The fewest remat chunks whose compiled step fits, by bisection over candidates(config).

  Args:
    config: the run's config with render.remat_chunks = AUTO.
    compile_step: a config (with_chunks(config, chunks)) -> its compiled step (an executable
      with memory_analysis).
    available: bytes the plan may take (default: available_bytes(config)).

  Returns:
    Fit.

  Raises:
    ConfigError: no count fits; the line gives the plan at the most chunks, what is available
      and the batch_size that would fit (from the plan of one view at the most chunks).
  """
  available = available_bytes(config) if available is None else available
  counts = candidates(config)
  plans = {}

  def plan(i):
    if i not in plans:
      step = compile_step(with_chunks(config, counts[i]))
      plans[i] = (step, planned_bytes(step))
    return plans[i][1]

  if plan(0) <= available:
    return Fit(counts[0], plans[0][0], plans[0][1], available)
  last = len(counts) - 1
  if plan(last) > available:
    raise config_checks.ConfigError(_no_fit(config, plan(last), available, compile_step))
  lo, hi = 0, last  # plan(lo) does not fit, plan(hi) does.
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if plan(mid) <= available else (mid, hi)
  return Fit(counts[hi], plans[hi][0], plans[hi][1], available)


def _no_fit(config, planned, available, compile_step):
  """The one line of a step that does not fit even with the most chunks."""
  most = candidates(config)[-1]
  line = (f'the step does not fit: {planned / GIB:.2f} GiB planned with '
          f'render.remat_chunks={most} (the most tried), {available / GIB:.2f} GiB available')
  views = config.batch_size
  if views > 1:
    one = planned_bytes(compile_step(with_chunks(config, most, batch_size=1)))
    per_view = max((planned - one) / (views - 1), 0.0)
    fits = int((available - one) // per_view) + 1 if per_view > 0 and one <= available else 0
    if fits >= 1:
      fits = min(fits, views - 1)
      return line + (f'; set config.batch_size={fits} (planned '
                     f'{(one + (fits - 1) * per_view) / GIB:.2f} GiB) or use a larger device')
    line += f'; even 1 view plans {one / GIB:.2f} GiB'
  return line + ('; lower config.render.height and width, set config.model_dtype=bfloat16, or '
                 'use a device with more memory (config.memory_limit_gib overrides the limit)')
