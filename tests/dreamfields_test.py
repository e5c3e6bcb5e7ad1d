"""Dream Fields in the DreamFusion framework: CLIP guidance, transmittance, combined guidance,
starting from an earlier run's NeRF."""

import json
import sys

import jax
import numpy as np
import pytest

from dreamfusion_jax import clip
from dreamfusion_jax import guidance
from dreamfusion_jax import toy
from dreamfusion_jax import train

# The tiny saved diffusion model and the compilation cache are train_test's module fixtures.
from train_test import (error_line, jax_cache, main_command, make_step_setup, restore_params,  # pylint: disable=unused-import
                        run, tiny_model)


@pytest.fixture(scope='module')
def toy_clip():
  return clip.Clip.from_pretrained(toy.CLIP_DIR)


def clip_setup(tiny_model, toy_clip, **overrides):
  step, state, diffusion, text = make_step_setup(tiny_model, **{
      'clip.model': str(toy.CLIP_DIR), 'clip.augmentations': 2, **overrides})
  clip_text = toy_clip.embed_text(guidance.view_prompts('a red cube'))
  return step, state, diffusion, text, clip_text


def changed_leaves(a, b):
  return [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


def test_clip_guidance_alone_trains_the_nerf(tiny_model, toy_clip):
  step, state, _, _, clip_text = clip_setup(tiny_model, toy_clip, **{
      'sds_weight': 0.0, 'clip.weight': 1.0, 'loss.orientation_weight': 0.0,
      'loss.orientation_weight_end': 0.0, 'loss.opacity_weight': 0.0})
  new, metrics = step(state, None, None, toy_clip, clip_text)
  assert 'sds' not in metrics and -1.0 <= float(metrics['clip']) <= 1.0
  assert float(metrics['loss']) == pytest.approx(float(metrics['clip']), abs=1e-6)
  assert float(metrics['skipped']) == 0.0
  assert all(changed_leaves(new.params['nerf'], state.params['nerf']))


@pytest.mark.slow  # Two step compiles with the toy CLIP: about a minute.
def test_clip_and_sds_combine_with_their_weights(tiny_model, toy_clip):
  step, state, diffusion, text, clip_text = clip_setup(tiny_model, toy_clip)
  _, plain = step(state, diffusion, text, toy_clip, clip_text)
  step, state, diffusion, text, clip_text = clip_setup(tiny_model, toy_clip,
                                                       **{'clip.weight': 0.5})
  _, both = step(state, diffusion, text, toy_clip, clip_text)
  assert 'clip' not in plain
  assert float(both['sds']) == pytest.approx(float(plain['sds']), rel=1e-5)  # Same SDS draw.
  assert float(both['loss']) == pytest.approx(float(plain['loss']) + 0.5 * float(both['clip']),
                                              rel=1e-4, abs=1e-4)


@pytest.mark.slow  # Two step compiles (losses_test checks the formula alone).
def test_transmittance_loss_and_its_target_schedule(tiny_model):
  step, state, diffusion, text = make_step_setup(tiny_model)
  _, plain = step(state, diffusion, text)
  step, state, diffusion, text = make_step_setup(tiny_model, **{
      'loss.transmittance_weight': 2.0, 'loss.transmittance_start': 0.5,
      'loss.transmittance_end': 0.9, 'loss.transmittance_steps': 100})
  _, first = step(state, diffusion, text)
  _, later = step(state.replace(step=50), diffusion, text)
  assert float(first['transmittance_target']) == pytest.approx(0.5)
  assert float(later['transmittance_target']) == pytest.approx(0.7)
  expected = -min(0.5, 1.0 - float(first['acc']))
  assert float(first['transmittance']) == pytest.approx(expected, abs=1e-5)
  assert float(first['loss']) == pytest.approx(float(plain['loss']) + 2.0 * expected, rel=1e-4,
                                               abs=1e-4)


@pytest.mark.slow  # Two short runs and two refused ones through the entry point.
def test_start_from_an_earlier_runs_nerf(tiny_model, jax_cache, tmp_path):
  first = tmp_path / 'first'
  result = run(main_command(first, tiny_model, num_steps=2, checkpoint_every=2), jax_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  trained, _ = restore_params(first)
  config = json.loads((first / 'config.json').read_text())
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config)
  config.init_from = str(first)
  net, bg = train.make_nerf(config), train.make_background(config)
  optimizer = train.make_optimizer(config)
  start = train.initial_state(config, train.init_dreamfusion_state(config, net, bg, optimizer),
                              optimizer)
  assert int(start.step) == 0
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(trained.params)):
    np.testing.assert_array_equal(a, b)
  second = tmp_path / 'second'
  result = run(main_command(second, tiny_model, num_steps=2, checkpoint_every=2,
                            init_from=str(first)), jax_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'starting from the NeRF of checkpoint 2 of {first}' in result.stdout
  other = run(main_command(tmp_path / 'third', tiny_model, init_from=str(first),
                           **{'nerf.width': 32}), jax_cache)
  line = error_line(other)
  assert 'config.init_from' in line and 'nerf.width=16 there, 32 here' in line
  missing = run(main_command(tmp_path / 'fourth', tiny_model, init_from=str(tmp_path / 'none')),
                jax_cache)
  assert 'is not a run folder' in error_line(missing)


def test_dreamfields_needs_a_clip(tiny_model, jax_cache, tmp_path):
  cmd = [sys.executable, '-m', 'dreamfusion_jax.main', '--config', 'configs/dreamfields_toy.py',
         '--workdir', str(tmp_path / 'w'), '--config.clip.model=']
  assert 'config.clip.model is empty' in error_line(run(cmd, jax_cache))
  cmd[-1] = '--config.clip.weight=0'
  assert 'nothing guides the NeRF' in error_line(run(cmd, jax_cache))
