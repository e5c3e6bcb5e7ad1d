"""steps: DreamFusion's jitted step (draws, schedules, losses, skipping) and its ray chunking."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dreamfusion as dreamfusion_config
from dreamfusion_jax import build
from dreamfusion_jax import camera
from dreamfusion_jax import losses
from dreamfusion_jax import nerf
from dreamfusion_jax import steps
from dreamfusion_jax.testing import runs


@pytest.fixture(scope='module')
def step_setup(tiny_model):
  return runs.step_setup(tiny_model)


def test_schedules_and_optional_losses(tiny_model, step_setup):
  """t_max anneals, the entropy weight ramps, the smoothness term has its own key; clipping."""
  step, state, diffusion, text = step_setup
  _, plain = step(state, diffusion, text)
  weighted = runs.step_setup(tiny_model, t_max_end=0.3, t_anneal_steps=10, **{
      'loss.entropy_weight': 10.0, 'loss.entropy_ramp_steps': 10, 'loss.smoothness_weight': 10.0,
      'optim.grad_clip': 1e-9})
  step, state, diffusion, text = weighted
  _, first = step(state, diffusion, text)
  assert float(first['t_max']) == pytest.approx(0.98)
  _, half = step(state.replace(step=5), diffusion, text)
  assert float(half['t_max']) == pytest.approx(0.64)
  assert float(first['entropy_weight']) == 0.0 and float(half['entropy_weight']) == 5.0
  for at in (10, 50):  # Constant after the anneal; every view's t below t_max.
    _, late = step(state.replace(step=at), diffusion, text)
    assert float(late['t_max']) == pytest.approx(0.3) and float(late['t']) <= 0.3
    assert float(late['entropy_weight']) == 10.0
  # Every gradient is above a clip of 1e-9; configs/dreamfusion.py's clip of 5 is reported too.
  assert float(first['clipped']) == 1.0 and float(first['grad_norm']) > 0
  assert float(plain['clipped']) == float(float(plain['grad_norm']) > 5.0)
  # At step 0 both runs draw the same t (t_max is 0.98 in both) and both entropy weights are 0
  # (ramped): the losses differ by the smoothness term.
  assert float(plain['entropy']) > 0 and float(first['smoothness']) > 0
  assert 'smoothness' not in plain
  # Its own key: the SDS draw and the other terms are those of the run without it.
  assert float(first['sds']) == pytest.approx(float(plain['sds']), rel=1e-5)
  assert float(first['entropy']) == pytest.approx(float(plain['entropy']), rel=1e-5)
  assert float(first['loss']) == pytest.approx(
      float(plain['loss']) + 10.0 * float(first['smoothness']), rel=1e-4)


def test_surface_smoothness_is_small_on_a_sphere_and_large_on_a_bumpy_field():
  model = nerf.NeRF(encoding='grid', width=16, num_blocks=1, grid_resolutions=(16, 32),
                    grid_features=2, scene_radius=0.6, blob_density=5.0, blob_radius=0.3)
  rng = np.random.default_rng(0)
  directions = rng.normal(size=(64, 3))
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  rays = camera.Rays(origins=jnp.asarray(-1.25 * directions, jnp.float32),
                     directions=jnp.asarray(directions, jnp.float32),
                     radii=jnp.zeros((64, 1), jnp.float32))
  # Every ray meets a sphere of radius 0.3 about the origin at distance 0.95.
  out = types.SimpleNamespace(depth=jnp.full((64,), 0.95), acc=jnp.ones(64))
  variables = model.init(jax.random.PRNGKey(0), rays.origins, jnp.zeros((64, 3)))
  params = dict(variables['params'])
  params['density'] = jax.tree.map(jnp.zeros_like, params['density'])  # The blob alone.
  smooth = lambda p: float(steps.surface_smoothness(jax.random.PRNGKey(1), {'params': p}, out,
                                                   rays, model=model, radius=0.02))
  sphere = smooth(params)
  # Normals of a sphere of radius 0.3 turn by about 0.02 / 0.3 rad over the offset.
  assert sphere < 0.02, sphere
  bumpy = dict(params)
  for name in ('grid_0', 'grid_1'):
    bumpy[name] = jnp.asarray(rng.normal(size=params[name].shape), jnp.float32)
  bumpy['density'] = {'kernel': jnp.asarray(rng.normal(size=(16, 1)) * 3.0, jnp.float32),
                      'bias': jnp.zeros(1)}
  assert smooth(bumpy) > 10 * sphere + 0.1, (smooth(bumpy), sphere)


def test_step_is_pure_and_updates_params(step_setup):
  step, state, diffusion, text = step_setup
  new_a, metrics_a = step(state, diffusion, text)
  new_b, metrics_b = step(state, diffusion, text)
  as_array = lambda x: (jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                        else x)
  for a, b in zip(jax.tree.leaves((new_a, metrics_a)), jax.tree.leaves((new_b, metrics_b))):
    np.testing.assert_array_equal(as_array(a), as_array(b))
  assert int(new_a.step) == 1 and float(metrics_a['skipped']) == 0.0
  assert np.isfinite(float(metrics_a['loss']))
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(new_a.params), jax.tree.leaves(state.params))]
  assert all(changed)


def test_step_compiles_once_over_many_steps(tiny_model, compiles):
  step, state, diffusion, text = runs.step_setup(tiny_model)
  start = compiles()
  state, _ = step(state, diffusion, text)
  first = compiles()
  assert first > start  # The listener sees compiles.
  for _ in range(3):  # Static shapes: step and schedules advance inside the compiled program.
    state, _ = step(state, diffusion, text)
  assert compiles() == first


def render_loss_and_grad(chunking):
  """(loss, gradient, planned temporary bytes) of a 2-view unjittered render per chunking.

  chunking: dicts of render.remat_chunks / render.parallel_chunks values.
  """
  config = dreamfusion_config.get_config()
  config.update_from_flattened_dict({
      'batch_size': 2, 'render.height': 16, 'render.width': 16, 'render.num_samples': (16, 16),
      'nerf.width': 32, 'nerf.num_blocks': 2})
  run = build.build(config)
  net, bg, state = run.model, run.background_model, run.init_state()
  cams = camera.orbit_cameras(2, elevation_deg=20.0, distance=1.3, focal=16.0)
  lights = cams.c2w[:, :3, 3]
  modes = jnp.array([1, 2], jnp.int32)
  results = []
  for values in chunking:
    config.update_from_flattened_dict({f'render.{k}': v for k, v in values.items()})
    settings, render_fn = build.make_sds_settings(config), build.make_render_fn(config)

    def loss(params, settings=settings, render_fn=render_fn):
      rgb, out, rays = steps.render_views(
          jax.random.key(0), params, cams, modes, lights, model=net, background_model=bg,
          render_fn=render_fn, settings=settings, randomized=False)
      ramp = jnp.linspace(0.5, 1.5, rgb.size).reshape(rgb.shape)  # Pixels out of order fail.
      return jnp.sum(ramp * rgb**2) + losses.orientation(out.weights, out.sample_normals,
                                                         rays.directions)

    grad = jax.jit(jax.value_and_grad(loss))
    planned = grad.lower(state.params).compile().memory_analysis().temp_size_in_bytes
    results.append((*grad(state.params), planned))
  return results


def assert_same_loss_and_grad(first, second):
  (value, grads, _), (other_value, other_grads, _) = first, second
  assert float(other_value) == pytest.approx(float(value), rel=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(other_grads)):  # Summation order.
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(a))))


def test_remat_chunks_give_the_same_gradient_in_less_memory(tiny_model):
  whole, chunked = render_loss_and_grad([dict(remat_chunks=0, parallel_chunks=1),
                                         dict(remat_chunks=8, parallel_chunks=1)])
  assert_same_loss_and_grad(whole, chunked)
  assert chunked[2] < whole[2] / 3, (whole[2], chunked[2])


def test_parallel_chunks_give_the_same_render_and_gradient(tiny_model):
  whole, *grouped = render_loss_and_grad([
      dict(remat_chunks=0, parallel_chunks=1), dict(remat_chunks=0, parallel_chunks=4),
      dict(remat_chunks=8, parallel_chunks=2)])  # Groups inside each remat chunk.
  for other in grouped:
    assert_same_loss_and_grad(whole, other)


def test_non_finite_step_is_skipped(step_setup):
  step, state, diffusion, text = step_setup
  poisoned = diffusion.replace(alphas_cumprod=diffusion.alphas_cumprod * jnp.nan)
  new, metrics = step(state, poisoned, text)
  assert float(metrics['skipped']) == 1.0 and int(new.step) == 1
  for a, b in zip(jax.tree.leaves((new.params, new.opt_state)),
                  jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_array_equal(a, b)
