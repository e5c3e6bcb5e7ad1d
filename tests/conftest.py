"""Shared fixtures: small generated Blender scenes."""

import numpy as np
import pytest

from dreamfusion_jax.data import synthetic


@pytest.fixture(scope='session')
def small_scene(tmp_path_factory):
  """A 3-object scene at 40x40 with 40 train and 4 test views (a few seconds to write)."""
  out = tmp_path_factory.mktemp('small_scene')
  primitives = synthetic.random_scene(np.random.default_rng(7), num_objects=3)
  synthetic.write_scene(out, primitives, resolution=40, num_train=40, num_val=2, num_test=4,
                        seed=7)
  return out
