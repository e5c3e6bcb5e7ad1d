"""DreamFusion's shading modes: albedo only, Lambertian (diffuse) and textureless.

Paper, Sec. 3.1: c = rho * (l_rho * max(0, n . (l - mu) / ||l - mu||) + l_a), with albedo rho,
normal n, point light at l with colour l_rho and ambient colour l_a. Textureless replaces rho by
white; albedo-only returns rho unlit.
"""

import jax
import jax.numpy as jnp

MODES = ('albedo', 'lambertian', 'textureless')
ALBEDO, LAMBERTIAN, TEXTURELESS = range(3)


def mode_index(name):
  """The integer index of a shading mode name, with a clear error for an unknown one."""
  if name not in MODES:
    raise ValueError(f'unknown shading mode {name!r}: choose one of {", ".join(MODES)}')
  return MODES.index(name)


def lambertian(normals, points, light_position):
  """The diffuse term max(0, n . (l - mu) / ||l - mu||).

  Args:
    normals: float32 [..., 3] unit normals.
    points: float32 [..., 3] shaded points mu.
    light_position: float32 [3] (or broadcastable to [..., 3]) point light position l.

  Returns:
    float32 [..., 1] cosine factor in [0, 1].
  """
  to_light = light_position - points
  to_light = to_light / jnp.sqrt(jnp.maximum(jnp.sum(to_light**2, -1, keepdims=True), 1e-20))
  return jnp.maximum(0.0, jnp.sum(normals * to_light, axis=-1, keepdims=True))


def shade(albedo, normals, points, light_position, mode, *, light_color=0.9, ambient=0.1):
  """Colours of points under one of the shading modes.

  Args:
    albedo: float32 [..., 3] albedo rho in [0, 1].
    normals: float32 [..., 3] unit normals (ignored in albedo mode, but required so the mode can
      be a traced value).
    points: float32 [..., 3] positions mu.
    light_position: float32 [3] point light position.
    mode: int scalar (possibly traced): ALBEDO, LAMBERTIAN or TEXTURELESS.
    light_color: l_rho, scalar or [3] (threestudio: 0.9).
    ambient: l_a, scalar or [3] (threestudio: 0.1).

  Returns:
    float32 [..., 3] shaded colours.
  """
  light = jnp.asarray(light_color) * lambertian(normals, points, light_position) + ambient
  lit_albedo = albedo * light
  lit_white = jnp.broadcast_to(light, albedo.shape)
  return jnp.where(mode == ALBEDO, albedo, jnp.where(mode == LAMBERTIAN, lit_albedo, lit_white))


def sample_light(key, camera_position, *, distance_range=(0.8, 1.5), spread_deg=45.0):
  """A random point light near the camera (DreamFusion samples it around the camera position).

  Args:
    key: a PRNG key.
    camera_position: float32 [3] camera position.
    distance_range: the light's distance from the origin as a multiple of the camera's.
    spread_deg: standard deviation of the light's angular offset from the camera direction.

  Returns:
    float32 [3] light position.
  """
  key_dir, key_dist = jax.random.split(key)
  direction = camera_position / jnp.linalg.norm(camera_position)
  offset = jax.random.normal(key_dir, (3,)) * jnp.deg2rad(spread_deg)
  direction = direction + offset - jnp.dot(offset, direction) * direction
  direction = direction / jnp.linalg.norm(direction)
  scale = jax.random.uniform(key_dist, (), minval=distance_range[0], maxval=distance_range[1])
  return direction * scale * jnp.linalg.norm(camera_position)
