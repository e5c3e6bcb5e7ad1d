"""Dream Fields' augmentations, its transmittance loss and the CLIP guidance loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import augment
from dreamfusion_jax import clip
from dreamfusion_jax import guidance
from dreamfusion_jax import losses
from dreamfusion_jax import toy
from dreamfusion_jax.toy import world


def test_checkerboard_is_eight_by_eight_of_two_colours():
  board = np.asarray(augment.checkerboard(jax.random.key(0), 32, 48))
  assert board.shape == (32, 48, 3)
  colours = np.unique(board.reshape(-1, 3), axis=0)
  assert len(colours) == 2
  # Square (i, j) spans 4 rows and 6 columns; neighbours differ, diagonals agree.
  assert np.all(board[0, 0] == board[3, 5]) and np.all(board[0, 0] == board[4, 6])
  assert not np.all(board[0, 0] == board[0, 6]) and not np.all(board[0, 0] == board[4, 0])


def test_backgrounds_are_images_in_range_and_fourier_noise_is_smooth():
  key = jax.random.key(1)
  noise = np.asarray(augment.uniform_noise(key, 32, 32))
  smooth = np.asarray(augment.fourier_noise(key, 32, 32))
  for image in (noise, smooth):
    assert image.shape == (32, 32, 3)
    assert image.min() >= 0.0 and image.max() <= 1.0
  np.testing.assert_allclose(smooth.min(axis=(0, 1)), 0.0, atol=1e-6)
  np.testing.assert_allclose(smooth.max(axis=(0, 1)), 1.0, atol=1e-6)
  roughness = lambda x: np.mean(np.abs(np.diff(x, axis=0)))
  assert roughness(smooth) < 0.3 * roughness(noise)
  for i in range(6):
    bg = np.asarray(augment.random_background(jax.random.key(i), 24, 24))
    assert bg.shape == (24, 24, 3) and bg.min() >= -1e-6 and bg.max() <= 1 + 1e-6


def test_blur_keeps_constants_and_mean_and_zero_sigma_is_identity():
  image = jax.random.uniform(jax.random.key(2), (20, 20, 3))
  np.testing.assert_allclose(augment.gaussian_blur(image, 0.0, 5), image, atol=1e-6)
  flat = jnp.full((20, 20, 3), 0.3)
  np.testing.assert_allclose(augment.gaussian_blur(flat, 4.0, 5), flat, atol=1e-6)
  blurred = augment.gaussian_blur(image, 3.0, 6)
  assert float(jnp.std(blurred)) < 0.5 * float(jnp.std(image))
  np.testing.assert_allclose(float(jnp.mean(blurred)), float(jnp.mean(image)), atol=0.02)


def test_composite_through_opacity():
  rgb = jnp.full((4, 4, 3), 0.5)
  bg = jnp.full((4, 4, 3), 0.2)
  np.testing.assert_allclose(augment.composite(rgb, jnp.ones((4, 4)), bg), rgb)
  np.testing.assert_allclose(augment.composite(jnp.zeros((4, 4, 3)), jnp.zeros((4, 4)), bg), bg)


def test_full_crop_is_the_image_and_crops_zoom_in():
  image = jax.random.uniform(jax.random.key(3), (16, 16, 3))
  same = augment.random_crop(jax.random.key(0), image, 16, min_scale=1.0)
  np.testing.assert_allclose(same, image, atol=1e-5)
  # A crop of a half-black, half-white image shows both halves in shares near the crop's.
  halves = jnp.concatenate([jnp.zeros((16, 8, 3)), jnp.ones((16, 8, 3))], axis=1)
  crop = np.asarray(augment.random_crop(jax.random.key(4), halves, 32, min_scale=0.5))
  assert crop.shape == (32, 32, 3)
  assert 0.0 < crop.mean() < 1.0


def test_augment_shapes_ranges_and_gradients():
  b, h = 2, 16
  rgb = jax.random.uniform(jax.random.key(5), (b, h, h, 3)) * 0.5
  acc = jnp.full((b, h, h), 0.5)
  out = augment.augment(jax.random.key(6), rgb, acc, num=3, size=24)
  assert out.shape == (b * 3, 24, 24, 3)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  # Each copy has its own background: copies of one render differ.
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-2
  grad_rgb, grad_acc = jax.grad(
      lambda r, a: jnp.sum(augment.augment(jax.random.key(6), r, a, num=3, size=24)),
      argnums=(0, 1))(rgb, acc)
  assert float(jnp.sum(jnp.abs(grad_rgb))) > 0 and float(jnp.sum(jnp.abs(grad_acc))) > 0
  jitted = jax.jit(lambda k, r, a: augment.augment(k, r, a, num=3, size=24))
  np.testing.assert_allclose(jitted(jax.random.key(6), rgb, acc), out, atol=1e-5)


def test_transmittance_loss_formula():
  acc = jnp.asarray([0.0, 0.2, 0.6, 1.0])  # Mean transmittance 0.55.
  np.testing.assert_allclose(losses.transmittance(acc, 0.9), -0.55, atol=1e-6)
  np.testing.assert_allclose(losses.transmittance(acc, 0.5), -0.5, atol=1e-6)
  grad = jax.grad(losses.transmittance)(acc, 0.9)
  np.testing.assert_allclose(grad, 0.25, atol=1e-6)  # d/d acc of -mean(1 - acc).
  np.testing.assert_allclose(jax.grad(losses.transmittance)(acc, 0.5), 0.0)  # Target reached.


@pytest.fixture(scope='module')
def toy_clip():
  return clip.Clip.from_pretrained(toy.CLIP_DIR)


def test_clip_loss_prefers_the_right_caption_and_gives_a_gradient(toy_clip):
  images, *_ = world.render_dataset(jax.random.key(7), ["a red cube"], 4, 32)
  images = jnp.asarray(images)
  right = toy_clip.embed_text(['a red cube'])[0]
  wrong = toy_clip.embed_text(['a green torus'])[0]
  loss = lambda x, t: guidance.clip_loss(toy_clip, x, t)
  assert float(loss(images, right)) < float(loss(images, wrong))
  assert -1.0 <= float(loss(images, right)) <= 1.0
  grad = jax.grad(loss)(images, right)
  assert grad.shape == images.shape and float(jnp.sum(jnp.abs(grad))) > 0


def test_background_after_the_crop_is_made_at_clip_size():
  """Dream Fields' augment.py: crop render and opacity, resize, then composite at CLIP's size."""
  b, h, size = 1, 16, 24
  rgb = jax.random.uniform(jax.random.key(7), (b, h, h, 3)) * 0.5
  acc = jax.random.uniform(jax.random.key(8), (b, h, h))
  key = jax.random.key(9)
  out = augment.augment(key, rgb, acc, num=2, size=size, min_scale=0.75, max_scale=0.75,
                        background_after_crop=True, blur_radius=7)
  keys = jax.random.split(key, (b, 2, 2))
  layers = jnp.concatenate([rgb, acc[..., None]], axis=-1)[0]
  for i in range(2):
    crop = augment.random_crop(keys[0, i, 1], layers, size, 0.75, 0.75)
    background = augment.random_background(keys[0, i, 0], size, size, 10.0, radius=7)
    expected = jnp.clip(crop[..., :3] + (1.0 - crop[..., 3:]) * background, 0.0, 1.0)
    np.testing.assert_allclose(out[i], expected, atol=1e-5)
  # A fixed crop scale: both copies crop 12 of the 16 pixels, at their own places.
  assert not np.allclose(out[0], out[1])
