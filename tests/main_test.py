"""The real entry point: bad input fails fast with one line; a short fit reaches a stated PSNR."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, '-m', 'dreamfusion_jax.main', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


def error_line(result):
  """The single `error:` line of a failed run (asserting there is exactly one)."""
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  return lines[0]


@pytest.mark.parametrize('override, expected', [
    ('--config.nmu_steps=5', ["unknown config field 'nmu_steps' in --config.nmu_steps=5",
                              "did you mean 'num_steps'?"]),
    ('--config.render.nera=1', ["unknown config field 'nera' in --config.render.nera=1",
                                "did you mean 'near'?"]),
    ('--config.optim.lr_init=fast', ['--config.optim.lr_init=fast', 'float']),
    ('--config.num_steps=1.5', ['--config.num_steps=1.5']),
    ('--config.optim.lr_init=-0.1', ['config.optim.lr_init=-0.1 must be > 0']),
    ('--config.render.near=6.0', ['config.render.near=6.0 must be less than',
                                  'config.render.far=6.0']),
    ('--config.data.path=/nonexistent/scene', ['config.data.path=/nonexistent/scene',
                                               'not a folder']),
    ('--config.nerf.encoding=hash', ["config.nerf.encoding='hash'", 'ipe or grid']),
])
def test_bad_config_gives_one_line(small_scene, override, expected, tmp_path):
  args = ['--config', 'configs/nerf_small.py', '--workdir', str(tmp_path / 'run'),
          f'--config.data.path={small_scene}']
  result = run_main(*args, override)
  line = error_line(result)
  for text in expected:
    assert text in line, line
  assert not (tmp_path / 'run').exists()  # Nothing written before the config is checked.


def test_missing_data_path_and_file_workdir(tmp_path):
  line = error_line(run_main('--config', 'configs/nerf_small.py', '--workdir',
                             str(tmp_path / 'run')))
  assert 'config.data.path is empty' in line
  afile = tmp_path / 'afile'
  afile.write_text('x')
  line = error_line(run_main('--config', 'configs/nerf_small.py', '--workdir', str(afile)))
  assert 'is a file' in line


def test_missing_config_file(tmp_path):
  line = error_line(run_main('--config', 'configs/no_such_config.py', '--workdir',
                             str(tmp_path / 'run')))
  assert 'configs/no_such_config.py: no such file' in line


def test_scene_without_test_split(tmp_path, small_scene):
  scene = tmp_path / 'scene'
  scene.mkdir()
  (scene / 'transforms_train.json').write_text(
      (small_scene / 'transforms_train.json').read_text())
  line = error_line(run_main('--config', 'configs/nerf_small.py', '--workdir',
                             str(tmp_path / 'run'), f'--config.data.path={scene}'))
  assert 'transforms_test.json' in line


def test_short_fit_reaches_psnr(small_scene, tmp_path):
  workdir = tmp_path / 'run'
  result = run_main('--config', 'configs/nerf_small.py', '--workdir', str(workdir),
                    f'--config.data.path={small_scene}', '--config.num_steps=150',
                    '--config.batch_size=512', '--config.log_every=50')
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['steps'] == 150
  assert metrics['seconds'] > 0
  assert len(metrics['test_psnr_per_view']) == 4
  assert metrics['test_psnr'] >= 22.0, metrics
  assert (workdir / 'renders' / 'test_000.png').is_file()
  assert (workdir / 'config.json').is_file()
  assert 'psnr=' in result.stderr  # The progress bar shows loss and PSNR.


def test_local_launcher_passes_arguments(small_scene, tmp_path):
  usage = subprocess.run(['bash', 'launch/local.sh'], cwd=REPO, capture_output=True, text=True)
  assert usage.returncode == 2 and 'usage:' in usage.stderr
  result = subprocess.run(
      ['bash', 'launch/local.sh', 'configs/nerf_small.py', str(tmp_path / 'run'),
       f'--config.data.path={small_scene}', '--config.optim.lr_final=0'],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert 'config.optim.lr_final=0' in error_line(result)


@pytest.mark.slow  # About 6 minutes: the documented fit.
def test_nerf_small_full_fit(tmp_path):
  """The documented CPU fit: a fresh 100x100, 3-object scene reaches test PSNR >= 25 dB."""
  scene = tmp_path / 'scene'
  generate = subprocess.run(
      [sys.executable, '-m', 'dreamfusion_jax.data.synthetic', '--out', str(scene),
       '--seed', '11'], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert generate.returncode == 0, generate.stderr
  workdir = tmp_path / 'run'
  result = run_main('--config', 'configs/nerf_small.py', '--workdir', str(workdir),
                    f'--config.data.path={scene}', timeout=1500)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['steps'] == 1000
  assert len(metrics['test_psnr_per_view']) == 16
  assert metrics['test_psnr'] >= 25.0, metrics
