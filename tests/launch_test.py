"""The cluster launchers: what they run on every worker, with stand-ins for gcloud, srun, python."""

import os
import pathlib
import stat
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]


def shims(folder, *names):
  """Executables on PATH that log CUDA_VISIBLE_DEVICES and their arguments (one per line, then ---)."""
  folder.mkdir()
  log = folder / 'calls.txt'
  for name in names:
    script = folder / name
    script.write_text(f'#!/usr/bin/env bash\n'
                      f'echo "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}" >> {log}\n'
                      f'printf "%s\\n" "$@" >> {log}\necho --- >> {log}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f'{folder}:{os.environ["PATH"]}')
  return env, log


def calls(log):
  """The logged calls, each a list of its arguments."""
  text = log.read_text().split('---\n')
  return [[a for a in chunk.splitlines() if not a.startswith('CUDA_VISIBLE_DEVICES=')]
          for chunk in text if chunk.strip()]


def test_tpu_pod_script_installs_and_starts_on_every_worker(tmp_path):
  env, log = shims(tmp_path / 'bin', 'gcloud')
  usage = subprocess.run(['bash', 'launch/tpu_pod.sh', 'pod'], cwd=REPO, env=env,
                         capture_output=True, text=True)
  assert usage.returncode == 2 and 'usage:' in usage.stderr
  result = subprocess.run(
      ['bash', 'launch/tpu_pod.sh', 'my-pod', 'us-central2-b', 'configs/dreamfusion.py',
       '/mnt/runs/a', '--config.prompt=a red cube, side view'], cwd=REPO,
      env=dict(env, PROJECT='my-project'), capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  scp, ssh = calls(log)
  assert scp[:4] == ['compute', 'tpus', 'tpu-vm', 'scp'] and '--worker=all' in scp
  assert ssh[:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'my-pod'] and '--worker=all' in ssh
  for args in (scp, ssh):
    assert args[args.index('--zone') + 1] == 'us-central2-b'
    assert args[args.index('--project') + 1] == 'my-project'
  command = ssh[ssh.index('--command') + 1:]
  command = '\n'.join(command)
  assert "pip install -q -e . 'jax[tpu]'" in command
  assert ('python3 -m dreamfusion_jax.main --multihost --config configs/dreamfusion.py '
          '--workdir /mnt/runs/a --config.prompt=a\\ red\\ cube\\,\\ side\\ view') in command


def test_slurm_script_runs_one_multihost_process_per_task(tmp_path):
  env, log = shims(tmp_path / 'bin', 'srun')
  text = (REPO / 'launch' / 'slurm.sbatch').read_text()
  assert '#SBATCH --ntasks-per-node=1' in text
  assert '--account' not in text.split('set -euo')[1]  # Accounts come from sbatch's flags.
  result = subprocess.run(['bash', 'launch/slurm.sbatch', 'configs/toy.py', '/shared/w',
                           '--config.prompts_file=/shared/p.txt'], cwd=REPO, env=env,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert calls(log) == [['python', '-m', 'dreamfusion_jax.main', '--multihost', '--config',
                         'configs/toy.py', '--workdir', '/shared/w',
                         '--config.prompts_file=/shared/p.txt']]


def test_multi_gpu_script_picks_the_gpus(tmp_path):
  env, log = shims(tmp_path / 'bin', 'python')
  bad = subprocess.run(['bash', 'launch/multi_gpu.sh', 'four', 'configs/toy.py', '/tmp/w'],
                       cwd=REPO, env=env, capture_output=True, text=True)
  assert bad.returncode == 2 and 'NUM_GPUS must be a positive integer' in bad.stderr
  result = subprocess.run(['bash', 'launch/multi_gpu.sh', '4', 'configs/dreamfusion.py',
                           '/tmp/w', '--config.batch_size=8'], cwd=REPO, env=env,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert calls(log) == [['-m', 'dreamfusion_jax.main', '--config', 'configs/dreamfusion.py',
                         '--workdir', '/tmp/w', '--config.num_devices=4',
                         '--config.batch_size=8']]
  assert 'CUDA_VISIBLE_DEVICES=0,1,2,3' in log.read_text()
