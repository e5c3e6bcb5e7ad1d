"""Tests of the regularisers on accumulated opacity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import losses


def test_opacity_is_the_smoothed_l1_mean():
  acc = jnp.array([0.0, 0.5, 1.0])
  expected = np.mean(np.sqrt(np.array([0.0, 0.25, 1.0]) + 0.01))
  assert float(losses.opacity(acc)) == pytest.approx(expected, rel=1e-6)


def test_opacity_entropy_values_and_gradient():
  assert float(losses.opacity_entropy(jnp.array([0.0, 1.0]))) < 2e-3
  assert float(losses.opacity_entropy(jnp.array([0.5]))) == pytest.approx(np.log(2.0), rel=1e-6)
  a = 0.3
  expected = -a * np.log(a) - (1 - a) * np.log(1 - a)
  assert float(losses.opacity_entropy(jnp.array([a]))) == pytest.approx(expected, rel=1e-5)
  # Descending the entropy pushes half-transparent rays to the nearer side, finitely at 0 and 1.
  grad = jax.grad(losses.opacity_entropy)(jnp.array([0.0, 0.3, 0.7, 1.0]))
  assert np.all(np.isfinite(grad)) and grad[1] > 0 > grad[2]


def test_normal_smoothness_values_and_weights():
  up, side = jnp.array([[0.0, 0.0, 1.0]]), jnp.array([[1.0, 0.0, 0.0]])
  assert float(losses.normal_smoothness(up, up, jnp.ones(1))) == 0.0
  assert float(losses.normal_smoothness(up, -up, jnp.ones(1))) == pytest.approx(4.0)
  assert float(losses.normal_smoothness(up, side, jnp.ones(1))) == pytest.approx(2.0)
  # A weighted mean: a point of weight 0 (an empty ray) does not count.
  normals, moved = jnp.concatenate([up, up]), jnp.concatenate([side, -up])
  value = lambda weights: float(losses.normal_smoothness(normals, moved, jnp.array(weights)))
  assert value([1.0, 0.0]) == pytest.approx(2.0)
  assert value([1.0, 1.0]) == pytest.approx(3.0)
  # The gradient flows into the normals, never into the weights.
  grad_n, grad_w = jax.grad(losses.normal_smoothness, argnums=(0, 2))(up, side, jnp.ones(1))
  assert float(jnp.sum(jnp.abs(grad_n))) > 0 and float(jnp.sum(jnp.abs(grad_w))) == 0


def test_transmittance_is_minus_the_clipped_mean_transmittance():
  acc = jnp.array([1.0, 0.5, 0.0, 0.25])  # Mean transmittance (0 + 0.5 + 1 + 0.75) / 4 = 0.5625.
  assert float(losses.transmittance(acc, 0.9)) == pytest.approx(-0.5625)
  assert float(losses.transmittance(acc, 0.5)) == pytest.approx(-0.5)  # Capped at the target.
  grad_below = jax.grad(losses.transmittance)(acc, 0.9)
  np.testing.assert_allclose(grad_below, np.full(4, 0.25))  # d/d acc of -mean(1 - acc).
  np.testing.assert_array_equal(jax.grad(losses.transmittance)(acc, 0.5), np.zeros(4))
