"""The PyTorch reference step (dreamfusion_jax/testing/torch_reference.py) does the JAX step's
work, and benchmarks/torch_step.py times it."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dreamfusion as dreamfusion_config
from dreamfusion_jax import build
from dreamfusion_jax import camera
from dreamfusion_jax import guidance
from dreamfusion_jax import nerf
from dreamfusion_jax import render
from dreamfusion_jax import schedules
from dreamfusion_jax import steps
from dreamfusion_jax.testing import bench
from dreamfusion_jax.testing import runs
from dreamfusion_jax.testing import tiny_models

torch = pytest.importorskip('torch')
# pylint: disable=g-import-not-at-top,wrong-import-position
from dreamfusion_jax.testing import torch_reference
from dreamfusion_jax.testing import torch_render
# pylint: enable=g-import-not-at-top,wrong-import-position

# Measured float32 differences of the renders: 2e-7 (albedo) and 1.5e-6 (lit, through the
# normals). One sample more, one level fewer or the means' plain encoding move them by 3e-3 or
# more.
RENDER_TOL = 1e-5


def small_config():
  config = dreamfusion_config.get_config()
  config.update_from_flattened_dict(torch_reference.ADAM)
  config.batch_size = 2
  config.render.height = config.render.width = 8
  config.render.num_samples = (8, 8)
  config.nerf.width = 16
  config.nerf.num_blocks = 1
  config.nerf.max_deg = 4
  config.background.width = 8
  return config


def make_spec(config, pixel=False):
  return torch_reference.make_spec(config, tiny_models.unet_config(pixel),
                                   None if pixel else tiny_models.vae_config(),
                                   tiny_models.TEXT_WIDTH, tiny_models.TOKEN_LENGTH,
                                   scheduler=tiny_models.SCHEDULER)


def fixed_cameras():
  """Two cameras, one low and one high, that see the density blob and the background."""
  el = jnp.array([20.0, 65.0])
  az = jnp.array([30.0, 200.0])
  eye = camera.spherical_to_position(el, az, jnp.array([1.3, 1.1]))
  return camera.Cameras(c2w=camera.look_at(eye, jnp.zeros_like(eye)),
                        focal=jnp.array([8.0, 10.0]), elevation_deg=el, azimuth_deg=az,
                        distance=jnp.array([1.3, 1.1]))


@pytest.fixture(scope='module')
def jax_scene():
  """JAX params of the small config and deterministic renders of the fixed cameras."""
  config = small_config()
  run = build.build(config)
  state = run.init_state()

  @jax.jit
  def render_jax(params, cameras, modes, lights):
    rgb, out, _ = steps.render_views(jax.random.key(0), params, cameras, modes, lights,
                                     model=run.model, background_model=run.background_model,
                                     render_fn=run.render_fn, settings=run.settings,
                                     randomized=False)
    return rgb, out.acc.reshape(rgb.shape[:3])

  cameras = fixed_cameras()
  lights = jnp.array([[1.0, -1.0, 1.5], [-0.5, 1.2, 1.0]])
  renders = {}
  for name, modes in (('albedo', (0, 0)), ('lit', (1, 2))):
    rgb, acc = render_jax(state.params, cameras, jnp.array(modes, jnp.int32), lights)
    renders[name] = (np.asarray(modes), np.asarray(rgb), np.asarray(acc))
  return config, jax.device_get(state.params), cameras, np.asarray(lights), renders


def torch_model(config, params):
  model = torch_reference.TorchDreamFusion(make_spec(config))
  model.load_jax_params(params)
  return model


@pytest.mark.parametrize('shading', ['albedo', 'lit'])
def test_render_matches_jax(jax_scene, shading):
  config, params, cameras, lights, renders = jax_scene
  modes, rgb, acc = renders[shading]
  assert acc.max() - acc.min() > 0.2 and acc.min() < 0.8  # The blob, and background behind fog.
  got = torch_model(config, params).render(np.asarray(cameras.c2w), np.asarray(cameras.focal),
                                           modes=modes, lights=lights)
  assert got['rgb'].shape == (2, 8, 8, 3) and got['acc'].shape == (2, 8, 8)
  np.testing.assert_allclose(got['rgb'], rgb, atol=RENDER_TOL, rtol=0)
  np.testing.assert_allclose(got['acc'], acc, atol=RENDER_TOL, rtol=0)


@pytest.mark.parametrize('change', ['samples', 'levels', 'no_variance', 'stratified'])
def test_render_parity_detects_differences(jax_scene, monkeypatch, change):
  """The parity check above fails when the torch render samples or encodes otherwise."""
  _, params, cameras, _, renders = jax_scene
  _, rgb, acc = renders['albedo']
  other = small_config()
  if change == 'samples':
    other.render.num_samples = (8, 9)
  elif change == 'levels':
    other.render.num_samples = (8,)
  elif change == 'no_variance':  # Plain positional encoding of the means (NeRF, not mip-NeRF).
    ipe = torch_render.integrated_pos_enc
    monkeypatch.setattr(torch_render, 'integrated_pos_enc',
                        lambda m, v, lo, hi: ipe(m, torch.zeros_like(v), lo, hi))
  elif change == 'stratified':  # Second level drawn evenly instead of from the weights.
    monkeypatch.setattr(torch_render, 'sample_from_weights',
                        lambda t, w, n, *args: torch_render.stratified_edges(
                            t[:, 0], t[:, -1], n, False))
  model = torch_model(other, params)
  got = model.render(np.asarray(cameras.c2w), np.asarray(cameras.focal))
  diff = max(np.abs(got['rgb'] - rgb).max(), np.abs(got['acc'] - acc).max())
  assert diff > 10 * RENDER_TOL, diff


def test_building_blocks_match_jax():
  rng = np.random.default_rng(0)
  cameras = fixed_cameras()
  c2w, focal = np.asarray(cameras.c2w), np.asarray(cameras.focal)
  rays = camera.generate_rays(c2w, focal, 6, 5)
  origins, directions, radii = torch_render.generate_rays(torch.tensor(c2w),
                                                          torch.tensor(focal), 6, 5)
  for want, got in ((rays.origins, origins), (rays.directions, directions),
                    (rays.radii, radii)):
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
  eye = rng.normal(size=(3, 3)).astype(np.float32)
  np.testing.assert_allclose(torch_render.look_at(torch.tensor(eye), torch.zeros(3, 3)).numpy(),
                             camera.look_at(eye, np.zeros_like(eye)), atol=1e-6)

  t_edges = np.sort(rng.uniform(0.5, 2.0, (7, 9)), axis=-1).astype(np.float32)
  weights = (rng.uniform(size=(7, 8)) * (rng.uniform(size=(7, 8)) > 0.5)).astype(np.float32)
  want = render.sample_from_weights(jax.random.key(0), t_edges, weights, 12, randomized=False)
  got = torch_render.sample_from_weights(torch.tensor(t_edges), torch.tensor(weights), 12,
                                         randomized=False)
  np.testing.assert_allclose(got.numpy(), want, atol=1e-6)

  flat = rays.reshape(-1)
  edges = jnp.asarray(np.sort(rng.uniform(0.2, 2.0, (60, 5)), axis=-1), jnp.float32)
  means, variances = render.conical_frustum_gaussians(flat, edges)
  got_means, got_vars = torch_render.conical_frustum_gaussians(
      origins.reshape(-1, 3), directions.reshape(-1, 3), radii.reshape(-1, 1),
      torch.tensor(np.asarray(edges)))
  np.testing.assert_allclose(got_means.numpy(), means, atol=1e-6)
  np.testing.assert_allclose(got_vars.numpy(), variances, rtol=1e-4, atol=1e-9)
  np.testing.assert_allclose(
      torch_render.integrated_pos_enc(got_means, got_vars, 0, 5).numpy(),
      nerf.integrated_pos_enc(means, variances, 0, 5), atol=2e-6)


def test_schedules_and_labels_match_jax():
  optim = make_spec(small_config())['optim']
  for step in (0, 7, 50, 100, 3000, 20000):
    want = schedules.log_linear_warmup(step, init=optim['lr_init'], final=optim['lr_final'],
                                       num_steps=15000, warmup_steps=optim['warmup_steps'])
    assert torch_reference.learning_rate(step, optim, 15000) == pytest.approx(float(want), rel=1e-6)
    want = schedules.linear(step, start=10.0, end=1000.0, num_steps=5000)
    assert torch_reference.linear_schedule(step, 10.0, 1000.0, 5000) == pytest.approx(float(want))
  el = np.array([0.0, 10.0, 61.0, -5.0, 30.0, 59.0], np.float32)
  az = np.array([0.0, 44.0, 90.0, 180.0, 300.0, 225.0], np.float32)
  np.testing.assert_array_equal(
      torch_render.view_labels(torch.tensor(el), torch.tensor(az)).numpy(),
      camera.view_labels(el, az))


@pytest.mark.parametrize('size, resolution', [(32, 16), (8, 16)])
def test_resize_matches_guidance(size, resolution):
  images = np.random.default_rng(1).uniform(size=(2, size, size, 3)).astype(np.float32)
  got = torch_reference.resize_images(torch.tensor(images), resolution).numpy()
  np.testing.assert_allclose(got, guidance.resize_images(images, resolution), atol=1e-6)


@pytest.mark.parametrize('pixel', [False, True])
def test_training_steps_update_the_nerf(pixel):
  config = small_config()
  config.shading.warmup_steps = 1  # The second step draws shading modes.
  model = torch_reference.TorchDreamFusion(make_spec(config, pixel=pixel), seed=3)
  before = [p.detach().clone() for p in model.params]
  losses = [model.step() for _ in range(2)]
  assert all(np.isfinite(losses))
  assert model.num_updates == 2 and model.step_count == 2
  assert all(not torch.equal(b, p) for b, p in zip(before, model.params))
  assert all(float(torch.sum(p.grad**2)) > 0 for p in model.params)
  frozen = list(model.unet.parameters())
  frozen += list(model.vae.parameters()) if model.vae is not None else []
  assert all(p.grad is None for p in frozen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_the_step_on_a_gpu_keeps_everything_there():
  gpu = torch_reference.TorchDreamFusion(make_spec(small_config()), seed=3, device='cuda')
  assert np.isfinite(gpu.step())
  tensors = list(gpu.nerf.parameters()) + list(gpu.unet.parameters()) + [gpu.cond]
  assert all(t.device.type == 'cuda' for t in tensors)
  assert all(p.grad.device.type == 'cuda' for p in gpu.params)
  cpu = torch_reference.TorchDreamFusion(make_spec(small_config()), seed=3)
  gpu.nerf.load_state_dict(cpu.nerf.state_dict())
  gpu.background.load_state_dict(cpu.background.state_dict())
  cameras = torch_render.sample_cameras(torch.Generator().manual_seed(0), 2, 8,
                                        make_spec(small_config())['camera'])
  want = cpu.render(cameras['c2w'].numpy(), cameras['focal'].numpy())['rgb']
  got = gpu.render(cameras['c2w'].numpy(), cameras['focal'].numpy())['rgb']
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_sds_gradient_alone_reaches_the_nerf():
  """Without the regularisers the NeRF's gradient comes through the VAE and the resize only."""
  config = small_config()
  config.loss.orientation_weight = config.loss.orientation_weight_end = 0.0
  config.loss.opacity_weight = 0.0
  model = torch_reference.TorchDreamFusion(make_spec(config), seed=4)
  assert np.isfinite(model.step())
  assert float(torch.sum(model.nerf.input.weight.grad**2)) > 0
  assert float(torch.sum(model.nerf.albedo.weight.grad**2)) > 0
  assert float(torch.sum(model.background.out.weight.grad**2)) > 0


def test_time_torch_step_command():
  """python benchmarks/torch_step.py: one thread as asked, the CPU-sized step, a rate."""
  result = subprocess.run([sys.executable, 'benchmarks/torch_step.py', '--steps', '1',
                           '--threads', '1'], cwd=runs.REPO, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0] == f'torch {torch.__version__}, 1 threads', lines
  assert lines[1].startswith('| model | dtype | views/step |') and len(lines) == 4, lines
  cells = [c.strip() for c in lines[3].strip('|').split('|')]
  assert cells[:6] == ['tiny-latent (PyTorch)', 'float32', '1', '32 px -> 16 px', '(32, 32)',
                       '64 x 2'], cells
  first_step_s, steps_per_s = float(cells[6]), float(cells[7])
  assert first_step_s > 0 and steps_per_s > 0


def test_make_spec_reads_the_config():
  config = small_config()
  spec = make_spec(config)
  assert spec['render']['num_samples'] == (8, 8)
  assert spec['batch_size'] == 2 and spec['nerf']['width'] == 16
  assert spec['resolution'] == 16 and make_spec(config, pixel=True)['resolution'] == 16
  assert spec['guidance_scale'][0] == 100.0
  config.render.num_samples = (4, 4, 4)
  config.batch_size = 3
  config.nerf.max_deg = 6
  config.guidance_scale = 7.5
  config.loss.opacity_weight = 0.5
  config.shading.modes = ('textureless',)
  config.shading.probs = (1.0,)
  config.t_range = (0.1, 0.9)
  spec = make_spec(config)
  assert spec['render']['num_samples'] == (4, 4, 4)
  assert spec['batch_size'] == 3 and spec['nerf']['max_deg'] == 6
  assert spec['guidance_scale'][0] == 7.5 and spec['loss']['opacity_weight'] == 0.5
  assert spec['shading']['modes'] == (2,) and spec['t_range'] == (0.1, 0.9)
  model = torch_reference.TorchDreamFusion(spec)
  assert model.nerf.input.in_features == 36 and len(model.nerf.blocks) == 1
  config.nerf.encoding = 'grid'
  with pytest.raises(ValueError, match='encoding'):
    make_spec(config)
  config.nerf.encoding = 'ipe'
  config.nerf.normal_eps = 0.01
  with pytest.raises(ValueError, match='normal_eps'):
    make_spec(config)
  config.nerf.normal_eps = 0.0
  config.camera.uniform_sphere_rate = 0.5
  with pytest.raises(ValueError, match='uniform_sphere_rate'):
    make_spec(config)


def test_the_benchmark_config_is_cpu_sized_unless_full():
  """benchmarks/torch_step.py's config (and step.py's): bench.sized_config."""
  config = bench.sized_config('dreamfusion')
  assert config.render.height == config.render.width == 32
  assert tuple(config.render.num_samples) == (32, 32) and config.batch_size == 1
  assert bench.sized_config('dreamfusion', batch_size=2).batch_size == 2
  full = bench.sized_config('dreamfusion', full=True)
  assert full.render.height == 64 and full.batch_size == 4 and full.nerf.width == 128
