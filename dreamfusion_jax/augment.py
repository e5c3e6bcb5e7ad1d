"""Dream Fields' image augmentations: random backgrounds behind the render, random crops.

A CLIP-guided NeRF left on a fixed background learns to paint the caption onto the background
or into fog; Dream Fields (Jain et al., 2022, Sec. 4) composites every render over a random
background through its accumulated opacity (uniform noise, an 8 x 8 checkerboard of two random
colours, or smooth Fourier noise, each a third of the time, then Gaussian-blurred with a random
sigma) and shows CLIP random crops of it, resized to CLIP's input size. Every function here is
pure, jittable and differentiable with respect to the images.

Letters: B images, H, W their size, A augmented copies, S the output size.
"""

import jax
import jax.numpy as jnp

KINDS = ('noise', 'checkerboard', 'fourier')


def uniform_noise(key, height, width):
  """Per-pixel uniform RGB noise, float32 [H, W, 3] in [0, 1]."""
  return jax.random.uniform(key, (height, width, 3))


def checkerboard(key, height, width, squares=8):
  """A squares x squares checkerboard of two random colours, float32 [H, W, 3] in [0, 1]."""
  colors = jax.random.uniform(key, (2, 3))
  rows = (jnp.arange(height) * squares) // height
  cols = (jnp.arange(width) * squares) // width
  parity = (rows[:, None] + cols[None, :]) % 2
  return colors[parity]


def fourier_noise(key, height, width, decay=2.0):
  """Smooth random colour noise: a random spectrum with amplitude ~ 1 / f^decay, float32 [H, W, 3].

  Rescaled per channel to span [0, 1].
  """
  key_re, key_im = jax.random.split(key)
  fy = jnp.fft.fftfreq(height)[:, None]
  fx = jnp.fft.rfftfreq(width)[None, :]
  freq = jnp.sqrt(fx**2 + fy**2)
  amplitude = 1.0 / jnp.maximum(freq, 1.0 / max(height, width))**decay
  shape = (3, height, width // 2 + 1)
  spectrum = (jax.random.normal(key_re, shape) + 1j * jax.random.normal(key_im, shape))
  image = jnp.fft.irfft2(spectrum * amplitude, s=(height, width)).transpose(1, 2, 0)
  low = jnp.min(image, axis=(0, 1))
  high = jnp.max(image, axis=(0, 1))
  return (image - low) / jnp.maximum(high - low, 1e-6)


def gaussian_blur(image, sigma, radius):
  """Separable Gaussian blur of float [H, W, C] with a traced sigma (pixels) and a fixed radius.

  Edges are reflected. sigma near 0 leaves the image unchanged.
  """
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-0.5 * (offsets / jnp.maximum(sigma, 1e-3))**2)
  kernel = kernel / jnp.sum(kernel)
  padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode='reflect')
  h, w = image.shape[:2]
  rows = sum(kernel[i] * padded[i:i + h] for i in range(2 * radius + 1))
  return sum(kernel[i] * rows[:, i:i + w] for i in range(2 * radius + 1))


def random_background(key, height, width, max_blur_sigma=10.0, radius=None):
  """One of KINDS (uniform draw), blurred with sigma ~ U(0, max_blur_sigma), float32 [H, W, 3].

  The blur radius is fixed (default: a third of the shorter side; Dream Fields' kernel of 15
  pixels is radius 7), so the function is jittable; large sigmas are cut at that radius.
  """
  key_kind, key_image, key_sigma = jax.random.split(key, 3)
  options = jnp.stack([uniform_noise(key_image, height, width),
                       checkerboard(key_image, height, width),
                       fourier_noise(key_image, height, width)])
  image = options[jax.random.randint(key_kind, (), 0, len(KINDS))]
  sigma = jax.random.uniform(key_sigma, (), maxval=max_blur_sigma)
  radius = max(1, min(height, width) // 3) if radius is None else radius
  return gaussian_blur(image, sigma, radius)


def composite(rgb, acc, background):
  """Render over a background through its opacity: rgb + (1 - acc) background.

  Args:
    rgb: float [..., H, W, 3] colours rendered over black (premultiplied by opacity).
    acc: float [..., H, W] accumulated opacity.
    background: float [..., H, W, 3].
  """
  return rgb + (1.0 - acc[..., None]) * background


def random_crop(key, image, size, min_scale, max_scale=1.0):
  """A random square crop of float [H, W, C] covering min_scale to max_scale of its side,
  resized to S.

  Bilinear (differentiable) resampling.
  """
  h, w = image.shape[:2]
  key_scale, key_y, key_x = jax.random.split(key, 3)
  scale = jax.random.uniform(key_scale, (), minval=min_scale, maxval=max_scale)
  side = scale * min(h, w)
  top = jax.random.uniform(key_y, ()) * (h - side)
  left = jax.random.uniform(key_x, ()) * (w - side)
  factor = size / side
  return jax.image.scale_and_translate(
      image, (size, size, image.shape[-1]), (0, 1), jnp.stack([factor, factor]),
      jnp.stack([-top * factor, -left * factor]), 'linear', antialias=True)


def augment(key, rgb, acc, *, num, size, min_scale=0.8, max_scale=1.0, max_blur_sigma=10.0,
            background_after_crop=False, blur_radius=None):
  """Dream Fields' augmentations: A random backgrounds and crops of each of B renders.

  By default the background is made at the render's size and the composite cropped. With
  background_after_crop, as Dream Fields' augment.py does it, the render and its opacity are
  cropped and resized to S first and composited over a background made at S, blurred within
  blur_radius (Dream Fields: 7, a 15-pixel kernel), so its squares and blur are in CLIP pixels.

  Args:
    key: PRNG key.
    rgb: float32 [B, H, W, 3] renders over black.
    acc: float32 [B, H, W] their accumulated opacity.
    num: A copies per render.
    size: S, the output size (CLIP's input size).
    min_scale, max_scale: the crop side's range as a share of the render's.
    max_blur_sigma: the background blur's sigma ~ U(0, max) in pixels.
    background_after_crop: composite after the crop, at S (see above).
    blur_radius: the blur's radius (None: a third of the background's side).

  Returns:
    float32 [B * A, S, S, 3] in [0, 1] (render-major: copies of render 0 first).
  """
  b, h, w, _ = rgb.shape
  keys = jax.random.split(key, (b, num, 2))
  crop = jax.vmap(jax.vmap(lambda k, x: random_crop(k, x, size, min_scale, max_scale)))
  if background_after_crop:
    layers = jnp.concatenate([rgb, acc[..., None]], axis=-1)  # [B, H, W, 4]
    crops = crop(keys[:, :, 1], jnp.broadcast_to(layers[:, None], (b, num, h, w, 4)))
    backgrounds = jax.vmap(jax.vmap(lambda k: random_background(
        k, size, size, max_blur_sigma, blur_radius)))(keys[:, :, 0])
    crops = composite(crops[..., :3], crops[..., 3], backgrounds)  # [B, A, S, S, 3]
  else:
    backgrounds = jax.vmap(jax.vmap(lambda k: random_background(
        k, h, w, max_blur_sigma, blur_radius)))(keys[:, :, 0])
    crops = crop(keys[:, :, 1], composite(rgb[:, None], acc[:, None], backgrounds))
  return jnp.clip(crops.reshape(b * num, size, size, 3), 0.0, 1.0)
