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
# The default suite is compile-bound (hundreds of small programs, each run a few times): LLVM's
# optimisations at level 0 compile them in about half the time, and run them about 3x slower.
# Not for the slow and quality runs, whose long trainings are run-bound. Read when JAX starts
# its CPU backend, at the first computation, after pytest_configure.
FAST_COMPILE = '--xla_backend_optimization_level=0'
DEFAULT_MARKERS = 'not slow and not full and not quality'  # pytest.ini's addopts.

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from dreamfusion_jax import clip  # pylint: disable=wrong-import-position
from dreamfusion_jax import eval as eval_lib  # pylint: disable=wrong-import-position
from dreamfusion_jax import toy  # pylint: disable=wrong-import-position
from dreamfusion_jax.data import synthetic  # pylint: disable=wrong-import-position
from dreamfusion_jax.toy import world  # pylint: disable=wrong-import-position
from dreamfusion_jax.testing import tiny_models  # pylint: disable=wrong-import-position


def pytest_configure(config):
  """The default suite (pytest.ini's marker expression) compiles with FAST_COMPILE."""
  if config.option.markexpr == DEFAULT_MARKERS:
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {FAST_COMPILE}'.strip()


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


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
  """A tiny random latent diffusers model saved as a Flax folder (seed 0)."""
  folder = tmp_path_factory.mktemp('tiny_latent')
  tiny_models.save_flax_model(folder, pixel=False, seed=0)
  return folder


@pytest.fixture(scope='session')
def jax_cache():
  """The compilation cache folder this process and its subprocesses share."""
  return os.environ['JAX_COMPILATION_CACHE_DIR']


@pytest.fixture(scope='session')
def heldout_colour_renders():
  """(shipped toy CLIP, {prompt: float [8, 64, 64, 3]}): colour renders of the true held-out
  objects from eval's cameras, lit from the camera (which the test above ties to render_scene)."""
  cameras = eval_lib.eval_cameras(8, 64)
  renders = {}
  for prompt in world.HELDOUT:
    color, shape = world.parse_prompt(prompt)
    renders[prompt] = np.stack([world.render_view(color, shape, np.asarray(c2w), float(f), 64,
                                                  light=np.asarray(c2w)[:3, 3])[0]
                                for c2w, f in zip(cameras.c2w, cameras.focal)])
  return clip.Clip.from_pretrained(toy.CLIP_DIR), renders


@pytest.fixture(scope='session')
def eval_clips():
  """The default evaluator: the five shipped toy CLIPs of toy.EVAL_CLIP_DIRS, loaded."""
  return eval_lib._load_clips('toy')  # pylint: disable=protected-access


# The longest files first: with `--dist loadfile` each file runs on one worker, so a long file
# collected last (train_test.py sorts late) would leave the other worker idle at the end.
LONGEST_FIRST = ('train_test.py', 'steps_test.py', 'benchmarks_test.py', 'guidance_test.py',
                 'toy_prior_test.py')


def pytest_collection_modifyitems(items):
  """Orders the collected tests longest file first (stable: each file's order is kept)."""
  def rank(item):
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
  items.sort(key=rank)
