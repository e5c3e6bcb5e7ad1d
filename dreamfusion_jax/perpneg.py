"""Perp-Neg (Armandpour et al., 2023): view-dependent negative prompts against multi-faced objects.

DreamFusion's view-dependent prompts ("..., front view", side, back) still let each view's
guidance pull towards the object's front, so objects grow a face on every side (the Janus
problem). Perp-Neg guides each view by its positive prompt and pushes it away from the prompts of
the other views, keeping only the part of each negative direction perpendicular to the positive
one (so the negative cannot cancel what the positive asks for):

    d_pos = eps(pos) - eps(uncond),   d_i = eps(neg_i) - eps(uncond),
    perp_i = d_i - <d_i, d_pos> / max(|d_pos|^2, 1e-6) d_pos     (dot per view over h, w, C)
    eps_hat = eps(uncond) + s (d_pos + sum_i w_i perp_i),   w_i <= 0.

The positive embedding and the negatives' weights depend on the camera's azimuth as in
threestudio's prompt processor (`prompt_processors/base.py`, `utils/ops.py`), whose decay
functions f(r) = a exp(-b r) + c are the defaults below (RECIPES.md, section 3). With az the
azimuth wrapped to [-180, 180) (0: the front):
- |az| < 90: r = 1 - |az| / 90, positive r front + (1 - r) side, negatives (front, side) with
  weights (-f_fs(r), -f_sf(1 - r)), f_sf = f_fs;
- otherwise: r = 2 - |az| / 90, positive r side + (1 - r) back, negatives (side, front) with
  weights (-f_sb(r), -f_fsb(r));
- elevation above 60 degrees: the overhead prompt, both weights 0.
So the front view is pushed away from the side (weight -1.574), the side view from the front
(-1.574), the back view from the front (-1.967) and the side (-0.394).

Letters: B views, K = 2 negatives, V = 4 view prompts (camera.VIEW_NAMES), L tokens, D width,
h, w, C the model's input size.
"""

import jax
import jax.numpy as jnp

from dreamfusion_jax import camera

FRONT, SIDE, BACK, OVERHEAD = (camera.VIEW_NAMES.index(n)
                               for n in ('front', 'side', 'back', 'overhead'))
# threestudio's (a, b, c) of f(r) = a exp(-b r) + c.
FRONT_SIDE = (4.0, 0.5, -2.426)
SIDE_BACK = (1.0, 0.5, -0.606)
FRONT_SIDE_BACK = (1.0, 0.5, 0.967)
DEFAULT_SCALES = (FRONT_SIDE, SIDE_BACK, FRONT_SIDE_BACK)
NUM_NEGATIVES = 2


def decay(r, abc):
  """f(r) = a exp(-b r) + c of threestudio's Perp-Neg weights, float [...]."""
  a, b, c = abc
  return a * jnp.exp(-b * r) + c


def view_weights(elevation_deg, azimuth_deg, scales=DEFAULT_SCALES, overhead_min_deg=60.0):
  """The positive prompt's mix and the negatives' prompts and weights of each camera.

  Args:
    elevation_deg, azimuth_deg: float [B] camera angles in degrees (azimuth 0: the front).
    scales: ((a, b, c) of f_fs, of f_sb, of f_fsb), threestudio's by default.
    overhead_min_deg: cameras above this elevation take the overhead prompt, no negatives.

  Returns:
    positive: float32 [B, V] weights of the V view prompts' embeddings in the positive one.
    negatives: int32 [B, K] the view prompts used as negatives.
    weights: float32 [B, K] their weights w_i (<= 0 with the defaults).
  """
  f_fs, f_sb, f_fsb = scales
  az = jnp.abs(jnp.mod(jnp.asarray(azimuth_deg, jnp.float32) + 180.0, 360.0) - 180.0)
  front_half = az < 90.0
  r = jnp.where(front_half, 1.0 - az / 90.0, 2.0 - az / 90.0)
  one_hot = lambda i: jax.nn.one_hot(i, len(camera.VIEW_NAMES), dtype=jnp.float32)
  r_ = r[:, None]
  positive = jnp.where(front_half[:, None], r_ * one_hot(FRONT) + (1 - r_) * one_hot(SIDE),
                       r_ * one_hot(SIDE) + (1 - r_) * one_hot(BACK))
  negatives = jnp.where(front_half[:, None], jnp.array([FRONT, SIDE]),
                        jnp.array([SIDE, FRONT])).astype(jnp.int32)
  weights = jnp.where(front_half[:, None],
                      jnp.stack([-decay(r, f_fs), -decay(1.0 - r, f_fs)], axis=-1),
                      jnp.stack([-decay(r, f_sb), -decay(r, f_fsb)], axis=-1))
  overhead = (jnp.asarray(elevation_deg) > overhead_min_deg)[:, None]
  positive = jnp.where(overhead, one_hot(OVERHEAD), positive)
  weights = jnp.where(overhead, 0.0, weights)
  return positive, negatives, weights.astype(jnp.float32)


def view_embeddings(text, elevation_deg, azimuth_deg, scales=DEFAULT_SCALES):
  """Perp-Neg's text embeddings of B cameras from the V view prompts' embeddings.

  Args:
    text: guidance.TextEmbeddings with cond and uncond [V, L, D] (Diffusion.encode_views).
    elevation_deg, azimuth_deg: float [B] the cameras' angles.
    scales: the decay functions' (a, b, c), as view_weights.

  Returns:
    guidance.TextEmbeddings with cond [B, L, D] (the positive, interpolated between views),
    uncond [B, L, D], negatives [B, K, L, D] and negative_weights float32 [B, K].
  """
  positive, negatives, weights = view_weights(elevation_deg, azimuth_deg, scales)
  mix = lambda e: jnp.einsum('bv,vld->bld', positive.astype(e.dtype), e)
  return type(text)(cond=mix(text.cond), uncond=mix(text.uncond),
                    negatives=jnp.take(text.cond, negatives, axis=0), negative_weights=weights)


def perpendicular(delta, delta_pos):
  """The part of delta float [B, ...] perpendicular to delta_pos [B, ...], per view."""
  axes = tuple(range(1, delta.ndim))
  dot = jnp.sum(delta * delta_pos, axis=axes, keepdims=True)
  norm2 = jnp.sum(delta_pos * delta_pos, axis=axes, keepdims=True)
  return delta - dot / jnp.maximum(norm2, 1e-6) * delta_pos


def combine(eps_uncond, eps_pos, eps_negatives, weights, guidance_scale):
  """Perp-Neg's guided noise eps_u + s (d_pos + sum_i w_i perp_i).

  Args:
    eps_uncond, eps_pos: float32 [B, h, w, C] predictions for the negative prompt ('' by
      default) and the positive one.
    eps_negatives: float32 [K, B, h, w, C] predictions for the negatives.
    weights: float32 [B, K] their weights.
    guidance_scale: float or float [B], s.

  Returns:
    float32 [B, h, w, C].
  """
  delta_pos = eps_pos - eps_uncond
  guided = delta_pos
  for i in range(eps_negatives.shape[0]):
    w = weights[:, i].reshape((-1,) + (1,) * (delta_pos.ndim - 1))
    guided = guided + w * perpendicular(eps_negatives[i] - eps_uncond, delta_pos)
  scale = jnp.reshape(jnp.asarray(guidance_scale, jnp.float32), (-1,) + (1,) * (delta_pos.ndim - 1))
  return eps_uncond + scale * guided
