"""The benchmarks' measuring code on a tiny step: not timings, but that they measure what they say.

The measuring code is dreamfusion_jax/testing/bench.py (benchmarks/*.py are its command lines);
a command line's own behaviour is checked by running it.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax.testing import bench
from dreamfusion_jax.testing import runs

# render.parallel_chunks 1: the rays as one batch. The CPU default (0: 4 independent groups)
# compiles the render 4 times over, half of each step's compile here, and measures the same.
TINY = {'render.height': 8, 'render.width': 8, 'render.num_samples': (8, 8), 'nerf.width': 16,
        'nerf.num_blocks': 1, 'batch_size': 1, 'render.parallel_chunks': 1}


@pytest.fixture(scope='module')
def model(tiny_model):
  """load_model('tiny-latent') from the session's saved copy (conftest's tiny_model, seed 0)."""
  diffusion, width, tokens, configs = bench.load_model('tiny-latent', jnp.float32,
                                                       saved=tiny_model)
  return diffusion, bench.random_text(4, tokens, width, jnp.float32), configs


@pytest.fixture(scope='module')
def timed_breakdown(model):
  """bench.breakdown's timed rows of the TINY step (its parts and the step compiled once)."""
  diffusion, text, _ = model
  return bench.breakdown(bench.get_config('dreamfusion', TINY), diffusion, text, repeats=1)


def test_step_rate_and_memory(model):
  diffusion, text, _ = model
  result = bench.measure_step(bench.get_config('dreamfusion', TINY), diffusion, text, 2)
  assert result['steps_per_s'] > 0 and result['compile_s'] > 0
  assert 0 < result['planned_gib'] < 1 and result['devices'] == 1


def test_a_recompile_after_the_first_step_is_caught(model):
  diffusion, text, _ = model

  @jax.jit
  def grows(state, *_):  # A new shape every call: each one compiles.
    return jnp.zeros(state.shape[0] + 1), {'loss': jnp.float32(0)}

  with pytest.raises(AssertionError, match='compile'):
    bench.time_steps(grows, jnp.zeros(1), (diffusion, text), 2)


def test_breakdown_parts_are_measured_with_their_flops(timed_breakdown):
  rows = timed_breakdown
  names = [r[0] for r in rows]
  assert names == ['render', 'vae', 'unet', 'optim', 'step']
  assert all(r[2] > 0 for r in rows)  # Timed (the flops_only rows below are not).
  gflop = dict((r[0], r[3]) for r in rows)
  assert gflop['render'] > 0 and gflop['unet'] > 0 and gflop['vae'] > 0
  # The parts are the step's work: their FLOPs add up to the step's within a fifth.
  parts = gflop['render'] + gflop['vae'] + gflop['unet'] + gflop['optim']
  assert parts == pytest.approx(gflop['step'], rel=0.2)
  assert '| sum of parts |' in bench.breakdown_table(rows)


def test_breakdown_flops_only_counts_the_same_flops_and_runs_nothing(model, timed_breakdown,
                                                                     monkeypatch):
  diffusion, text, _ = model
  timed = timed_breakdown

  def no_timing(*args):
    raise AssertionError(f'flops_only timed {args[0]}')

  monkeypatch.setattr(bench, 'time_calls', no_timing)
  counted = bench.breakdown(bench.get_config('dreamfusion', TINY), diffusion, text, repeats=1,
                            flops_only=True)
  assert [r[0] for r in counted] == [r[0] for r in timed]
  assert all(r[2] is None and r[4] is None for r in counted)
  for (_, _, _, want, _), (_, _, _, got, _) in zip(timed, counted):
    assert got == pytest.approx(want, rel=1e-6)
  table = bench.breakdown_table(counted)
  assert '| part | compile s | GFLOP | share of parts |' in table and '| sum of parts |' in table
  # 25 steps/s of a 100 GFLOP step on a 5 TFLOP/s chip: 2.5 TFLOP/s, 50%; the peak allows 50.
  lines = bench.implied(100.0, 25.0, 5.0)
  assert lines[0] == '25 steps/s x 100.0 GFLOP = 2.5 TFLOP/s = 50.0% of a 5 TFLOP/s peak'
  assert lines[2] == '100% of that peak: 50.0 steps/s'


def test_planned_memory_grows_with_views_and_falls_with_remat_chunks(model):
  diffusion, text, _ = model
  size = dict(TINY, **{'render.height': 16, 'render.width': 16, 'render.num_samples': (16, 16),
                       'nerf.width': 32})  # Large enough for the NeRF to dominate memory.
  planned = lambda **o: bench.planned_gib(bench.get_config('dreamfusion', dict(size, **o)),
                                          diffusion, text)[0]
  one, two = planned(), planned(batch_size=2)
  assert one < two
  assert planned(batch_size=2, **{'render.remat_chunks': 8}) < two / 2


def test_two_unet_calls_predict_the_same_noise(model, compiles):
  diffusion, text, _ = model
  z = jax.random.normal(jax.random.key(0), diffusion.latent_shape(2))
  emb = text.select(jnp.array([0, 2]))
  k = jnp.array([100, 700])
  # Jitted, as the step calls it: each function is traced (and compiled) where it is made.
  one_call = jax.jit(lambda d, *args: d.predict_noise(*args))
  batched = one_call(diffusion, z, k, emb, 7.5)
  start = compiles()
  with bench.two_unet_calls():
    separate = jax.jit(lambda d, *args: d.predict_noise(*args))(diffusion, z, k, emb, 7.5)
  assert compiles() > start  # A program of its own: the two-call path, not the cached one.
  np.testing.assert_allclose(separate, batched, rtol=1e-4, atol=1e-4)  # Guidance 7.5x.
  assert not np.allclose(one_call(diffusion, z, k, emb, 1.0), batched)


def test_random_weights_compile_nothing(compiles):
  import diffusers  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax.testing import tiny_models  # pylint: disable=g-import-not-at-top
  tiny_models.quiet()
  unet = diffusers.FlaxUNet2DConditionModel.from_config(tiny_models.unet_config(False))
  jax.random.PRNGKey(0)  # Its one small compile, before counting.
  start = compiles()
  params = jax.block_until_ready(bench.random_params(unet, jnp.bfloat16, 3))
  assert compiles() == start  # On a GPU every compile costs seconds (benchmarks/NOTES.md, item 9).
  want = jax.eval_shape(unet.init_weights, jax.random.PRNGKey(0))
  assert jax.tree.structure(params) == jax.tree.structure(want)
  leaves = jax.tree.leaves(params)
  assert all(p.shape == w.shape and p.dtype == jnp.bfloat16
             for p, w in zip(leaves, jax.tree.leaves(want)))
  flat = np.concatenate([np.asarray(p, np.float32).ravel() for p in leaves])
  assert abs(flat.std() - 0.02) < 1e-3
  again = bench.random_params(unet, jnp.bfloat16, 3)
  assert all(np.array_equal(a, b) for a, b in zip(leaves, jax.tree.leaves(again)))


def test_setup_on_the_host_then_on_the_device(model):
  diffusion, _, _ = model
  # The model was loaded under on_host() and then put on the default device, committed.
  for leaf in jax.tree.leaves(diffusion):
    assert leaf.devices() == {jax.local_devices()[0]} and leaf.committed
  with bench.on_host():
    x = jnp.ones(3)
  assert x.devices() == {jax.devices('cpu')[0]} and not x.committed


def test_run_rejects_an_unknown_section():
  result = subprocess.run([sys.executable, 'benchmarks/run.py', '--sections', 'step,speed'],
                          cwd=runs.REPO, capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "unknown --sections ['speed']" in result.stderr


def test_configs_by_name_and_their_cpu_size():
  assert set(bench.CONFIGS) == {'dreamfusion', 'pixel', 'toy', 'hash', 'toy_hash'}
  assert bench.get_config('hash').nerf.hash_band == (8, 2000, 500)  # configs/dreamfusion_hash.py
  assert bench.sized_config('hash').nerf.width == bench.CPU_SIZE['nerf.width'] == 64
  assert bench.sized_config('hash').nerf.num_blocks == bench.CPU_SIZE['nerf.num_blocks'] == 2
  toy_hash = bench.sized_config('toy_hash')  # The toy configs always as shipped.
  assert toy_hash.nerf.encoding == 'hash' and toy_hash.nerf.num_blocks == 1
