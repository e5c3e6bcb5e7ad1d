"""Dream Fields in the DreamFusion framework: CLIP guidance, transmittance, combined guidance,
starting from an earlier run's NeRF."""

import jax
import numpy as np
import pytest

from dreamfusion_jax import build
from dreamfusion_jax import clip
from dreamfusion_jax import config_checks
from dreamfusion_jax import guidance
from dreamfusion_jax import steps
from dreamfusion_jax import toy
from dreamfusion_jax import train
from dreamfusion_jax.testing import runs


@pytest.fixture(scope='module')
def toy_clip():
  return clip.Clip.from_pretrained(toy.CLIP_DIR)


def clip_setup(tiny_model, toy_clip, **overrides):
  step, state, diffusion, text = runs.step_setup(tiny_model, **{
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
  step, state, diffusion, text = runs.step_setup(tiny_model)
  _, plain = step(state, diffusion, text)
  step, state, diffusion, text = runs.step_setup(tiny_model, **{
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


@pytest.mark.slow  # Two short runs and two refused ones.
def test_start_from_an_earlier_runs_nerf(tiny_model, tmp_path, capsys):
  first = tmp_path / 'first'
  train.train_and_evaluate(runs.tiny_config(tiny_model, num_steps=2, checkpoint_every=2), first)
  trained, _ = runs.restore(first)
  config = build.read_config(first)
  config.init_from = str(first)
  run = build.build(config)
  start = build.initial_state(run, run.init_state())
  assert int(start.step) == 0
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(trained.params)):
    np.testing.assert_array_equal(a, b)
  capsys.readouterr()
  train.train_and_evaluate(runs.tiny_config(tiny_model, num_steps=2, checkpoint_every=2,
                                            init_from=str(first)), tmp_path / 'second')
  assert f'starting from the NeRF of checkpoint 2 of {first}' in capsys.readouterr().out
  with pytest.raises(config_checks.ConfigError) as error:
    train.train_and_evaluate(runs.tiny_config(tiny_model, init_from=str(first),
                                              **{'nerf.width': 32}), tmp_path / 'third')
  assert 'config.init_from' in str(error.value)
  assert 'nerf.width=16 there, 32 here' in str(error.value)
  with pytest.raises(config_checks.ConfigError, match='is not a run folder'):
    train.train_and_evaluate(runs.tiny_config(tiny_model, init_from=str(tmp_path / 'none')),
                             tmp_path / 'fourth')


def test_dreamfields_config_has_the_reference_values():
  """configs/dreamfields.py against google-research dreamfields' formulas."""
  from configs import dreamfields  # pylint: disable=g-import-not-at-top
  config = dreamfields.get_config()
  settings = build.make_sds_settings(config)
  focal = 1111.1111 / 800 * 1.2  # Blender focal for 800 px, times focal_mult.
  assert config.camera.focal_range == pytest.approx((focal, focal))
  assert np.degrees(2 * np.arctan(0.5 / focal)) == pytest.approx(33.4, abs=0.05)
  assert not config.clip.view_prompts and config.clip.background_after_crop
  assert config.clip.blur_radius == 7 and config.clip.min_scale == config.clip.max_scale == 80 / 88
  for step in (0, 100, 250, 500, 2000):  # lib.py: exp-anneal 0.5 -> 0.1 over 500, x 1.2, cap 1.
    opacity = 0.5 * (0.1 / 0.5)**min(step / 500, 1.0)
    expected = 1.0 - min(1.0, opacity * 1.2**2 / ((4.0 / 4.0)**2 * 1.2))
    assert float(steps.transmittance_target(step, settings)) == pytest.approx(expected, rel=1e-5)
  assert settings.clip_background_after_crop and settings.clip_blur_radius == 7
  assert settings.clip_min_scale == settings.clip_max_scale == 80 / 88
  # Its learning rate: schedules_test's exponential warm-up, 1e-5 -> 1e-4 over 1500 steps.
  assert config.optim.warmup_shape == 'exponential' and config.optim.warmup_multiplier == 0.1
  assert config.optim.lr_init == 1e-4 and config.optim.warmup_steps == 1500


def test_clip_sees_the_plain_caption_unless_view_prompts(toy_clip):
  config = runs.tiny_config('unused', **{'clip.view_prompts': False})
  _, clip_text = build.encode_prompt((None, toy_clip), config, 'a red cube')
  np.testing.assert_array_equal(clip_text, np.repeat(toy_clip.embed_text(['a red cube']), 4, 0))
  config.clip.view_prompts = True
  _, views = build.encode_prompt((None, toy_clip), config, 'a red cube')
  np.testing.assert_array_equal(views, toy_clip.embed_text(guidance.view_prompts('a red cube')))
