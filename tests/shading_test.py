"""Tests for dreamfusion_jax.shading: hand-computed Lambertian/textureless colours, lights."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import shading

# XLA's CPU backend optimisations dominate these tests' run time (compiling, not running, tiny
# graphs), so compile without them; the numerics under test are the same.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})

ALBEDO = np.array([[0.8, 0.4, 0.2], [0.1, 0.9, 0.5], [0.3, 0.3, 0.7], [0.6, 0.2, 0.9]])
# Unit normals, shaded points and a light at (0, 0, 3).
NORMALS = np.array([[0.0, 0.0, 1.0], [0.0, 0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
POINTS = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
LIGHT = np.array([0.0, 0.0, 3.0])
# n . (l - p) / |l - p| by hand: facing the light, 0.8, perpendicular (0), facing away (< 0 -> 0).
COSINE = np.array([1.0, 0.8, 0.0, 0.0])


def _shade(mode, **kwargs):
  return shading.shade(jnp.asarray(ALBEDO, jnp.float32), jnp.asarray(NORMALS, jnp.float32),
                       jnp.asarray(POINTS, jnp.float32), jnp.asarray(LIGHT, jnp.float32), mode,
                       **kwargs)


def test_lambertian_cosine_by_hand():
  cos = shading.lambertian(jnp.asarray(NORMALS, jnp.float32), jnp.asarray(POINTS, jnp.float32),
                           jnp.asarray(LIGHT, jnp.float32))
  chex.assert_shape(cos, (4, 1))
  np.testing.assert_allclose(cos[:, 0], COSINE, atol=1e-6)
  # Oblique: normal (0, 0, 1) at the origin, light at (3, 0, 4): cos = 4 / 5 at any distance.
  for scale in (1.0, 10.0):
    cos = shading.lambertian(jnp.array([[0.0, 0.0, 1.0]]), jnp.zeros((1, 3)),
                             scale * jnp.array([3.0, 0.0, 4.0]))
    np.testing.assert_allclose(cos, [[0.8]], atol=1e-6)


def test_shade_modes_by_hand():
  light_color, ambient = 0.9, 0.1
  light = light_color * COSINE[:, None] + ambient
  lambertian = _shade(shading.LAMBERTIAN, light_color=light_color, ambient=ambient)
  np.testing.assert_allclose(lambertian, ALBEDO * light, atol=1e-6)
  textureless = _shade(shading.TEXTURELESS, light_color=light_color, ambient=ambient)
  np.testing.assert_allclose(textureless, np.broadcast_to(light, (4, 3)), atol=1e-6)
  np.testing.assert_allclose(_shade(shading.ALBEDO, light_color=light_color, ambient=ambient),
                             ALBEDO,
                             atol=1e-7)
  # Rows 3 and 4 face away from (or are perpendicular to) the light: ambient only.
  np.testing.assert_allclose(lambertian[2:], ALBEDO[2:] * ambient, atol=1e-7)
  np.testing.assert_allclose(textureless[2:], ambient, atol=1e-7)
  # Defaults are threestudio's 0.9 and 0.1: a surface facing the light gets exactly its albedo.
  np.testing.assert_allclose(_shade(shading.LAMBERTIAN)[0], ALBEDO[0], atol=1e-6)


def test_shade_coloured_light_and_ambient():
  light_color, ambient = np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.1, 0.2])
  out = _shade(shading.LAMBERTIAN,
               light_color=jnp.asarray(light_color),
               ambient=jnp.asarray(ambient))
  np.testing.assert_allclose(out, ALBEDO * (light_color * COSINE[:, None] + ambient), atol=1e-6)
  out = _shade(shading.TEXTURELESS,
               light_color=jnp.asarray(light_color),
               ambient=jnp.asarray(ambient))
  np.testing.assert_allclose(out, light_color * COSINE[:, None] + ambient, atol=1e-6)


def test_shade_mode_is_traceable():
  shade = jit(lambda mode: _shade(mode))
  for mode in (shading.ALBEDO, shading.LAMBERTIAN, shading.TEXTURELESS):
    np.testing.assert_allclose(shade(jnp.int32(mode)), _shade(mode), atol=1e-6)
  assert shade._cache_size() == 1  # One compile serves every mode.
  # A batch of modes under vmap.
  out = jax.vmap(_shade)(jnp.arange(3))
  chex.assert_shape(out, (3, 4, 3))
  for mode in range(3):
    np.testing.assert_allclose(out[mode], _shade(mode), atol=1e-6)


def test_mode_index():
  assert [shading.mode_index(name) for name in shading.MODES
         ] == [shading.ALBEDO, shading.LAMBERTIAN, shading.TEXTURELESS]
  assert shading.mode_index('textureless') == shading.TEXTURELESS
  with pytest.raises(ValueError, match='glossy') as error:
    shading.mode_index('glossy')
  for name in shading.MODES:
    assert name in str(error.value)


def _angles_and_distances(lights, camera_position):
  lights = np.asarray(lights, np.float64)
  cam_dir = camera_position / np.linalg.norm(camera_position)
  distance = np.linalg.norm(lights, axis=-1)
  angle = np.rad2deg(np.arccos(np.clip(lights @ cam_dir / distance, -1.0, 1.0)))
  return angle, distance


def test_sample_light_distance_and_direction():
  camera_position = np.array([1.0, -2.0, 2.0])  # Distance 3.
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  sample = jit(
      jax.vmap(functools.partial(shading.sample_light,
                                 camera_position=jnp.asarray(camera_position)),
               in_axes=0))
  lights = sample(keys)
  chex.assert_shape(lights, (4000, 3))
  angle, distance = _angles_and_distances(lights, camera_position)
  # Distance: uniform in [0.8, 1.5] times the camera's.
  assert np.all((distance >= 0.8 * 3.0 - 1e-5) & (distance <= 1.5 * 3.0 + 1e-5))
  assert distance.min() < 0.85 * 3.0 and distance.max() > 1.45 * 3.0
  assert abs(np.mean(distance) - 1.15 * 3.0) < 0.05
  # Direction: always on the camera's side, typically within ~45 degrees of it, and spread out.
  assert np.all(angle < 90.0)
  assert 25.0 < np.median(angle) < 55.0
  assert np.std(angle) > 5.0
  # Same key, same light.
  np.testing.assert_array_equal(sample(keys[:3]), lights[:3])


def test_sample_light_spread():
  camera_position = jnp.array([0.0, 0.0, 2.0])
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  sample = jit(
      jax.vmap(lambda k: shading.sample_light(
          k, camera_position, spread_deg=5.0, distance_range=(1.0, 1.0))))
  lights = np.asarray(sample(keys), np.float64)
  np.testing.assert_allclose(np.linalg.norm(lights, axis=-1), 2.0, rtol=1e-5)
  # For a small spread each tangent component of the angular offset has standard deviation
  # spread_deg.
  offset_deg = np.rad2deg(np.arctan2(lights[:, :2], lights[:, 2:]))
  np.testing.assert_allclose(np.std(offset_deg, axis=0), 5.0, rtol=0.08)
  np.testing.assert_allclose(np.mean(offset_deg, axis=0), 0.0, atol=0.5)
  # No spread: the light sits on the camera ray.
  light = shading.sample_light(jax.random.PRNGKey(2),
                               camera_position,
                               spread_deg=0.0,
                               distance_range=(1.2, 1.2))
  np.testing.assert_allclose(light, [0.0, 0.0, 2.4], atol=1e-6)
