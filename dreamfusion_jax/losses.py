"""Regularisers and image losses, each a pure function with its weight applied by the caller.

Letters: R rays, S samples per ray.
"""

import jax
import jax.numpy as jnp


def psnr(mse):
  """Peak signal-to-noise ratio in dB of a mean squared error of colours in [0, 1]."""
  return -10.0 * jnp.log10(mse)


def orientation(weights, normals, directions):
  """DreamFusion's orientation loss (from Ref-NeRF): sum_i stopgrad(w_i) max(0, n_i . d)^2.

  Penalises visible normals facing away from the camera (n . d > 0 for a ray direction d),
  which would otherwise let the density fake shading.

  Args:
    weights: float32 [R, S] compositing weights (gradient stopped here).
    normals: float32 [R, S, 3] per-sample unit normals.
    directions: float32 [R, 3] unit ray directions.

  Returns:
    float32 scalar, the mean over rays.
  """
  facing_away = jnp.maximum(0.0, jnp.sum(normals * directions[:, None, :], axis=-1))
  return jnp.mean(jnp.sum(jax.lax.stop_gradient(weights) * facing_away**2, axis=-1))


def opacity(acc):
  """DreamFusion's penalty on accumulated opacity against fog: the mean of sqrt(acc^2 + 0.01).

  The smoothed L1 (stable-dreamfusion's form) keeps a gradient at zero opacity.

  Args:
    acc: float32 [R] accumulated opacity.

  Returns:
    float32 scalar.
  """
  return jnp.mean(jnp.sqrt(acc**2 + 0.01))


def opacity_entropy(acc, eps=1e-4):
  """Mean binary entropy (nats) of the accumulated opacity: 0 where rays are fully empty or full.

  Not in DreamFusion (stable-dreamfusion's "lambda_entropy"): it pushes foggy, half-transparent
  rims to either side, so silhouettes come out sharp.

  Args:
    acc: float32 [R] accumulated opacity.
    eps: float clip away from 0 and 1, where the gradient is infinite.

  Returns:
    float32 scalar in [0, log 2].
  """
  a = jnp.clip(acc, eps, 1.0 - eps)
  return jnp.mean(-a * jnp.log(a) - (1.0 - a) * jnp.log1p(-a))


def normal_smoothness(normals, perturbed_normals, weights):
  """Weighted mean squared difference of surface normals and normals at nearby points.

  Not in DreamFusion (threestudio's 3D normal smoothness, after Zhang et al.'s Vox-Surf): a
  bumpy surface has normals that turn within a small neighbourhood, and its Lambertian render
  reads as crumpled. Zero for a plane; small for a sphere much larger than the perturbation.

  Args:
    normals: float32 [R, 3] unit normals at surface points.
    perturbed_normals: float32 [R, 3] unit normals at the points moved by a small offset.
    weights: float32 [R] weight per point (gradient stopped here), e.g. the ray's opacity.

  Returns:
    float32 scalar in [0, 4].
  """
  diff = jnp.sum((normals - perturbed_normals)**2, axis=-1)
  weights = jax.lax.stop_gradient(weights)
  return jnp.sum(weights * diff) / jnp.maximum(jnp.sum(weights), 1e-6)


def transmittance(acc, target):
  """Dream Fields' transmittance loss: -min(target, mean over rays of 1 - acc).

  Rewards empty space until the mean transmittance reaches the target, and nothing beyond it,
  so the scene stays sparse without being pushed to vanish (Jain et al., 2022, Eq. 3; the
  weight, 0.5 in Dream Fields, is the caller's).

  Args:
    acc: float32 [R] accumulated opacity.
    target: float32 scalar target transmittance tau (Dream Fields: 0.5 -> 0.9 over 500 steps).

  Returns:
    float32 scalar.
  """
  return -jnp.minimum(target, jnp.mean(1.0 - acc))
