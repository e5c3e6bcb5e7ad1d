"""DreamFusion training end to end with a tiny saved diffusers model, through the entry point."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import trimesh

from configs import dreamfusion as dreamfusion_config
from dreamfusion_jax import camera
from dreamfusion_jax import checkpoint
from dreamfusion_jax import losses
from dreamfusion_jax import steps
from dreamfusion_jax import train

import tiny_models

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
  folder = tmp_path_factory.mktemp('tiny_latent')
  tiny_models.save_flax_model(folder, pixel=False, seed=0)
  return folder


@pytest.fixture(scope='module')
def jax_cache(tmp_path_factory):
  return tmp_path_factory.mktemp('jax_cache')


def overrides(model_dir, **extra):
  """A DreamFusion config sized for a CPU test: 8x8 renders, a small NeRF, 6 steps."""
  values = {
      'model': str(model_dir), 'model_dtype': 'float32', 'from_pt': False,
      'prompt': 'a red cube', 'num_steps': 6, 'batch_size': 1, 'checkpoint_every': 2,
      'log_every': 1, 'preview_every': 3, 'render.height': 8, 'render.width': 8,
      'render.num_samples': '8,8', 'nerf.width': 16, 'nerf.num_blocks': 1, 'nerf.max_deg': 4,
      'shading.warmup_steps': 2, 'export.video_frames': 4, 'export.video_size': 16,
      'export.mesh_resolution': 32, 'export.mesh_threshold': 10.0,
  }
  values.update(extra)
  return [f'--config.{k}={v}' for k, v in values.items()]


def main_command(workdir, model_dir, **extra):
  return [sys.executable, '-m', 'dreamfusion_jax.main', '--config', 'configs/dreamfusion.py',
          '--workdir', str(workdir), *overrides(model_dir, **extra)]


def run(cmd, cache, **kwargs):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                        **kwargs)


def restore_params(workdir):
  """(state, step) of the newest checkpoint of a run, rebuilt from its saved config.json."""
  config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
  net, bg = train.make_nerf(config), train.make_background(config)
  template = train.init_dreamfusion_state(config, net, bg, train.make_optimizer(config))
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', max_to_keep=3,
                                 metadata=train.run_metadata(config))
  state, step = ckpt.restore_latest(template)
  ckpt.close()
  return state, step


def test_full_run_writes_checkpoints_and_assets(tiny_model, jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  result = run(main_command(workdir, tiny_model), jax_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  written = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert written == [2, 4, 6]
  assert json.loads((workdir / 'metrics.json').read_text())['steps'] == 6
  assert json.loads((workdir / 'config.json').read_text())['prompt'] == 'a red cube'
  assert (workdir / 'command.txt').is_file()
  assert list((workdir / 'tensorboard').iterdir())
  assert sum(1 for _ in iio.imiter(workdir / 'turntable.mp4')) == 4
  for ext in ('glb', 'obj', 'ply'):
    mesh = trimesh.load(workdir / f'mesh.{ext}', force='mesh')
    assert len(mesh.faces) > 0
  # The same assets again from the newest checkpoint, through the export entry point.
  for file in ('mesh.glb', 'mesh.obj', 'mesh.ply', 'turntable.mp4'):
    (workdir / file).unlink()
  exported = run([sys.executable, '-m', 'dreamfusion_jax.export', '--workdir', str(workdir)],
                 jax_cache)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert 'exporting checkpoint 6' in exported.stdout
  assert len(trimesh.load(workdir / 'mesh.ply', force='mesh').faces) == len(mesh.faces)
  assert (workdir / 'turntable.mp4').is_file()
  empty = run([sys.executable, '-m', 'dreamfusion_jax.export', '--workdir', str(workdir),
               '--threshold', '1e9'], jax_cache)
  assert empty.returncode == 2 and 'lower the threshold' in empty.stderr, empty.stderr[-2000:]


def wait_for(path, proc, timeout=600, poll=0.2):
  deadline = time.time() + timeout
  while not path.exists():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(poll)


def test_resume_after_kills_matches_uninterrupted(tiny_model, jax_cache, tmp_path):
  """SIGKILL and SIGTERM at random points, then resume: the parameters equal a straight run."""
  extra = dict(num_steps=120, checkpoint_every=10, log_every=10, preview_every=1000)
  straight = tmp_path / 'straight'
  result = run(main_command(straight, tiny_model, **extra), jax_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  expected, step = restore_params(straight)
  assert step == 120
  workdir = tmp_path / 'interrupted'
  rng = np.random.default_rng()
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=str(jax_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  interrupted_at = 0
  for sig in (signal.SIGKILL, signal.SIGTERM):
    after = interrupted_at + 10 * int(rng.integers(1, 3))  # A checkpoint this run will write.
    proc = subprocess.Popen(main_command(workdir, tiny_model, **extra), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(workdir / 'checkpoints' / str(after), proc, poll=0.005)
    # Tiny steps outrun any sleep: freeze the run at once, then let the signal in on resuming.
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=600)
    if sig == signal.SIGKILL:
      assert proc.returncode == -signal.SIGKILL
    else:
      assert proc.returncode == 0 and 'preempted (SIGTERM)' in stderr, stderr[-3000:]
    _, interrupted_at = restore_params(workdir)
    assert after <= interrupted_at < 120
  result = run(main_command(workdir, tiny_model, **extra), jax_cache)
  assert result.returncode == 0 and 'resumed from checkpoint' in result.stdout, result.stderr
  got, step = restore_params(workdir)
  assert step == 120
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(expected.params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(got.opt_state), jax.tree.leaves(expected.opt_state)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_newest_checkpoint_falls_back(tiny_model, jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  assert run(main_command(workdir, tiny_model), jax_cache).returncode == 0
  for file in (workdir / 'checkpoints' / '6').rglob('*'):
    if file.is_file():
      file.write_bytes(b'\0garbage')
  result = run(main_command(workdir, tiny_model), jax_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resumed from checkpoint 4' in result.stdout
  assert 'checkpoint 6' in result.stderr  # The warning names the corrupt step.
  _, step = restore_params(workdir)
  assert step == 6
  assert list((workdir / 'checkpoints_corrupt').iterdir())  # Moved aside, never deleted.


def error_line(result):
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize('extra, expected', [
    (dict(prompt=' '), 'config.prompt is empty'),
    (dict(**{'shading.modes': "('albedo','metallic')"}), "unknown shading mode 'metallic'"),
    (dict(model='/nonexistent/model'), 'config.model=/nonexistent/model is not a folder'),
    (dict(**{'t_range': '0.0,0.98'}), 'config.t_range=(0.0, 0.98) must lie strictly inside'),
    (dict(t_max_end=1.0), 'config.t_max_end=1.0 must lie in (t_range[0], 1)'),
    (dict(**{'loss.entropy_weight': -1.0}), 'config.loss.entropy_weight=-1.0 must be >= 0'),
    (dict(**{'loss.smoothness_radius': 0.0}), 'config.loss.smoothness_radius=0.0 must be > 0'),
    (dict(**{'render.remat_chunks': 7}), 'config.render.remat_chunks=7 must be 0 (off) or divide'),
    (dict(**{'render.parallel_chunks': 3}),
     'config.render.parallel_chunks=3 must be 0 (automatic), 1 (off) or divide the 64 rays'),
])
def test_bad_input_fails_before_compiling(tiny_model, jax_cache, tmp_path, extra, expected):
  result = run(main_command(tmp_path / 'run', tiny_model, **extra), jax_cache)
  assert expected in error_line(result)
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_workdir_that_is_a_file(tiny_model, jax_cache, tmp_path):
  afile = tmp_path / 'afile'
  afile.write_text('x')
  assert 'is a file' in error_line(run(main_command(afile, tiny_model), jax_cache))


def test_changed_model_shape_is_refused_on_resume(tiny_model, jax_cache, tmp_path):
  workdir = tmp_path / 'run'
  assert run(main_command(workdir, tiny_model), jax_cache).returncode == 0
  line = error_line(run(main_command(workdir, tiny_model, **{'nerf.width': 32}), jax_cache))
  assert 'nerf.width' in line and '16' in line and '32' in line
  assert (workdir / 'checkpoints' / '6').is_dir()  # The written checkpoint is kept.


def make_step_setup(tiny_model, **overrides):
  config = dreamfusion_config.get_config()
  config.update_from_flattened_dict({
      'model': str(tiny_model), 'model_dtype': 'float32', 'from_pt': False, 'batch_size': 2,
      'render.height': 8, 'render.width': 8, 'render.num_samples': (8, 8), 'nerf.width': 16,
      'nerf.num_blocks': 1, 'nerf.max_deg': 4, 'shading.warmup_steps': 0, **overrides})
  diffusion = train.load_diffusion(config)
  text = diffusion.encode_views(config.prompt)
  net, bg = train.make_nerf(config), train.make_background(config)
  optimizer = train.make_optimizer(config)
  state = train.init_dreamfusion_state(config, net, bg, optimizer)
  step = train.make_dreamfusion_step(config, net, bg, optimizer, donate=False)
  return step, state, diffusion, text


@pytest.fixture(scope='module')
def step_setup(tiny_model):
  return make_step_setup(tiny_model)


def test_t_max_falls_over_the_anneal(tiny_model):
  step, state, diffusion, text = make_step_setup(tiny_model, t_max_end=0.3, t_anneal_steps=10)
  _, first = step(state, diffusion, text)
  assert float(first['t_max']) == pytest.approx(0.98)
  _, half = step(state.replace(step=5), diffusion, text)
  assert float(half['t_max']) == pytest.approx(0.64)
  for at in (10, 50):  # Constant after the anneal; every view's t below t_max.
    _, late = step(state.replace(step=at), diffusion, text)
    assert float(late['t_max']) == pytest.approx(0.3) and float(late['t']) <= 0.3


def test_entropy_weight_adds_the_opacity_entropy(tiny_model):
  step, state, diffusion, text = make_step_setup(tiny_model)
  _, plain = step(state, diffusion, text)
  step, state, diffusion, text = make_step_setup(tiny_model, **{'loss.entropy_weight': 10.0})
  _, with_entropy = step(state, diffusion, text)
  assert float(plain['entropy']) > 0
  assert float(with_entropy['loss']) == pytest.approx(
      float(plain['loss']) + 10.0 * float(plain['entropy']), rel=1e-4)


def test_smoothness_weight_adds_the_normal_smoothness(tiny_model):
  step, state, diffusion, text = make_step_setup(tiny_model)
  _, plain = step(state, diffusion, text)
  step, state, diffusion, text = make_step_setup(tiny_model, **{'loss.smoothness_weight': 10.0})
  new_state, smooth = step(state, diffusion, text)
  assert 'smoothness' not in plain and float(smooth['smoothness']) > 0
  # Its own key: the SDS draw and the other terms are those of the run without it.
  assert float(smooth['sds']) == pytest.approx(float(plain['sds']), rel=1e-5)
  assert float(smooth['loss']) == pytest.approx(
      float(plain['loss']) + 10.0 * float(smooth['smoothness']), rel=1e-4)
  assert float(smooth['skipped']) == 0 and np.isfinite(float(smooth['grad_norm']))


def test_surface_smoothness_is_small_on_a_sphere_and_large_on_a_bumpy_field():
  import types  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax import camera, nerf  # pylint: disable=g-import-not-at-top
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
  step, state, diffusion, text = make_step_setup(tiny_model)
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
  net, bg = train.make_nerf(config), train.make_background(config)
  state = train.init_dreamfusion_state(config, net, bg, train.make_optimizer(config))
  cams = camera.orbit_cameras(2, elevation_deg=20.0, distance=1.3, focal=16.0)
  lights = cams.c2w[:, :3, 3]
  modes = jnp.array([1, 2], jnp.int32)
  results = []
  for values in chunking:
    config.update_from_flattened_dict({f'render.{k}': v for k, v in values.items()})
    settings, render_fn = train.make_sds_settings(config), train.make_render_fn(config)

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


def test_independent_chunks_keep_the_row_order_and_give_each_group_its_key():
  fn = lambda key, x: (x * 2.0, jnp.broadcast_to(jax.random.uniform(key), x.shape[:1]))
  x = jnp.arange(24.0).reshape(12, 2)
  doubled, draws = steps.independent_chunks(fn, 3)(jax.random.key(0), x)
  np.testing.assert_array_equal(doubled, x * 2.0)
  # Rows c, c + 3, ... form group c and share its draw; the three groups' draws differ.
  np.testing.assert_array_equal(draws.reshape(4, 3), np.broadcast_to(draws[:3], (4, 3)))
  assert len(set(np.asarray(draws[:3]).tolist())) == 3
  with pytest.raises(ValueError, match='12 rays do not split into 5 chunks'):
    steps.independent_chunks(fn, 5)(jax.random.key(0), x)


def test_parallel_chunks_are_automatic_on_a_cpu_only(monkeypatch):
  config = dreamfusion_config.get_config()
  assert config.render.parallel_chunks == 0 and jax.default_backend() == 'cpu'
  assert train.parallel_chunks(config) == train.CPU_PARALLEL_CHUNKS
  assert train.make_sds_settings(config).parallel_chunks == train.CPU_PARALLEL_CHUNKS
  assert train.step_compiler_options(config) == {
      'xla_cpu_enable_concurrency_optimized_scheduler': True}
  config.batch_size, config.render.height, config.render.width = 1, 3, 3  # 9 rays: 3 groups.
  assert train.parallel_chunks(config) == 3
  config.render.parallel_chunks = 1
  assert train.parallel_chunks(config) == 1 and train.step_compiler_options(config) is None
  config.render.parallel_chunks = 0
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert train.parallel_chunks(config) == 1 and train.step_compiler_options(config) is None


def test_non_finite_step_is_skipped(step_setup):
  step, state, diffusion, text = step_setup
  poisoned = diffusion.replace(alphas_cumprod=diffusion.alphas_cumprod * jnp.nan)
  new, metrics = step(state, poisoned, text)
  assert float(metrics['skipped']) == 1.0 and int(new.step) == 1
  for a, b in zip(jax.tree.leaves((new.params, new.opt_state)),
                  jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_array_equal(a, b)


class FakeCheckpointer:
  """Records the steps saved; `on_wait(self)` runs in each `wait`."""

  def __init__(self, on_wait=lambda ckpt: None):
    self.saved, self.on_wait = [], on_wait

  def save(self, step, state, force=False):  # pylint: disable=unused-argument
    self.saved.append(step)

  def wait(self):
    self.on_wait(self)


def loop_config():
  return ml_collections.ConfigDict(dict(
      method='dreamfusion', num_steps=50, log_every=10, preview_every=100, checkpoint_every=100,
      max_consecutive_skips=3))


def counting_step(skipped):
  def step_fn(state):
    return state.replace(step=state.step + 1), {'skipped': jnp.float32(skipped),
                                                'loss': jnp.float32(1.0), 't': jnp.float32(0.5)}
  return step_fn


def empty_state():
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params={}, opt_state=(),
                          key=jax.random.key(0))


class NullWriter:
  def add_scalar(self, *args):
    pass


def test_too_many_skips_stop_the_run():
  ckpt = FakeCheckpointer()
  with pytest.raises(FloatingPointError, match='3 steps in a row'):
    train._train_loop(loop_config(), empty_state(), counting_step(1.0), ckpt, None, None)  # pylint: disable=protected-access
  assert not ckpt.saved


def test_signal_while_the_last_checkpoint_commits_is_a_clean_stop(capsys):
  """SIGTERM in the final checkpoint's wait: the commit finishes and the loop reports it."""
  guarded = []

  def on_wait(ckpt):
    # Send the signal only while a guard holds it: unguarded, it would end the test process.
    guarded.append(signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None))
    if guarded[-1]:
      os.kill(os.getpid(), signal.SIGTERM)

  ckpt = FakeCheckpointer(on_wait)
  result = train._train_loop(loop_config(), empty_state(), counting_step(0.0), ckpt, NullWriter(),  # pylint: disable=protected-access
                             None)
  assert guarded == [True], 'the last checkpoint wait ran without the preemption guard'
  assert result is None and ckpt.saved == [50]
  assert 'preempted (SIGTERM) after the last step: checkpoint 50' in capsys.readouterr().err


def test_pixel_config_trains_with_a_pixel_model(tmp_path):
  """configs/dreamfusion_pixel.py: the paper's 64x64 pixel-space form, here a 16 px model."""
  from configs import dreamfusion_pixel  # pylint: disable=g-import-not-at-top
  tiny_models.save_flax_model(tmp_path, pixel=True, seed=3)
  config = dreamfusion_pixel.get_config()
  config.update_from_flattened_dict({
      'model': str(tmp_path), 'batch_size': 1, 'render.height': 16, 'render.width': 16,
      'render.num_samples': (8, 8), 'nerf.width': 16, 'nerf.num_blocks': 1, 'nerf.max_deg': 4})
  train.validate_config(config, tmp_path / 'run')
  diffusion = train.load_diffusion(config)
  assert not diffusion.is_latent and diffusion.resolution == config.render.width
  net, bg = train.make_nerf(config), train.make_background(config)
  optimizer = train.make_optimizer(config)
  state = train.init_dreamfusion_state(config, net, bg, optimizer)
  step = train.make_dreamfusion_step(config, net, bg, optimizer, donate=False)
  new, metrics = step(state, diffusion, diffusion.encode_views('a red cube'))
  assert int(new.step) == 1 and float(metrics['skipped']) == 0.0
  assert np.isfinite(float(metrics['loss'])) and float(metrics['grad_norm']) > 0


def test_pixel_config_requires_a_model(tmp_path):
  from configs import dreamfusion_pixel  # pylint: disable=g-import-not-at-top
  with pytest.raises(train.ConfigError, match='config.model is empty'):
    train.validate_config(dreamfusion_pixel.get_config(), tmp_path / 'run')


@pytest.mark.parametrize('field, value, message', [
    ('nerf.normal_eps', -0.01, 'config.nerf.normal_eps=-0.01 must be >= 0'),
    ('camera.uniform_sphere_rate', 1.5, r'config.camera.uniform_sphere_rate=1.5 must lie in \[0, 1\]'),
])
def test_impossible_sampling_values_are_refused(tmp_path, field, value, message):
  config = dreamfusion_config.get_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(train.ConfigError, match=message):
    train.validate_config(config, tmp_path / 'run')


def test_normal_eps_is_not_part_of_what_a_checkpoint_must_match():
  config = dreamfusion_config.get_config()
  smooth = dreamfusion_config.get_config()
  smooth.nerf.normal_eps = 0.02
  assert train.run_metadata(smooth) == train.run_metadata(config)
  smooth.nerf.width = 64
  assert train.run_metadata(smooth) != train.run_metadata(config)


def test_initial_state_is_one_program_equal_to_eager_init(compiles):
  config = dreamfusion_config.get_config()
  net, bg, opt = train.make_nerf(config), train.make_background(config), train.make_optimizer(config)
  start = compiles()
  state = train.init_dreamfusion_state(config, net, bg, opt)
  assert compiles() - start <= 12  # The init program and a few key ops (8 in a fresh process; 96 eagerly).
  key_nerf, key_bg = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1))
  x = jnp.zeros((1, 3))
  eager = {'nerf': net.init(key_nerf, x, x), 'background': bg.init(key_bg, x)}
  assert jax.tree.all(jax.tree.map(np.array_equal, state.params, eager))
