"""perpneg: the combination against its formula, the azimuth weights, one UNet call per step."""

import diffusers
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy as toy_config
from dreamfusion_jax import build
from dreamfusion_jax import config_checks
from dreamfusion_jax import guidance
from dreamfusion_jax import perpneg
from dreamfusion_jax.testing import runs


def test_combination_subtracts_only_the_perpendicular_part():
  rng = np.random.default_rng(0)
  eps_u, eps_pos = (rng.normal(size=(3, 4, 4, 2)).astype(np.float32) for _ in range(2))
  eps_neg = rng.normal(size=(2, 3, 4, 4, 2)).astype(np.float32)
  weights = np.array([[-1.0, -0.5], [0.0, -2.0], [-0.3, 0.0]], np.float32)
  scale = np.array([7.5, 100.0, 1.0], np.float32)
  out = np.asarray(perpneg.combine(eps_u, eps_pos, eps_neg, weights, scale))
  # The formula written out view by view in float64.
  for b in range(3):
    d_pos = (eps_pos[b] - eps_u[b]).astype(np.float64).ravel()
    guided = d_pos.copy()
    for i in range(2):
      d = (eps_neg[i, b] - eps_u[b]).astype(np.float64).ravel()
      perp = d - d @ d_pos / (d_pos @ d_pos) * d_pos
      assert abs(perp @ d_pos) < 1e-9 * np.linalg.norm(d) * np.linalg.norm(d_pos)
      guided += weights[b, i] * perp
    expected = eps_u[b].ravel() + scale[b] * guided
    np.testing.assert_allclose(out[b].ravel(), expected, rtol=1e-4, atol=1e-4)
    # What is added beyond classifier-free guidance is orthogonal to the positive direction.
    extra = (out[b].ravel() - eps_u[b].ravel()) / scale[b] - d_pos
    assert abs(extra @ d_pos) < 1e-3 * np.linalg.norm(extra) * np.linalg.norm(d_pos) + 1e-6


def test_a_negative_along_the_positive_changes_nothing():
  rng = np.random.default_rng(1)
  eps_u, eps_pos = (rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(2))
  eps_neg = (eps_u + 3.0 * (eps_pos - eps_u))[None]  # Parallel: nothing perpendicular.
  out = perpneg.combine(eps_u, eps_pos, eps_neg, np.full((2, 1), -2.0, np.float32), 10.0)
  np.testing.assert_allclose(out, eps_u + 10.0 * (eps_pos - eps_u), rtol=1e-4, atol=1e-4)


def test_azimuth_weights_at_front_side_and_back():
  front, side, back, overhead = np.eye(4, dtype=np.float32)
  positive, negatives, weights = map(np.asarray, perpneg.view_weights(
      jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 70.0]),
      jnp.array([0.0, 90.0, 180.0, 270.0, 45.0, 180.0])))
  # 0 degrees: the front prompt, pushed away from the side (f_fs(0) = 4 - 2.426).
  np.testing.assert_allclose(positive[0], front)
  np.testing.assert_array_equal(negatives[0], [perpneg.FRONT, perpneg.SIDE])
  np.testing.assert_allclose(weights[0], [-(4 * np.exp(-0.5) - 2.426), -1.574], atol=1e-5)
  # 90 (and 270 = -90) degrees: the side prompt, pushed away from the front (f_fsb(1)).
  for i in (1, 3):
    np.testing.assert_allclose(positive[i], side, atol=1e-6)
    np.testing.assert_array_equal(negatives[i], [perpneg.SIDE, perpneg.FRONT])
    np.testing.assert_allclose(weights[i], [-(np.exp(-0.5) - 0.606), -(np.exp(-0.5) + 0.967)],
                               atol=1e-5)
  # 180 degrees: the back prompt, away from the side (-0.394) and the front (-1.967).
  np.testing.assert_allclose(positive[2], back, atol=1e-6)
  np.testing.assert_allclose(weights[2], [-0.394, -1.967], atol=1e-5)
  # 45 degrees: halfway between front and side.
  np.testing.assert_allclose(positive[4], 0.5 * front + 0.5 * side, atol=1e-6)
  # Above 60 degrees of elevation: the overhead prompt and no negatives.
  np.testing.assert_allclose(positive[5], overhead)
  np.testing.assert_allclose(weights[5], [0.0, 0.0])


def test_zero_weights_give_classifier_free_guidance_of_the_mixed_prompt(tiny_model):
  diffusion = guidance.Diffusion.from_pretrained(str(tiny_model))
  text = diffusion.encode_views('a red cube')
  emb = perpneg.view_embeddings(text, jnp.array([10.0, 20.0]), jnp.array([30.0, 200.0]))
  images = jax.random.uniform(jax.random.key(0), (2, diffusion.resolution, diffusion.resolution,
                                                  3))
  t, noise = diffusion.sample_t_and_noise(jax.random.key(1), 2)
  sds = jax.jit(lambda d, e: d.sds_grad(images, e, t, noise, 7.5)[0])
  plain = sds(diffusion, guidance.TextEmbeddings(emb.cond, emb.uncond))
  zero = sds(diffusion, emb.replace(negative_weights=jnp.zeros((2, 2))))
  np.testing.assert_allclose(zero, plain, rtol=1e-4, atol=2e-5)  # Batch 8 against 4.
  perp = sds(diffusion, emb)
  assert float(jnp.max(jnp.abs(perp - plain))) > 1e-4  # The negatives do act.


def unet_batches(step, *args):
  """The batch size of every UNet call traced in one step."""
  batches = []

  def count(next_fun, args, kwargs, context):
    if isinstance(context.module, diffusers.FlaxUNet2DConditionModel) and (
        context.method_name == '__call__'):
      batches.append(args[0].shape[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(count):
    step.trace(*args)  # Traced, not compiled.
  return batches


def test_one_unet_call_per_step_with_all_prompts(tiny_model):
  step, state, diffusion, text = runs.step_setup(tiny_model)  # 2 views.
  assert unet_batches(step, state, diffusion, text) == [4]  # Uncond and cond.
  step, state, diffusion, text = runs.step_setup(tiny_model, perp_neg=True)
  assert unet_batches(step, state, diffusion, text) == [8]  # Uncond, cond, 2 negatives.
  # tests/toy_run_test.py trains the toy world with Perp-Neg through the entry point.


def test_perp_neg_needs_a_diffusion_model(tmp_path):
  config = toy_config.get_config()
  config.update_from_flattened_dict({'perp_neg': True, 'sds_weight': 0.0, 'clip.weight': 1.0,
                                     'clip.model': str(tmp_path)})
  with pytest.raises(build.ConfigError, match='perp_neg=True needs a diffusion model'):
    config_checks.validate_config(config, tmp_path / 'w')
