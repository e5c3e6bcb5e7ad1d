"""Deterministic DDIM sampling from a pixel-space diffusion model (to look at what a prior knows).

DDIM (Song et al. 2021) with eta = 0: from x_T ~ N(0, I), each step predicts x_0 from the
classifier-free-guided noise estimate and moves to the previous noise level along it.
"""

import jax
import jax.numpy as jnp
import numpy as np


def ddim_timesteps(num_train_steps, num_steps):
  """int32 [num_steps] schedule indices from the noisiest (T - 1) down to 0, evenly spaced."""
  return np.round(np.linspace(num_train_steps - 1, 0, num_steps)).astype(np.int32)


def ddim_sample(diffusion, emb, key, *, num_steps=50, guidance_scale=3.0):
  """Samples images from a pixel-space guidance.Diffusion.

  Args:
    diffusion: a pixel-space guidance.Diffusion (no VAE).
    emb: guidance.TextEmbeddings [B, L, D], one entry per image.
    key: PRNG key for x_T.
    num_steps: int, DDIM steps.
    guidance_scale: float classifier-free guidance s.

  Returns:
    float32 [B, H, W, 3] images in [0, 1].
  """
  if diffusion.is_latent:
    raise ValueError('ddim_sample needs a pixel-space model (a diffusers folder without vae/)')
  b = emb.cond.shape[0]
  abar = diffusion.alphas_cumprod
  steps = jnp.asarray(ddim_timesteps(abar.shape[0], num_steps))
  prev = jnp.concatenate([steps[1:], jnp.array([-1], jnp.int32)])

  def body(i, x):
    k, k_prev = steps[i], prev[i]
    ab = abar[k]
    ab_prev = jnp.where(k_prev >= 0, abar[jnp.maximum(k_prev, 0)], 1.0)
    eps = diffusion.predict_noise(x, jnp.full((b,), k, jnp.int32), emb, guidance_scale)
    x0 = jnp.clip((x - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab), -1.0, 1.0)
    eps = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)  # Consistent with the clipped x0.
    return jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1.0 - ab_prev) * eps

  x = jax.random.normal(key, diffusion.latent_shape(b))
  x = jax.lax.fori_loop(0, num_steps, body, x)
  return jnp.clip(0.5 * (x + 1.0), 0.0, 1.0)
