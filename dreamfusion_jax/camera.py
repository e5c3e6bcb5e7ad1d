"""Cameras: poses, intrinsics, rays, the DreamFusion camera distribution, view labels.

Conventions, stated once for the whole package:
- World is right-handed with world up = +z.
- Cameras follow OpenGL/Blender: a camera-to-world matrix `c2w` [4, 4]; the camera looks down its
  local -z axis, local +y is image up and local +x is image right.
- Pixel (row i, column j) has its centre at x = j + 0.5, y = i + 0.5; its camera-space direction is
  ((x - W/2) / f, -(y - H/2) / f, -1) for a focal length f in pixels.
- Ray directions are unit vectors, so distances `t` along rays are metric.
- Spherical camera coordinates: position = distance * (cos(el) cos(az), cos(el) sin(az), sin(el)),
  elevation `el` above the xy-plane, azimuth `az` from +x towards +y. Azimuth 0 is the object's
  front.

Letters: B cameras, H image height, W image width.
"""

import flax
import jax
import jax.numpy as jnp

VIEW_NAMES = ('front', 'side', 'back', 'overhead')
# Side stream of the elevation key for the uniform-area draws (sample_cameras).
UNIFORM_AREA_STREAM = 1


@flax.struct.dataclass
class Rays:
  """A bundle of rays.

  Attributes:
    origins: float32 [..., 3] ray origins in world space.
    directions: float32 [..., 3] unit ray directions in world space.
    radii: float32 [..., 1] cone radius per unit distance along the ray (mip-NeRF's pixel
      footprint), used by integrated positional encoding.
  """
  origins: jax.Array
  directions: jax.Array
  radii: jax.Array

  def reshape(self, *shape):
    """Returns the rays with their batch dimensions reshaped to `shape`."""
    return jax.tree.map(lambda x: x.reshape(*shape, x.shape[-1]), self)


@flax.struct.dataclass
class Cameras:
  """A batch of pinhole cameras, as drawn by `sample_cameras`.

  Attributes:
    c2w: float32 [B, 4, 4] camera-to-world matrices.
    focal: float32 [B] focal lengths in pixels.
    elevation_deg: float32 [B] elevation above the xy-plane, degrees.
    azimuth_deg: float32 [B] azimuth in [0, 360), degrees.
    distance: float32 [B] distance from the origin.
  """
  c2w: jax.Array
  focal: jax.Array
  elevation_deg: jax.Array
  azimuth_deg: jax.Array
  distance: jax.Array


def _normalize(x, eps=1e-12):
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x**2, axis=-1, keepdims=True), eps))


def look_at(eye, target, up=(0.0, 0.0, 1.0)):
  """Camera-to-world matrices of cameras at `eye` looking at `target`.

  Args:
    eye: float [..., 3] camera positions.
    target: float [..., 3] points the cameras look at.
    up: float [3] or [..., 3] world up; must not be parallel to the viewing direction (a camera
      looking straight down +-z gets a fallback up of +y).

  Returns:
    float32 [..., 4, 4] OpenGL camera-to-world matrices (columns: right, up, back, position).
  """
  eye = jnp.asarray(eye, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  up = jnp.broadcast_to(jnp.asarray(up, jnp.float32), eye.shape)
  back = _normalize(eye - target)  # The camera looks down -z, so +z points back.
  right = jnp.cross(up, back)
  degenerate = jnp.sum(right**2, axis=-1, keepdims=True) < 1e-10
  right = jnp.where(degenerate, jnp.cross(jnp.array([0.0, 1.0, 0.0]), back), right)
  right = _normalize(right)
  cam_up = jnp.cross(back, right)
  rotation = jnp.stack([right, cam_up, back], axis=-1)  # [..., 3, 3], columns are axes.
  top = jnp.concatenate([rotation, eye[..., None]], axis=-1)  # [..., 3, 4]
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0]), top.shape[:-2] + (1, 4))
  return jnp.concatenate([top, bottom], axis=-2)


def focal_from_fov(fov_deg, width):
  """Focal length in pixels of a horizontal field of view `fov_deg` over `width` pixels."""
  return 0.5 * width / jnp.tan(0.5 * jnp.deg2rad(fov_deg))


def fov_from_focal(focal, width):
  """Horizontal field of view in degrees of a focal length `focal` (pixels) over `width`."""
  return jnp.rad2deg(2.0 * jnp.arctan(0.5 * width / focal))


def spherical_to_position(elevation_deg, azimuth_deg, distance):
  """Cartesian camera positions [..., 3] from elevation, azimuth (degrees) and distance [...]."""
  el = jnp.deg2rad(elevation_deg)
  az = jnp.deg2rad(azimuth_deg)
  return distance[..., None] * jnp.stack(
      [jnp.cos(el) * jnp.cos(az), jnp.cos(el) * jnp.sin(az), jnp.sin(el)], axis=-1)


def pixel_directions(focal, height, width):
  """Unnormalised camera-space directions of pixel centres.

  Args:
    focal: float [...] focal lengths in pixels.
    height: int, image height H.
    width: int, image width W.

  Returns:
    float32 [..., H, W, 3] directions with z = -1.
  """
  focal = jnp.asarray(focal, jnp.float32)[..., None, None]
  y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                      jnp.arange(width, dtype=jnp.float32) + 0.5, indexing='ij')
  dx = (x - 0.5 * width) / focal
  dy = -(y - 0.5 * height) / focal
  return jnp.stack([dx, dy, -jnp.ones_like(dx)], axis=-1)


def generate_rays(c2w, focal, height, width):
  """Rays through the pixel centres of pinhole cameras.

  Args:
    c2w: float [..., 4, 4] (or [..., 3, 4]) camera-to-world matrices.
    focal: float [...] focal lengths in pixels.
    height: int, image height H.
    width: int, image width W.

  Returns:
    Rays with origins, directions [..., H, W, 3] and radii [..., H, W, 1].
  """
  c2w = jnp.asarray(c2w, jnp.float32)
  focal = jnp.broadcast_to(jnp.asarray(focal, jnp.float32), c2w.shape[:-2])
  cam_dirs = pixel_directions(focal, height, width)  # [..., H, W, 3]
  rotation = c2w[..., None, None, :3, :3]
  world_dirs = jnp.sum(rotation * cam_dirs[..., None, :], axis=-1)
  norm = jnp.linalg.norm(cam_dirs, axis=-1, keepdims=True)
  directions = world_dirs / norm
  origins = jnp.broadcast_to(c2w[..., None, None, :3, 3], directions.shape)
  # mip-NeRF's cone radius: a pixel of side 1/f on the z = -1 plane, as a disc of equal variance
  # (2/sqrt(12)), per unit of distance along the unit direction.
  radii = (2.0 / jnp.sqrt(12.0)) / (focal[..., None, None, None] * norm)
  return Rays(origins=origins, directions=directions, radii=radii)


def sample_cameras(key, batch_size, *, width, elevation_range_deg=(-10.0, 90.0),
                   azimuth_range_deg=(0.0, 360.0), distance_range=(1.0, 1.5),
                   focal_range=(0.7, 1.35), target=(0.0, 0.0, 0.0), uniform_sphere_rate=0.0):
  """Draws random cameras looking at `target` from DreamFusion's distribution.

  Elevation, azimuth and distance are uniform in their ranges; the focal length is uniform in
  `focal_range` times the image width (DreamFusion Appendix A, via PAPER.md). With
  uniform_sphere_rate > 0, that share of the cameras instead draws its elevation uniformly over
  the area of the sphere's band (sin(elevation) uniform), which puts fewer cameras near the pole
  (stable-dreamfusion's option of that name; not in the paper).

  Args:
    key: a PRNG key.
    batch_size: int, number of cameras B.
    width: int, image width in pixels (focal lengths scale with it).
    elevation_range_deg: (low, high) elevation in degrees; 90 is straight overhead.
    azimuth_range_deg: (low, high) azimuth in degrees.
    distance_range: (low, high) camera distance from `target`.
    focal_range: (low, high) focal length as a multiple of `width`.
    target: float [3] point every camera looks at.
    uniform_sphere_rate: probability in [0, 1] of an elevation uniform in area; 0 draws exactly
      what the paper's distribution draws.

  Returns:
    Cameras with arrays of leading size B.
  """
  key_el, key_az, key_dist, key_focal = jax.random.split(key, 4)

  def uniform(k, bounds):
    return jax.random.uniform(k, (batch_size,), jnp.float32, bounds[0], bounds[1])

  elevation = uniform(key_el, elevation_range_deg)
  if uniform_sphere_rate > 0:  # New keys only here: rate 0 keeps the paper's draws bit for bit.
    key_area, key_pick = jax.random.split(jax.random.fold_in(key_el, UNIFORM_AREA_STREAM))
    sines = jnp.sin(jnp.deg2rad(jnp.asarray(elevation_range_deg, jnp.float32)))
    by_area = jnp.rad2deg(jnp.arcsin(uniform(key_area, sines)))
    by_area = jnp.clip(by_area, *elevation_range_deg)  # arcsin's rounding.
    pick = jax.random.uniform(key_pick, (batch_size,)) < uniform_sphere_rate
    elevation = jnp.where(pick, by_area, elevation)
  azimuth = jnp.mod(uniform(key_az, azimuth_range_deg), 360.0)
  distance = uniform(key_dist, distance_range)
  focal = uniform(key_focal, focal_range) * width
  target = jnp.broadcast_to(jnp.asarray(target, jnp.float32), (batch_size, 3))
  eye = target + spherical_to_position(elevation, azimuth, distance)
  return Cameras(c2w=look_at(eye, target), focal=focal, elevation_deg=elevation,
                 azimuth_deg=azimuth, distance=distance)


def orbit_cameras(num_views, *, elevation_deg, distance, focal, start_azimuth_deg=0.0):
  """Evenly spaced cameras on a circle around the origin (turntables, evaluation views).

  Args:
    num_views: int, number of cameras B.
    elevation_deg: float elevation of the circle.
    distance: float distance from the origin.
    focal: float focal length in pixels.
    start_azimuth_deg: azimuth of the first camera.

  Returns:
    Cameras with arrays of leading size B.
  """
  azimuth = jnp.mod(start_azimuth_deg + jnp.arange(num_views, dtype=jnp.float32)
                    * (360.0 / num_views), 360.0)
  elevation = jnp.full((num_views,), elevation_deg, jnp.float32)
  dist = jnp.full((num_views,), distance, jnp.float32)
  eye = spherical_to_position(elevation, azimuth, dist)
  return Cameras(c2w=look_at(eye, jnp.zeros_like(eye)),
                 focal=jnp.full((num_views,), focal, jnp.float32),
                 elevation_deg=elevation, azimuth_deg=azimuth, distance=dist)


def view_labels(elevation_deg, azimuth_deg, *, overhead_min_deg=60.0, front_half_width_deg=45.0):
  """DreamFusion's view label of each camera, as an index into VIEW_NAMES.

  Above `overhead_min_deg` elevation the view is 'overhead'; otherwise 'front' within
  `front_half_width_deg` of azimuth 0, 'back' within the same of azimuth 180, else 'side'.

  Args:
    elevation_deg: float [...] elevations in degrees.
    azimuth_deg: float [...] azimuths in degrees (any range; wrapped to [-180, 180)).

  Returns:
    int32 [...] indices: 0 front, 1 side, 2 back, 3 overhead.
  """
  wrapped = jnp.mod(jnp.asarray(azimuth_deg) + 180.0, 360.0) - 180.0
  distance_from_front = jnp.abs(wrapped)
  label = jnp.where(distance_from_front <= front_half_width_deg, 0,
                    jnp.where(distance_from_front >= 180.0 - front_half_width_deg, 2, 1))
  return jnp.where(jnp.asarray(elevation_deg) > overhead_min_deg, 3, label).astype(jnp.int32)
