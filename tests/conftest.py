"""Shared fixtures (small generated Blender scenes) and one compilation cache for the session.

Tests compile the same XLA programs many times (each run of the main job in a subprocess, each
rebuilt step): a persistent compilation cache shared by this process and every subprocess it
starts (they inherit JAX_COMPILATION_CACHE_DIR) compiles each program once per session.
"""

import atexit
import os
import shutil
import tempfile

if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # Before JAX is imported.
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='dreamfusion_jax_tests_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from dreamfusion_jax.data import synthetic  # pylint: disable=wrong-import-position


_COMPILE_EVENTS = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: _COMPILE_EVENTS.append(event)
    if event == '/jax/core/compile/backend_compile_duration' else None)


@pytest.fixture
def compiles():
  """A function returning how many XLA programs were compiled since the test started."""
  start = len(_COMPILE_EVENTS)
  return lambda: len(_COMPILE_EVENTS) - start


@pytest.fixture(scope='session')
def small_scene(tmp_path_factory):
  """A 3-object scene at 40x40 with 40 train and 4 test views (a few seconds to write)."""
  out = tmp_path_factory.mktemp('small_scene')
  primitives = synthetic.random_scene(np.random.default_rng(7), num_objects=3)
  synthetic.write_scene(out, primitives, resolution=40, num_train=40, num_val=2, num_test=4,
                        seed=7)
  return out
