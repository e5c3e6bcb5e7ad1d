"""Tests of the shipped toy prior, the DDIM sampler and the prior's training script."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import guidance
from dreamfusion_jax import sampling
from dreamfusion_jax import toy
from dreamfusion_jax.toy import sample_prior
from dreamfusion_jax.toy import train_prior
from dreamfusion_jax.toy import world


@pytest.fixture(scope='module')
def prior():
  return guidance.Diffusion.from_pretrained(str(toy.PRIOR_DIR))


def test_shipped_prior_loads_like_a_hub_model_and_is_small(prior):
  assert not prior.is_latent and prior.resolution == 32
  size = sum(f.stat().st_size for f in toy.PRIOR_DIR.rglob('*') if f.is_file())
  assert size < 25e6
  info = json.loads((toy.PRIOR_DIR / 'training.json').read_text())
  assert not set(info['train_prompts']) & set(toy.HELDOUT)


def test_color_classifier_ignores_shading():
  for name, rgb in world.COLORS.items():
    assert sample_prior.classify_color(0.4 * np.asarray(rgb)) == name
  assert sample_prior.classify_color(np.full(3, np.nan)) is None
  image = np.ones((8, 8, 3), np.float32)
  image[2:5, 2:5] = world.COLORS['purple']
  np.testing.assert_allclose(sample_prior.object_color(image), world.COLORS['purple'], atol=1e-6)


def test_ddim_schedule_and_latent_models_are_refused(tmp_path):
  steps = sampling.ddim_timesteps(1000, 10)
  assert steps[0] == 999 and steps[-1] == 0 and np.all(np.diff(steps) < 0)
  fake = guidance.Diffusion(unet_params={}, vae_params={}, alphas_cumprod=jnp.ones(10),
                            unet=None, vae=object(), text=None)
  emb = guidance.TextEmbeddings(cond=jnp.zeros((1, 2, 4)), uncond=jnp.zeros((1, 2, 4)))
  with pytest.raises(ValueError, match='pixel-space'):
    sampling.ddim_sample(fake, emb, jax.random.key(0))


def test_train_prior_writes_a_loadable_model(tmp_path):
  info = train_prior.train(tmp_path / 'prior', steps=2, batch_size=2, views_per_prompt=1,
                           resolution=16, lr=1e-3, seed=0, save_every=2)
  assert info['steps'] == 2 and np.isfinite(info['final_loss'])
  model = guidance.Diffusion.from_pretrained(str(tmp_path / 'prior'))
  assert model.resolution == 16 and not model.is_latent and model.prediction_type == 'v_prediction'
  emb = model.encode_views('a red cube')
  assert emb.cond.shape[0] == 4 and not np.allclose(emb.cond[0], emb.cond[1])


@pytest.mark.slow  # Builds and restores the prior twice: about a minute.
def test_build_models_starts_from_a_saved_prior(tmp_path, monkeypatch):
  unet, text, _, saved = train_prior.build_models(tmp_path / 'first', 16, seed=0)
  train_prior.save(tmp_path / 'first', unet, text, saved, {'steps': 2})
  _, _, _, loaded = train_prior.build_models(tmp_path / 'second', 16, seed=1,
                                             init=tmp_path / 'first')
  _, _, _, fresh = train_prior.build_models(tmp_path / 'third', 16, seed=1)
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(saved), jax.tree.leaves(fresh)))
  with pytest.raises(FileNotFoundError, match='--init'):
    train_prior.build_models(tmp_path / 'fourth', 16, seed=0, init=tmp_path / 'none')
  wider = train_prior.unet_config
  monkeypatch.setattr(train_prior, 'unet_config',
                      lambda r: {**wider(r), 'block_out_channels': (32, 64, 96)})
  with pytest.raises(ValueError, match='differs'):
    train_prior.build_models(tmp_path / 'fifth', 16, seed=0, init=tmp_path / 'first')


@pytest.mark.slow  # 161 s measured (two compiles of the training step).
def test_train_prior_continues_from_a_saved_prior(tmp_path):
  unet, text, _, params = train_prior.build_models(tmp_path / 'first', 16, seed=0)
  train_prior.save(tmp_path / 'first', unet, text, params, {'steps': 2})
  info = train_prior.train(tmp_path / 'second', steps=2, batch_size=2, views_per_prompt=1,
                           resolution=16, lr=0.0, seed=1, save_every=2, init=tmp_path / 'first')
  assert info['init']['steps'] == 2
  first = guidance.Diffusion.from_pretrained(str(tmp_path / 'first'))
  second = guidance.Diffusion.from_pretrained(str(tmp_path / 'second'))
  # lr 0: the continued model keeps the saved weights (not seed 1's fresh ones).
  for a, b in zip(jax.tree.leaves(first.unet_params), jax.tree.leaves(second.unet_params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_clip_r_precision_of_samples_needs_the_right_shape():
  from dreamfusion_jax import clip  # pylint: disable=g-import-not-at-top
  clip_model = clip.Clip.from_pretrained(str(toy.CLIP_DIR))
  prompts = list(world.PROMPTS)
  images = world.render_dataset(jax.random.key(3), prompts, 4, 32, lit_fraction=1.0)[0]
  truth = images.reshape(len(prompts), 4, 32, 32, 3)
  r, per_prompt = sample_prior.clip_r_precision(clip_model, truth, prompts)
  assert r >= 0.9 and set(per_prompt) == set(prompts)
  # Every shape swapped for the next one (same colour): nearly never retrieved.
  swapped = np.roll(truth.reshape(len(world.SHAPES), len(world.COLORS), 4, 32, 32, 3), 1, axis=0)
  r_swapped, _ = sample_prior.clip_r_precision(clip_model, swapped.reshape(truth.shape), prompts)
  assert r_swapped <= 0.1
