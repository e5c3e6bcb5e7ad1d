"""train.train_and_evaluate end to end with a tiny saved diffusers model: runs, resume, refusal."""

import json
import shutil
import signal
import subprocess
import time

import imageio.v3 as iio
import jax
import numpy as np
import pytest
import trimesh

from configs import dreamfusion_pixel
from dreamfusion_jax import build
from dreamfusion_jax import config_checks
from dreamfusion_jax import export
from dreamfusion_jax import train
from dreamfusion_jax.testing import runs
from dreamfusion_jax.testing import tiny_models


@pytest.fixture(scope='module')
def finished_run(tiny_model, tmp_path_factory):
  """The folder of a finished 6-step run (checkpoints 2, 4, 6); copy it before changing it."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  metrics = train.train_and_evaluate(runs.tiny_config(tiny_model), workdir)
  assert metrics['steps'] == 6
  return workdir


def copy_of(workdir, tmp_path):
  target = tmp_path / 'run'
  shutil.copytree(workdir, target)
  return target


def test_full_run_writes_checkpoints_and_assets(finished_run, tmp_path, capsys):
  workdir = copy_of(finished_run, tmp_path)
  written = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  assert written == [2, 4, 6]
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['steps'] == 6 and metrics['recorded_steps'] == 6
  # The gradient norm before clipping and the share of steps configs/dreamfusion.py's clip cut.
  assert 0 < metrics['grad_norm_p10'] <= metrics['grad_norm_median'] <= metrics['grad_norm_p90']
  assert metrics['clipped_share'] in {i / 6 for i in range(7)}
  assert json.loads((workdir / 'config.json').read_text())['prompt'] == 'a red cube'
  assert (workdir / 'command.txt').is_file()
  assert list((workdir / 'tensorboard').iterdir())
  assert sum(1 for _ in iio.imiter(workdir / 'turntable.mp4')) == 4
  for ext in ('glb', 'obj', 'ply'):
    mesh = trimesh.load(workdir / f'mesh.{ext}', force='mesh')
    assert len(mesh.faces) > 0
  assert 'map_Kd texture.png' in (workdir / 'mesh.mtl').read_text()
  # Nothing beyond the sphere the renderer samples (render.scene_radius 1, grid step 2 / 31).
  assert np.linalg.norm(mesh.vertices, axis=1).max() <= 1.0 + 2.0 / 31
  errors = runs.texture_error(workdir)  # The baked texture is the field's albedo.
  assert max(errors.values()) < 0.05, errors
  # The same assets again from the newest checkpoint, through the export entry point.
  for file in ('mesh.glb', 'mesh.obj', 'mesh.mtl', 'texture.png', 'mesh.ply', 'turntable.mp4'):
    (workdir / file).unlink()
  capsys.readouterr()
  assert export.main(['--workdir', str(workdir)]) == 0
  assert 'exporting checkpoint 6' in capsys.readouterr().out
  assert len(trimesh.load(workdir / 'mesh.ply', force='mesh').faces) == len(mesh.faces)
  assert (workdir / 'turntable.mp4').is_file() and (workdir / 'texture.png').is_file()
  assert export.main(['--workdir', str(workdir), '--threshold', '1e9']) == 2
  assert 'lower the threshold' in capsys.readouterr().err
  assert export.main(['--workdir', str(tmp_path / 'nothing')]) == 2
  assert 'config.json not found' in capsys.readouterr().err


def wait_for(path, proc, timeout=600, poll=0.2):
  deadline = time.time() + timeout
  while not path.exists():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(poll)


def test_resume_continues_to_the_uninterrupted_run(finished_run, tiny_model, tmp_path, capsys):
  """A run stopped after checkpoint 4 and started again ends with the straight run's state."""
  workdir = copy_of(finished_run, tmp_path)
  shutil.rmtree(workdir / 'checkpoints' / '6')
  train.train_and_evaluate(runs.tiny_config(tiny_model), workdir)
  assert 'resumed from checkpoint 4' in capsys.readouterr().out
  got, step = runs.restore(workdir)
  expected, _ = runs.restore(finished_run)
  assert step == 6
  for a, b in zip(jax.tree.leaves((got.params, got.opt_state)),
                  jax.tree.leaves((expected.params, expected.opt_state))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # Three processes of the entry point and a straight run: 80 s measured.
def test_resume_after_kills_matches_uninterrupted(tiny_model, jax_cache, tmp_path):
  """SIGKILL and SIGTERM at random points, then resume: the parameters equal a straight run."""
  extra = dict(num_steps=120, checkpoint_every=10, log_every=10, preview_every=1000)
  straight = tmp_path / 'straight'
  train.train_and_evaluate(runs.tiny_config(tiny_model, **extra), straight)
  expected, step = runs.restore(straight)
  assert step == 120
  workdir = tmp_path / 'interrupted'
  rng = np.random.default_rng()
  interrupted_at = 0
  for sig in (signal.SIGKILL, signal.SIGTERM):  # Signals: the entry point in a subprocess.
    after = interrupted_at + 10 * int(rng.integers(1, 3))  # A checkpoint this run will write.
    proc = subprocess.Popen(runs.main_command(workdir, tiny_model, **extra), cwd=runs.REPO,
                            env=runs.env(jax_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
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
    _, interrupted_at = runs.restore(workdir)
    assert after <= interrupted_at < 120
  result = runs.run(runs.main_command(workdir, tiny_model, **extra), jax_cache)
  assert result.returncode == 0 and 'resumed from checkpoint' in result.stdout, result.stderr
  got, step = runs.restore(workdir)
  assert step == 120
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(expected.params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(got.opt_state), jax.tree.leaves(expected.opt_state)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_newest_checkpoint_falls_back(finished_run, tiny_model, tmp_path, capsys, caplog):
  workdir = copy_of(finished_run, tmp_path)
  for file in (workdir / 'checkpoints' / '6').rglob('*'):
    if file.is_file():
      file.write_bytes(b'\0garbage')
  train.train_and_evaluate(runs.tiny_config(tiny_model), workdir)
  assert 'resumed from checkpoint 4' in capsys.readouterr().out
  assert 'checkpoint 6' in caplog.text  # The warning names the corrupt step.
  _, step = runs.restore(workdir)
  assert step == 6
  assert list((workdir / 'checkpoints_corrupt').iterdir())  # Moved aside, never deleted.


def test_step_that_does_not_fit_stops_before_touching_checkpoints(finished_run, tiny_model,
                                                                   tmp_path):
  """Automatic render.remat_chunks with a limit no chunk count meets: one line, nothing lost."""
  workdir = copy_of(finished_run, tmp_path)
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  config = runs.tiny_config(tiny_model, num_steps=8, memory_limit_gib=1e-6)
  assert config.render.remat_chunks == -1  # configs/dreamfusion.py's default.
  with pytest.raises(config_checks.ConfigError) as error:
    train.train_and_evaluate(config, workdir)
  assert str(error.value).startswith('the step does not fit: ')
  assert 'render.remat_chunks=64 (the most tried), 0.00 GiB available' in str(error.value)
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before
  _, step = runs.restore(workdir)
  assert step == 6


def test_changed_model_shape_is_refused_on_resume(finished_run, tiny_model, tmp_path):
  workdir = copy_of(finished_run, tmp_path)
  with pytest.raises(config_checks.ConfigError) as error:
    train.train_and_evaluate(runs.tiny_config(tiny_model, **{'nerf.width': 32}), workdir)
  line = str(error.value)
  assert 'nerf.width' in line and '16' in line and '32' in line
  assert (workdir / 'checkpoints' / '6').is_dir()  # The written checkpoint is kept.


def test_pixel_config_trains_with_a_pixel_model(tmp_path):
  """configs/dreamfusion_pixel.py: the paper's 64x64 pixel-space form, here a 16 px model."""
  tiny_models.save_flax_model(tmp_path, pixel=True, seed=3)
  config = dreamfusion_pixel.get_config()
  config.update_from_flattened_dict({
      'model': str(tmp_path), 'prompt': 'a red cube', 'batch_size': 1, 'render.height': 16,
      'render.width': 16, 'render.num_samples': (8, 8), 'nerf.width': 16, 'nerf.num_blocks': 1,
      'nerf.max_deg': 4})
  config_checks.validate_config(config, tmp_path / 'run')
  diffusion = build.load_diffusion(config)
  assert not diffusion.is_latent and diffusion.resolution == config.render.width
  run = build.build(config)
  new, metrics = run.make_step(donate=False)(run.init_state(), diffusion,
                                             diffusion.encode_views('a red cube'))
  assert int(new.step) == 1 and float(metrics['skipped']) == 0.0
  assert np.isfinite(float(metrics['loss'])) and float(metrics['grad_norm']) > 0
