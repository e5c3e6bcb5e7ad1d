"""Text-to-3D in the toy world, measured against the truth: configs/toy.py, then the evaluator.

Each test runs the two commands a user runs (the main job and `dreamfusion_jax.eval`) in a
subprocess and checks eval.json: silhouette IoU with the true object, its colour and the toy
CLIP's R-precision.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from dreamfusion_jax import toy
from dreamfusion_jax.testing import runs

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_and_evaluate(workdir, prompt, *overrides, config='configs/toy.py'):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  job = [sys.executable, '-m', 'dreamfusion_jax.main', '--config', config,
         '--workdir', str(workdir), f'--config.prompt={prompt}', *overrides]
  done = subprocess.run(job, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert done.returncode == 0, done.stderr[-3000:]
  for name in ('turntable.mp4', 'mesh.glb', 'mesh.obj', 'mesh.mtl', 'texture.png', 'mesh.ply',
               'metrics.json'):
    assert (workdir / name).is_file(), name
  errors = runs.texture_error(workdir)  # The texture is the toy NeRF's albedo at each vertex.
  assert max(errors.values()) < 0.05, errors
  done = subprocess.run([sys.executable, '-m', 'dreamfusion_jax.eval', '--workdir', str(workdir)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads((workdir / 'eval.json').read_text())


@pytest.mark.slow  # 110 s measured: kept out of the default suite (about 22 minutes already).
def test_short_toy_run_on_a_training_prompt_with_perp_neg(tmp_path):
  """A reduced run with Perp-Neg (the held-out run below has DreamFusion's view prompts)."""
  prompt = 'a red sphere'
  assert prompt in toy.TRAIN_PROMPTS
  result = run_and_evaluate(tmp_path, prompt, '--config.num_steps=150', '--config.perp_neg=True',
                            '--config.export.video_frames=8', '--config.export.mesh_resolution=48')
  assert json.loads((tmp_path / 'config.json').read_text())['perp_neg'] is True
  assert result['iou'] >= 0.5, result
  assert result['color'] == 'red' and result['color_correct'], result


@pytest.mark.slow  # 395 s measured (2026-12-06, a slow day): the README's first command, held out.
def test_full_toy_run_on_a_heldout_prompt(tmp_path):
  prompt = 'a red cube'
  assert prompt in toy.HELDOUT
  # Seed 2: with guidance 20 throughout (the config before 2026-12-06) its cube was a
  # round-bottomed pot read as "a red cylinder" (IoU 0.77, R-precision 0.00), so these bars
  # catch that. Measured with guidance 20 -> 40 and the five-CLIP evaluator: IoU 0.85, red,
  # R-precision 1.00 (seeds 0, 1, 3: IoU 0.85, 0.84, 0.85; R-precision 0.875, 1.00, 1.00).
  result = run_and_evaluate(tmp_path, prompt, '--config.seed=2')
  assert result['iou'] >= 0.75, result
  assert result['color'] == 'red' and result['color_correct'], result
  assert result['r_precision'] >= 0.75, result


@pytest.mark.slow  # 113 s measured.
def test_short_toy_dreamfields_run_on_a_training_prompt(tmp_path):
  """Dream Fields with the toy CLIP: a reduced run, scored by the same evaluator."""
  prompt = 'a red sphere'
  # The opacity target's schedule shrunk with the run: 150 of 300 steps, as 500 of 1,000 in the
  # config (unshrunk, the exponential target is still near its start at step 300: IoU 0.54, red,
  # R-precision 0.00 measured).
  result = run_and_evaluate(tmp_path, prompt, '--config.num_steps=300',
                            '--config.loss.transmittance_steps=150',
                            '--config.export.video_frames=8', '--config.export.mesh_resolution=48',
                            config='configs/dreamfields_toy.py')
  # Measured (seed 0, 2026-12-07, the reference's Dream Fields values): IoU 0.70, red,
  # R-precision 0.75 (6 of 8 views) with eval's five-CLIP ensemble.
  assert result['color'] == 'red' and result['color_correct'], result
  assert result['r_precision'] >= 0.25, result
  assert result['iou'] >= 0.5, result
