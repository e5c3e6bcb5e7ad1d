"""classic: the classic NeRF fit of a Blender-format scene through train.train_and_evaluate."""

import json

import pytest

from configs import nerf_small
from dreamfusion_jax import train
from dreamfusion_jax.data import blender
from dreamfusion_jax.data import synthetic


def nerf_config(scene, **overrides):
  config = nerf_small.get_config()
  config.data.path = str(scene)
  config.update_from_flattened_dict(overrides)
  return config


def test_short_fit_reaches_psnr(small_scene, tmp_path, capsys):
  workdir = tmp_path / 'run'
  metrics = train.train_and_evaluate(
      nerf_config(small_scene, num_steps=100, batch_size=512, log_every=50), workdir)
  assert metrics == json.loads((workdir / 'metrics.json').read_text())
  assert metrics['steps'] == 100
  assert metrics['seconds'] > 0
  assert len(metrics['test_psnr_per_view']) == 4
  assert metrics['test_psnr'] >= 22.0, metrics
  assert (workdir / 'renders' / 'test_000.png').is_file()
  assert (workdir / 'config.json').is_file()
  assert 'psnr=' in capsys.readouterr().err  # The progress bar shows loss and PSNR.


def test_scene_without_test_split(tmp_path, small_scene):
  scene = tmp_path / 'scene'
  scene.mkdir()
  (scene / 'transforms_train.json').write_text(
      (small_scene / 'transforms_train.json').read_text())
  with pytest.raises(train.ConfigError, match='transforms_test.json'):
    train.train_and_evaluate(nerf_config(scene), tmp_path / 'run')
  assert not (tmp_path / 'run').exists()  # Refused before anything is written.


def test_missing_image_is_a_scene_error(tmp_path, small_scene):
  scene = tmp_path / 'scene'
  scene.mkdir()
  for split in ('train', 'test'):
    (scene / f'transforms_{split}.json').write_text(
        (small_scene / f'transforms_{split}.json').read_text())
  with pytest.raises(blender.SceneError):
    train.train_and_evaluate(nerf_config(scene, num_steps=1), tmp_path / 'run')


@pytest.mark.full  # About 4 to 6 minutes, the documented fit: beyond CI's 35 minutes.
def test_nerf_small_full_fit(tmp_path):
  """The documented CPU fit: a fresh 100x100, 3-object scene reaches test PSNR >= 25 dB."""
  scene = tmp_path / 'scene'
  assert synthetic.main(['--out', str(scene), '--seed', '11']) == 0
  metrics = train.train_and_evaluate(nerf_config(scene), tmp_path / 'run')
  assert metrics['steps'] == 1000
  assert len(metrics['test_psnr_per_view']) == 16
  assert metrics['test_psnr'] >= 25.0, metrics
