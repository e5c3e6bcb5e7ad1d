"""The entry point's flags: bad flags and bad values fail fast with one line, launchers pass them.

Flag parsing happens in the process that runs main, so these tests start it as a subprocess;
the config checks themselves are tested in-process in config_checks_test.
"""

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
    # One value check through the entry point: the wiring of config_checks into main.
    ('--config.render.near=6.0', ['config.render.near=6.0 must be less than',
                                  'config.render.far=6.0']),
])
def test_bad_config_gives_one_line(small_scene, override, expected, tmp_path):
  args = ['--config', 'configs/nerf_small.py', '--workdir', str(tmp_path / 'run'),
          f'--config.data.path={small_scene}']
  result = run_main(*args, override)
  line = error_line(result)
  for text in expected:
    assert text in line, line
  assert not (tmp_path / 'run').exists()  # Nothing written before the config is checked.


def test_missing_config_file(tmp_path):
  line = error_line(run_main('--config', 'configs/no_such_config.py', '--workdir',
                             str(tmp_path / 'run')))
  assert 'configs/no_such_config.py: no such file' in line


def test_local_launcher_passes_arguments(small_scene, tmp_path):
  usage = subprocess.run(['bash', 'launch/local.sh'], cwd=REPO, capture_output=True, text=True)
  assert usage.returncode == 2 and 'usage:' in usage.stderr
  result = subprocess.run(
      ['bash', 'launch/local.sh', 'configs/nerf_small.py', str(tmp_path / 'run'),
       f'--config.data.path={small_scene}', '--config.optim.lr_final=0'],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert 'config.optim.lr_final=0' in error_line(result)
