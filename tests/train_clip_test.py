"""Tests of the toy CLIP's training: augmentations against closed forms, recolouring, a run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import camera
from dreamfusion_jax import clip
from dreamfusion_jax.toy import train_clip
from dreamfusion_jax.toy import world


def lit_sphere(color='red', size=32, distance=1.3, focal=30.0):
  """A Lambertian sphere seen head-on, with its coverage: rgb [H, W, 3], alpha [H, W]."""
  eye = np.array([0.0, -distance, 0.0])
  c2w = np.asarray(camera.look_at(eye, np.zeros(3)))
  return world.render_view(color, 'sphere', c2w, focal, size, light=eye + [0.3, 0.0, 0.5])


def test_reshade_gives_back_the_render_and_changes_only_the_shading():
  rgb, alpha = lit_sphere()
  albedo = np.asarray(world.COLORS['red'], np.float32)
  coverage = train_clip.shading_coverage(rgb[None, None], alpha[None, None], ['a red sphere'])[0]
  same = train_clip.reshade(albedo[None], coverage, alpha[None], jnp.ones(1))[0]
  np.testing.assert_allclose(same, rgb, atol=1e-5)
  flat = np.asarray(train_clip.reshade(albedo[None], coverage, alpha[None], jnp.full(1, 0.5))[0])
  deep = np.asarray(train_clip.reshade(albedo[None], coverage, alpha[None], jnp.full(1, 2.0))[0])
  inside = alpha == 1.0
  shaded = inside & (rgb[..., 0] < albedo[0] - 0.05)  # Pixels the light does not face fully.
  assert shaded.sum() > 20
  assert np.all(flat[shaded, 0] > rgb[shaded, 0]) and np.all(deep[shaded, 0] < rgb[shaded, 0])
  # Shading (S / alpha)^gamma: a pixel at half the albedo goes to sqrt(1/2) of it with gamma 1/2.
  ratio = rgb[shaded, 0] / albedo[0]
  np.testing.assert_allclose(flat[shaded, 0], albedo[0] * np.sqrt(ratio), atol=1e-5)
  background = alpha == 0.0
  for image in (flat, deep):
    np.testing.assert_allclose(image[background], 1.0)


def test_zoom_magnifies_the_silhouette_area_and_shift_moves_it():
  rgb, alpha = lit_sphere()
  images = jnp.asarray(np.stack([rgb, rgb, rgb]))
  scale = jnp.asarray([1.0, 1.25, 0.8])
  out = np.asarray(train_clip.zoom_and_shift(images, scale, jnp.zeros((3, 2))))
  np.testing.assert_allclose(out[0], rgb, atol=1e-5)
  # Coverage read off the red channel's complement: 1 - G over white is coverage * (1 - albedo G).
  covered = lambda image: np.sum(1.0 - image[..., 1]) / (1.0 - world.COLORS['red'][1])
  base = covered(rgb)
  assert covered(out[1]) / base == pytest.approx(1.25**2, rel=0.03)
  assert covered(out[2]) / base == pytest.approx(0.8**2, rel=0.03)
  np.testing.assert_allclose(out[2][0], 1.0, atol=1e-6)  # White comes in from outside.
  moved = np.asarray(train_clip.zoom_and_shift(images[:1], jnp.ones(1),
                                               jnp.asarray([[0.0, 3.0]])))[0]
  np.testing.assert_allclose(moved[:, 3:], rgb[:, :-3], atol=1e-5)


def test_blur_keeps_flat_images_and_the_mean_and_softens_edges():
  rgb, _ = lit_sphere()
  images = jnp.asarray(np.stack([rgb, rgb, np.full_like(rgb, 0.4)]))
  out = np.asarray(train_clip.gaussian_blur(images, jnp.asarray([0.0, 1.0, 1.0])))
  np.testing.assert_allclose(out[0], rgb, atol=1e-6)
  np.testing.assert_allclose(out[2], 0.4, atol=1e-6)
  # The sphere is away from the border, so blurring keeps the image's mean.
  assert out[1].mean() == pytest.approx(rgb.mean(), abs=1e-4)
  edges = lambda image: np.abs(np.diff(image, axis=1)).max()
  assert edges(out[1]) < 0.7 * edges(rgb)


def test_augment_with_zero_maxima_only_flips_and_stays_in_range():
  rgb, _ = lit_sphere(distance=1.1)
  rgb = np.roll(rgb, 5, axis=1)  # Off-centre, so that a mirrored copy differs.
  images = jnp.asarray(np.broadcast_to(rgb, (2, 8, *rgb.shape)))
  out = np.asarray(train_clip.augment(jax.random.key(0), images, 0.0, 0.0, 0.0, 0.0))
  mirrored = [np.allclose(o, rgb[:, ::-1]) for o in out.reshape(-1, *rgb.shape)]
  kept = [np.allclose(o, rgb) for o in out.reshape(-1, *rgb.shape)]
  assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
  noisy = np.asarray(train_clip.augment(jax.random.key(1), images, 0.2, 2.0, 1.0, 0.05))
  assert noisy.shape == images.shape and noisy.min() >= 0.0 and noisy.max() <= 1.0
  assert not np.allclose(noisy, images, atol=0.01)


def test_recoloured_shapes_keep_away_from_their_heldout_hues():
  prompts = world.TRAIN_PROMPTS
  arcs = train_clip.recolor_arcs(prompts)
  albedo = np.asarray(train_clip.recolor(jax.random.key(0), jnp.asarray(arcs), (256, len(prompts))))
  assert albedo.shape == (256, len(prompts), 3) and albedo.min() >= 0.0 and albedo.max() <= 1.0
  for p, text in enumerate(prompts):
    shape = world.parse_prompt(text)[1]
    held = [world.parse_prompt(h)[0] for h in world.HELDOUT if world.parse_prompt(h)[1] == shape]
    seen = [train_clip.hue_deg(world.COLORS[c]) for c in world.COLORS
            if world.prompt(c, shape) in prompts]
    for color in held:
      target = train_clip.hue_deg(world.COLORS[color])
      gap = lambda h: min(abs(h - target), 360.0 - abs(h - target))
      nearest_seen = min(gap(h) for h in seen)
      saturated = albedo[:, p].max(-1) - albedo[:, p].min(-1) > 0.05
      hues = [train_clip.hue_deg(rgb) for rgb in albedo[saturated, p]]
      assert hues and min(gap(h) for h in hues) >= nearest_seen - 1e-3, (text, color)
      # Both sides of the held-out hue come within 10 degrees of the excluded arc's edge.
      signed = [(h - target + 180.0) % 360.0 - 180.0 for h in hues]
      assert min(d for d in signed if d > 0) < nearest_seen + 10.0, (text, color)
      assert max(d for d in signed if d < 0) > -nearest_seen - 10.0, (text, color)


def test_saturate_pushes_channels_to_their_extremes_and_keeps_the_nearest_colour():
  colors = jnp.asarray(list(world.COLORS.values()), jnp.float32)  # [6, 3]
  np.testing.assert_allclose(train_clip.saturate(colors, jnp.ones(6)), colors, atol=1e-7)
  # SDS's saturated blue cone and yellow sphere are the toy colours stretched by 2.5.
  stretched = np.asarray(train_clip.saturate(colors, jnp.full(6, 2.5)))
  np.testing.assert_allclose(stretched[list(world.COLORS).index('blue')], [0, 0, 1], atol=1e-6)
  np.testing.assert_allclose(stretched[list(world.COLORS).index('yellow')], [1, 1, 0], atol=1e-6)
  assert np.all((stretched >= 0) & (stretched <= 1))
  # Contrast grows (farther from mid-grey) and every colour keeps its name.
  assert np.all(np.abs(stretched - 0.5) >= np.abs(np.asarray(colors) - 0.5) - 1e-7)
  for name, rgb in zip(world.COLORS, stretched):
    nearest = min(world.COLORS, key=lambda c: train_clip.hue_gap_deg(
        train_clip.hue_deg(world.COLORS[c]), train_clip.hue_deg(rgb)))
    assert nearest == name


def test_compose_loss_is_zero_exactly_when_prompts_are_their_attributes_sum():
  prompts = ['a red cube', 'a blue cone']
  membership = jnp.asarray(train_clip.attribute_membership(prompts))  # [2, 11]
  attributes = clip.l2_normalize(jax.random.normal(jax.random.key(0), (11, 8)))
  composed = clip.l2_normalize(membership @ attributes)
  assert float(train_clip.compose_loss(composed, attributes, membership)) == pytest.approx(
      0.0, abs=1e-6)
  swapped = composed[::-1]  # Each prompt given the other's text.
  assert float(train_clip.compose_loss(swapped, attributes, membership)) > 0.1
  # Opposite of the target: the largest loss, 2.
  assert float(train_clip.compose_loss(-composed, attributes, membership)) == pytest.approx(2.0)


@pytest.mark.parametrize('flag', ['--target_jitter=-0.1', '--compose_weight=-1', '--saturation=0.5'])
def test_impossible_option_values_are_refused_before_rendering(flag, tmp_path, capsys):
  with pytest.raises(SystemExit):
    train_clip.main(['--out', str(tmp_path / 'clip'), flag])
  assert '--saturation' in capsys.readouterr().err
  assert not (tmp_path / 'clip').exists()


def test_short_training_writes_a_loadable_clip(tmp_path):
  augmentation = train_clip.Augmentation(zoom=0.1, shift_px=1.0, blur_px=0.8, noise=0.02,
                                         gamma=1.5, saturation=2.0)
  info = train_clip.train(tmp_path / 'clip', steps=4, groups=1, views_per_prompt=2,
                          eval_views=2, resolution=16, patch_size=8, lr=1e-3, weight_decay=0.05,
                          attribute_weight=0.5, recolor_weight=4.0, recolor_groups=1,
                          ema_decay=0.9, seed=0, eval_every=4, augmentation=augmentation,
                          target_jitter=0.05, compose_weight=1.0)
  assert info['steps'] == 4 and np.isfinite(info['final_loss'])
  assert set(info['heldout_per_prompt']) == set(world.HELDOUT)
  saved = json.loads((tmp_path / 'clip' / 'training.json').read_text())
  assert saved['args']['augmentation'] == {'zoom': 0.1, 'shift_px': 1.0, 'blur_px': 0.8,
                                           'noise': 0.02, 'gamma': 1.5, 'saturation': 2.0}
  assert saved['args']['target_jitter'] == 0.05 and saved['args']['compose_weight'] == 1.0
  model = clip.Clip.from_pretrained(tmp_path / 'clip')
  assert model.image_size == 16
  assert model.embed_text(list(world.PROMPTS)).shape[0] == len(world.PROMPTS)
