"""Frozen weights land on this process's first device, whatever device a loader committed them to.

diffusers' Flax loader commits weights to the CPU; on a GPU, jit then refuses a step whose NeRF
lives on the GPU ('incompatible devices'). Two simulated CPU devices reproduce the mismatch.
"""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = textwrap.dedent('''
    import jax
    import numpy as np
    from dreamfusion_jax import models
    other = jax.devices()[1]
    params = {'w': jax.device_put(np.ones(3, np.float32), other),
              'step': jax.device_put(np.ones(2, np.int32), other)}
    moved = models.cast_floats(params, np.float32)
    first = jax.local_devices()[0]
    assert all(x.devices() == {first} for x in jax.tree.leaves(moved)), moved
    assert moved['step'].dtype == np.int32
    # The jitted use that failed on a GPU: one argument from the loader, one made here.
    print(float(jax.jit(lambda a, b: (a * b).sum())(moved['w'], jax.numpy.ones(3))))
''')


def test_cast_floats_moves_weights_to_the_first_device():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  done = subprocess.run([sys.executable, '-c', CODE], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1] == '3.0'
