"""Devices, hosts and many prompts: 1 vs 8 simulated devices, two processes, prompts together.

Simulated CPU devices need XLA_FLAGS before JAX starts, so every multi-device run is a
subprocess of the entry point; the comparisons restore the checkpoints in this process.
"""

import json
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import dreamfusion as dreamfusion_config
from dreamfusion_jax import many_prompts
from dreamfusion_jax import parallel
from dreamfusion_jax.testing import runs

REPO = runs.REPO
main_command = runs.main_command
restore_params = runs.restore


def run(cmd, cache, devices, timeout=900):
  env = dict(runs.env(cache), XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True), timeout


def finish(started):
  proc, timeout = started
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def run_ok(cmd, cache, devices):
  code, out, err = finish(run(cmd, cache, devices))
  assert code == 0, err[-3000:]
  return out + err


# The train steps of two runs that differ only in how the same global batch is split differ by
# float reduction order. Adam divides each gradient by its own running scale, so a parameter
# whose gradient is ~0 can move by up to the learning rate on rounding noise alone; the first
# moment (0.1 x the gradient at step 1, linear in it after) shows the gradients themselves.
def assert_same_training(a, b, moment_rtol=1e-3, param_atol=1e-5, moved_fraction=1e-3):
  mu_a, mu_b = first_moment(a.opt_state), first_moment(b.opt_state)
  for x, y in zip(jax.tree.leaves(mu_a), jax.tree.leaves(mu_b)):
    x, y = np.asarray(x), np.asarray(y)
    scale = max(float(np.max(np.abs(x))), 1e-12)
    assert float(np.max(np.abs(x - y))) <= moment_rtol * scale, (x.shape, np.abs(x - y).max(),
                                                                 scale)
  x = np.concatenate([np.ravel(v) for v in jax.tree.leaves(a.params)])
  y = np.concatenate([np.ravel(v) for v in jax.tree.leaves(b.params)])
  assert float(np.mean(np.abs(x - y) > param_atol)) <= moved_fraction
  assert int(a.step) == int(b.step)


# Resuming with a larger config.num_steps (2, then 4) changes every schedule that spans num_steps;
# the comparisons with a straight 4-step run hold the learning rate constant (the recipe's
# log-linear 5e-3 -> 5e-4 made resumed runs differ by up to 60% of a moment's scale).
CONSTANT_LR = {'optim.lr_final': dreamfusion_config.get_config().optim.lr_init}


def first_moment(opt_state):
  """The first moment of an optax state: Adam's mu or Adan's m (wherever the chain puts it)."""
  moment = lambda x: getattr(x, 'mu', getattr(x, 'm', None))
  is_state = lambda x: hasattr(x, 'mu') or (hasattr(x, 'm') and hasattr(x, 'v'))
  found = [moment(s) for s in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(s)]
  assert len(found) == 1
  return found[0]


def test_mesh_size_rules():
  assert parallel.mesh_size(4, 0, 8) == 4  # The most devices the batch splits over.
  assert parallel.mesh_size(6, 0, 8) == 6
  assert parallel.mesh_size(1, 0, 8) == 1
  assert parallel.mesh_size(16, 0, 8) == 8
  assert parallel.mesh_size(8, 2, 8) == 2
  assert parallel.mesh_size(8, 0, 8, process_count=2) == 8
  with pytest.raises(ValueError, match='config.batch_size=3 views do not split evenly over 8'):
    parallel.mesh_size(3, 8, 8)
  with pytest.raises(ValueError, match='config.batch_size=4 .* over 8'):
    parallel.mesh_size(4, 0, 8, process_count=2)
  with pytest.raises(ValueError, match='uses all 8 devices'):
    parallel.mesh_size(8, 4, 8, process_count=2)
  with pytest.raises(ValueError, match=r'must be in \[0, 8\]'):
    parallel.mesh_size(8, 9, 8)


HASH_GRID = {'nerf.encoding': 'hash', 'nerf.hash_levels': 4, 'nerf.hash_log2_table': 10,
             'nerf.hash_min_res': 4, 'nerf.hash_max_res': 32, 'nerf.hash_band': (2, 1, 1)}


# One step compiled for 8 devices and for 1: about 2 minutes per encoding. The hash grid's
# sharded step is the same program around another field: -m full, for CI's 35 minutes
# (hashgrid_test runs it vmapped over prompts and on one device).
@pytest.mark.parametrize('encoding', [
    pytest.param({}, id='ipe', marks=pytest.mark.slow),
    pytest.param(HASH_GRID, id='hash', marks=pytest.mark.full)])
def test_eight_devices_match_one(tiny_model, jax_cache, tmp_path, encoding):
  one, eight = tmp_path / 'one', tmp_path / 'eight'
  extra = dict(batch_size=8, num_steps=4, checkpoint_every=4, **encoding)
  log = run_ok(main_command(eight, tiny_model, num_devices=8, **extra), jax_cache, 8)
  assert '8 views per step over 8 of 8 devices' in log
  run_ok(main_command(one, tiny_model, num_devices=1, **extra), jax_cache, 8)
  a, step_a = restore_params(one)
  b, step_b = restore_params(eight)
  assert step_a == step_b == 4
  assert_same_training(a, b)


@pytest.mark.full  # Two nerf_small fits, one compiled for 8 devices: about 4 minutes.
def test_classic_nerf_on_eight_devices_matches_one(small_scene, jax_cache, tmp_path):
  def fit(workdir, devices):
    run_ok([sys.executable, '-m', 'dreamfusion_jax.main', '--config', 'configs/nerf_small.py',
            '--workdir', str(workdir), f'--config.data.path={small_scene}',
            '--config.num_steps=30', '--config.batch_size=512', '--config.log_every=10',
            f'--config.num_devices={devices}'], jax_cache, 8)
    return json.loads((workdir / 'metrics.json').read_text())['test_psnr_per_view']
  one, eight = fit(tmp_path / 'one', 1), fit(tmp_path / 'eight', 8)
  assert min(one) > 12.0  # It learned something in 30 steps.
  np.testing.assert_allclose(eight, one, atol=0.05)


def test_uneven_batch_is_a_clear_error(tiny_model, jax_cache, tmp_path):
  code, _, err = finish(run(main_command(tmp_path / 'w', tiny_model, num_devices=8,
                                         batch_size=3), jax_cache, 8))
  assert code == 2
  assert 'error: config.batch_size=3 views do not split evenly over 8 devices' in err
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def two_processes(workdir, tiny_model, jax_cache, **extra):
  port = free_port()
  started = [run(main_command(workdir, tiny_model, **extra) + [
      f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
                 jax_cache, 2) for i in range(2)]
  results = [finish(s) for s in started]
  for code, _, err in results:
    assert code == 0, err[-3000:]
  return results


@pytest.mark.slow  # Three runs, two of them with two processes: about 3 minutes.
def test_two_processes_train_checkpoint_and_resume(tiny_model, jax_cache, tmp_path):
  extra = dict(batch_size=4, checkpoint_every=2, **CONSTANT_LR)
  straight = tmp_path / 'straight'
  run_ok(main_command(straight, tiny_model, num_steps=4, **extra), jax_cache, 4)
  hosts = tmp_path / 'hosts'
  first = two_processes(hosts, tiny_model, jax_cache, num_steps=2, **extra)
  assert '4 views per step over 4 of 4 devices (2 processes)' in first[0][1]
  assert '4 views per step' not in first[1][1]  # Only process 0 logs.
  second = two_processes(hosts, tiny_model, jax_cache, num_steps=4, **extra)
  assert 'resumed from checkpoint 2' in second[0][1]
  a, step = restore_params(straight)
  b, step_b = restore_params(hosts)
  assert step == step_b == 4
  assert_same_training(a, b)
  assert (hosts / 'turntable.mp4').is_file() and (hosts / 'mesh.glb').is_file()


@pytest.mark.slow  # Four runs through the entry point: about 2 minutes.
def test_prompts_together_equal_each_alone(tiny_model, jax_cache, tmp_path):
  prompts = ('a red cube', 'a blue sphere', 'a red sphere')
  together = tmp_path / 'together'
  # Three prompts over two devices: one padding copy fills the mesh and is never written.
  log = run_ok(main_command(together, tiny_model, prompts=repr(prompts), num_steps=4,
                            checkpoint_every=2), jax_cache, 2)
  assert '3 prompts (4 with padding) over 2 of 2 devices' in log
  folders = many_prompts.prompt_dirs(together, prompts)
  assert sorted(p.name for p in (together / 'prompts').iterdir()) == [
      '000_a_red_cube', '001_a_blue_sphere', '002_a_red_sphere']
  summary = json.loads((together / 'metrics.json').read_text())
  assert summary['prompts'] == list(prompts)
  for prompt, folder in zip(prompts[:1], folders):  # One alone run: each costs a compile.
    alone = tmp_path / prompt.replace(' ', '_')
    run_ok(main_command(alone, tiny_model, prompt=prompt, num_steps=4, checkpoint_every=2),
           jax_cache, 1)
    a, step_a = restore_params(alone)
    b, step_b = restore_params(folder)
    assert step_a == step_b == 4
    assert_same_training(a, b)
    assert json.loads((folder / 'config.json').read_text())['prompt'] == prompt
    assert (folder / 'turntable.mp4').is_file() and (folder / 'mesh.ply').is_file()
  # Different prompts give different NeRFs (the prompt axis is not mixed up).
  b0, _ = restore_params(folders[0])
  b1, _ = restore_params(folders[1])
  x0 = np.concatenate([np.ravel(v) for v in jax.tree.leaves(b0.params)])
  x1 = np.concatenate([np.ravel(v) for v in jax.tree.leaves(b1.params)])
  assert float(np.max(np.abs(x0 - x1))) > 1e-3


@pytest.mark.slow
def test_prompts_resume_together(tiny_model, jax_cache, tmp_path):
  prompts = ('a red cube', 'a blue sphere')
  workdir, straight = tmp_path / 'w', tmp_path / 'straight'
  common = dict(prompts=repr(prompts), checkpoint_every=2, **CONSTANT_LR)
  run_ok(main_command(straight, tiny_model, num_steps=4, **common), jax_cache, 2)
  run_ok(main_command(workdir, tiny_model, num_steps=2, **common), jax_cache, 2)
  log = run_ok(main_command(workdir, tiny_model, num_steps=4, **common), jax_cache, 2)
  assert 'resumed 2 prompts from checkpoint 2' in log
  for a_dir, b_dir in zip(many_prompts.prompt_dirs(straight, prompts), many_prompts.prompt_dirs(workdir, prompts)):
    a, _ = restore_params(a_dir)
    b, _ = restore_params(b_dir)
    assert_same_training(a, b)
