"""keep_freed_memory: XLA:CPU's temporaries stop costing fresh zero-filled pages every call.

The allocator is chosen when JAX's worker threads start, so each case is a fresh subprocess.
"""

import os
import pathlib
import platform
import subprocess
import sys

import pytest


REPO = pathlib.Path(__file__).resolve().parents[1]

# A jitted gradient whose 64 MiB residuals are temporaries of the call; prints the median page faults of a call.
_PROGRAM = """
import resource, sys
from dreamfusion_jax import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == 'keep' else None
import jax, jax.numpy as jnp
x = jnp.ones((16384, 1024))
grad = jax.jit(jax.grad(lambda w, x: jnp.tanh(jnp.tanh(x * w) * w).sum()))
w = jnp.float32(2.0)
expected = float(grad(w, x))  # Must be bitwise the same either way.
faults = []
for _ in range(21):
  start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  assert float(grad(w, x)) == expected
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(applied, sorted(faults)[10], host_memory.keep_freed_memory(), expected.hex())
"""


def _faults_per_call(mode):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('MALLOC_') and k != 'GLIBC_TUNABLES'}
  env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _PROGRAM, mode], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True, timeout=300).stdout.split()
  return out[0], float(out[1]), out[2], out[3]


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc')
def test_keeps_xla_temporaries_mapped():
  applied, kept, again, value = _faults_per_call('keep')
  default_applied, default, _, default_value = _faults_per_call('default')
  assert value == default_value
  assert applied == 'True' and default_applied == 'None'
  # Once JAX's backend has started, the call changes nothing and says so.
  assert again == 'False'
  # 2 x 64 MiB of temporaries are 32,768 pages: freed and refaulted every call by default. Kept,
  # the heap still grows now and then (threads free in a different order), hence the median.
  assert default > 30_000, default
  assert kept < 0.01 * default, (kept, default)


def test_entry_points_import_without_starting_jax():
  """The entry points call keep_freed_memory first: importing them must not start JAX's backend."""
  program = ('import dreamfusion_jax.main, dreamfusion_jax.eval, dreamfusion_jax.toy.train_prior, '
             'dreamfusion_jax.toy.train_clip\n'
             'from dreamfusion_jax import host_memory\n'
             'print(host_memory._backend_started())')  # pylint: disable=protected-access
  out = subprocess.run([sys.executable, '-c', program], cwd=REPO, check=True, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert out.stdout.split()[-1] == 'False'
