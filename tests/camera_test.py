"""Tests for dreamfusion_jax.camera: look-at poses, pinhole rays, camera sampling, view labels."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import camera

# XLA's CPU backend optimisations dominate these tests' run time (compiling, not running, tiny
# graphs), so compile without them; the numerics under test are the same.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})

# Jitted entry points: one compile per shape instead of one per primitive keeps the file fast.
look_at = jit(camera.look_at)
generate_rays = jit(camera.generate_rays, static_argnums=(2, 3))
sample_cameras = jit(camera.sample_cameras,
                     static_argnames=('batch_size', 'width', 'elevation_range_deg',
                                      'azimuth_range_deg', 'distance_range', 'focal_range',
                                      'uniform_sphere_rate'))
orbit_cameras = jit(camera.orbit_cameras, static_argnums=0)
view_labels = jit(camera.view_labels)


def _check_pose(c2w, eye, target):
  """Asserts float [..., 4, 4] `c2w` is a proper OpenGL look-at pose from `eye` to `target`."""
  c2w, eye, target = (np.asarray(x, np.float64) for x in (c2w, eye, target))
  rot = c2w[..., :3, :3]
  eye_3x3 = np.broadcast_to(np.eye(3), rot.shape)
  np.testing.assert_allclose(np.swapaxes(rot, -1, -2) @ rot, eye_3x3, atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
  forward = (target - eye) / np.linalg.norm(target - eye, axis=-1, keepdims=True)
  np.testing.assert_allclose(-rot[..., :, 2], forward, atol=1e-5)
  np.testing.assert_allclose(c2w[..., :3, 3], eye, atol=1e-6)
  np.testing.assert_array_equal(c2w[..., 3, :],
                                np.broadcast_to([0.0, 0.0, 0.0, 1.0], c2w.shape[:-2] + (4,)))


def test_look_at_batched_random_poses():
  rng = np.random.default_rng(0)
  eye = rng.normal(size=(2, 5, 3)) * 2.0
  target = rng.normal(size=(2, 5, 3)) * 0.3
  c2w = look_at(eye, target)
  chex.assert_shape(c2w, (2, 5, 4, 4))
  chex.assert_type(c2w, jnp.float32)
  _check_pose(c2w, eye, target)
  c2w = np.asarray(c2w)
  # With world up +z the image x axis is horizontal and the image up axis points upwards.
  np.testing.assert_allclose(c2w[..., 2, 0], 0.0, atol=1e-6)
  assert np.all(c2w[..., 2, 1] > 0.0)


def test_look_at_front_camera_axes():
  # A camera on +x (azimuth 0, the front) looking at the origin: image right is world +y, up +z.
  c2w = np.asarray(look_at([2.0, 0.0, 0.0], [0.0, 0.0, 0.0]))
  np.testing.assert_allclose(c2w[:3, 0], [0.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(c2w[:3, 1], [0.0, 0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(c2w[:3, 2], [1.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize('eye', [(0.0, 0.0, 2.0), (0.0, 0.0, -1.5), (0.3, -0.2, 3.0)])
def test_look_at_straight_up_or_down_is_finite_and_proper(eye):
  # The view direction is parallel to world up: the fallback up must still give a proper rotation.
  target = np.array(eye) * np.array([1.0, 1.0, 0.0])
  c2w = look_at(eye, target)
  assert np.all(np.isfinite(np.asarray(c2w)))
  _check_pose(c2w, eye, target)


def test_look_at_mixed_batch_with_degenerate_member():
  eye = np.array([[0.0, 0.0, 2.0], [1.0, 1.0, 0.5], [0.0, 0.0, -2.0]])
  target = np.zeros_like(eye)
  _check_pose(look_at(eye, target), eye, target)


def _center_direction(directions, height, width):
  """Average direction of the 1 (odd) or 2 (even) central rows and columns, normalised."""
  rows = [height // 2] if height % 2 else [height // 2 - 1, height // 2]
  cols = [width // 2] if width % 2 else [width // 2 - 1, width // 2]
  d = np.asarray(directions, np.float64)[..., rows, :, :][..., cols, :]
  d = d.reshape(d.shape[:-3] + (-1, 3)).mean(axis=-2)
  return d / np.linalg.norm(d, axis=-1, keepdims=True)


@pytest.mark.parametrize('height,width', [(5, 7), (4, 6), (5, 6), (4, 3)])
def test_generate_rays_geometry(height, width):
  rng = np.random.default_rng(height * 10 + width)
  eye = rng.normal(size=(2, 3)) * 2.0
  c2w = np.asarray(look_at(eye, rng.normal(size=(2, 3)) * 0.2), np.float64)
  focal = np.array([3.7, 5.2])
  rays = generate_rays(c2w, focal, height, width)
  chex.assert_shape([rays.origins, rays.directions], (2, height, width, 3))
  chex.assert_shape(rays.radii, (2, height, width, 1))
  chex.assert_type([rays.origins, rays.directions, rays.radii], jnp.float32)

  directions = np.asarray(rays.directions, np.float64)
  np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(rays.origins,
                             np.broadcast_to(eye[:, None, None], (2, height, width, 3)),
                             atol=1e-6)
  # The central ray is the viewing direction, -z of the camera.
  np.testing.assert_allclose(_center_direction(directions, height, width),
                             -c2w[:, :3, 2],
                             atol=1e-6)

  # Each ray projects back to its pixel centre with the pinhole formula.
  cam = np.einsum('bji,bhwj->bhwi', c2w[:, :3, :3], directions)  # R^T d
  assert np.all(cam[..., 2] < 0.0)
  f = focal[:, None, None]
  x = 0.5 * width + f * cam[..., 0] / -cam[..., 2]
  y = 0.5 * height - f * cam[..., 1] / -cam[..., 2]
  cols, rows = np.meshgrid(np.arange(width), np.arange(height))
  np.testing.assert_allclose(x, np.broadcast_to(cols + 0.5, x.shape), atol=1e-4)
  np.testing.assert_allclose(y, np.broadcast_to(rows + 0.5, y.shape), atol=1e-4)


def test_generate_rays_radii_match_pixel_spacing():
  # mip-NeRF: radius = 2 / sqrt(12) times the spacing of neighbouring directions (1 / f at the
  # centre).
  focal = 40.0
  rays = generate_rays(np.eye(4), focal, 5, 5)
  d = np.asarray(rays.directions, np.float64)
  spacing = np.linalg.norm(d[2, 3] - d[2, 2])
  np.testing.assert_allclose(rays.radii[2, 2, 0], 2.0 / np.sqrt(12.0) / focal, rtol=1e-6)
  np.testing.assert_allclose(rays.radii[2, 2, 0], 2.0 / np.sqrt(12.0) * spacing, rtol=1e-3)
  # Identity pose: the centre ray looks down -z and pixel (0, 0) is top left (x < 0, y > 0).
  np.testing.assert_allclose(d[2, 2], [0.0, 0.0, -1.0], atol=1e-7)
  assert d[0, 0, 0] < 0.0 and d[0, 0, 1] > 0.0


def test_focal_fov_known_values_and_inverse():
  np.testing.assert_allclose(camera.focal_from_fov(90.0, 64), 32.0, rtol=1e-6)
  np.testing.assert_allclose(camera.focal_from_fov(60.0, 100), 50.0 / np.tan(np.pi / 6), rtol=1e-6)
  fovs = np.array([10.0, 37.5, 60.0, 90.0, 140.0])
  for width in (64, 513):
    focal = camera.focal_from_fov(fovs, width)
    np.testing.assert_allclose(camera.fov_from_focal(focal, width), fovs, rtol=1e-5)
    focals = np.array([20.0, 100.0, 1000.0])
    np.testing.assert_allclose(camera.focal_from_fov(camera.fov_from_focal(focals, width), width),
                               focals,
                               rtol=1e-5)


def test_focal_matches_generated_ray_fov():
  # The outer edges of the first and last pixels span exactly the horizontal field of view.
  width, fov = 8, 50.0
  focal = float(camera.focal_from_fov(fov, width))
  d = np.asarray(camera.pixel_directions(focal, 1, width)[0], np.float64)
  np.testing.assert_allclose(d[:, 2], -1.0)
  right_edge = d[-1, 0] + 0.5 / focal
  left_edge = d[0, 0] - 0.5 / focal
  np.testing.assert_allclose(np.rad2deg(np.arctan(right_edge) - np.arctan(left_edge)),
                             fov,
                             rtol=1e-5)


def _spherical(points):
  """Elevation, azimuth in [0, 360) (degrees) and distance of float64 [..., 3] points."""
  dist = np.linalg.norm(points, axis=-1)
  el = np.rad2deg(np.arcsin(points[..., 2] / dist))
  az = np.mod(np.rad2deg(np.arctan2(points[..., 1], points[..., 0])), 360.0)
  return el, az, dist


def _angle_diff(a, b):
  return np.abs(np.mod(np.asarray(a) - np.asarray(b) + 180.0, 360.0) - 180.0)


def test_sample_cameras_ranges_geometry_and_keys():
  n, width = 1000, 64
  target = np.array([0.1, -0.2, 0.3])
  ranges = dict(elevation_range_deg=(-10.0, 80.0),
                azimuth_range_deg=(-180.0, 180.0),
                distance_range=(1.0, 1.5),
                focal_range=(0.7, 1.35))
  cams = sample_cameras(jax.random.PRNGKey(0), batch_size=n, width=width, target=target, **ranges)
  chex.assert_shape(cams.c2w, (n, 4, 4))
  chex.assert_shape([cams.focal, cams.elevation_deg, cams.azimuth_deg, cams.distance], (n,))
  el, az, dist, focal = (np.asarray(x, np.float64)
                         for x in (cams.elevation_deg, cams.azimuth_deg, cams.distance, cams.focal))
  assert np.all((el >= -10.0) & (el <= 80.0))
  assert np.all((az >= 0.0) & (az < 360.0))
  assert np.all((dist >= 1.0) & (dist <= 1.5))
  assert np.all((focal / width >= 0.7) & (focal / width <= 1.35))
  # The draws cover their ranges (uniform, 1000 samples).
  assert el.min() < -5.0 and el.max() > 75.0
  assert np.any(az < 20.0) and np.any(az > 340.0) and np.any(np.abs(az - 180.0) < 10.0)
  assert dist.min() < 1.05 and dist.max() > 1.45

  c2w = np.asarray(cams.c2w, np.float64)
  position = c2w[:, :3, 3] - target
  el_pos, az_pos, dist_pos = _spherical(position)
  np.testing.assert_allclose(dist_pos, dist, rtol=1e-5)
  np.testing.assert_allclose(el_pos, el, atol=1e-3)
  assert np.all(_angle_diff(az_pos, az) < 1e-2)
  _check_pose(c2w, c2w[:, :3, 3], np.broadcast_to(target, (n, 3)))

  same = sample_cameras(jax.random.PRNGKey(0), batch_size=n, width=width, target=target, **ranges)
  chex.assert_trees_all_equal(cams, same)
  other = sample_cameras(jax.random.PRNGKey(1), batch_size=n, width=width, target=target, **ranges)
  for a, b in zip(
      [cams.c2w[:, :3, 2:], cams.focal, cams.elevation_deg, cams.azimuth_deg, cams.distance],
      [other.c2w[:, :3, 2:], other.focal, other.elevation_deg, other.azimuth_deg, other.distance]):
    assert np.mean(np.asarray(a) != np.asarray(b)) > 0.99


def test_uniform_sphere_rate_moves_cameras_off_the_pole():
  n, key = 8000, jax.random.PRNGKey(5)
  paper = sample_cameras(key, batch_size=n, width=32)
  chex.assert_trees_all_equal(paper, sample_cameras(key, batch_size=n, width=32,
                                                    uniform_sphere_rate=0.0))
  overhead = {}
  for rate in (0.5, 1.0):
    cams = sample_cameras(key, batch_size=n, width=32, uniform_sphere_rate=rate)
    el = np.asarray(cams.elevation_deg, np.float64)
    assert np.all((el >= -10.0) & (el <= 90.0))
    np.testing.assert_allclose(np.asarray(cams.azimuth_deg), np.asarray(paper.azimuth_deg))
    _check_pose(np.asarray(cams.c2w, np.float64), np.asarray(cams.c2w, np.float64)[:, :3, 3],
                np.zeros((n, 3)))
    overhead[rate] = np.mean(el > 60.0)
  # Above 60 deg: 30/100 of the angle range; (1 - sin 60) / (1 + sin 10) = 0.114 of the area.
  assert abs(np.mean(np.asarray(paper.elevation_deg) > 60.0) - 0.300) < 0.02
  assert abs(overhead[1.0] - 0.114) < 0.015
  assert abs(overhead[0.5] - 0.207) < 0.02


def test_sample_cameras_straight_overhead():
  # Elevation exactly 90 (straight overhead) still gives a proper pose looking down at the target.
  cams = sample_cameras(jax.random.PRNGKey(4),
                        batch_size=8,
                        width=32,
                        elevation_range_deg=(90.0, 90.0))
  c2w = np.asarray(cams.c2w, np.float64)
  assert np.all(np.isfinite(c2w))
  _check_pose(c2w, c2w[:, :3, 3], np.zeros((8, 3)))
  np.testing.assert_allclose(-c2w[:, :3, 2], np.broadcast_to([0.0, 0.0, -1.0], (8, 3)), atol=1e-6)


@pytest.mark.parametrize('elevation,azimuth,expected', [
    (0.0, 0.0, 'front'),
    (0.0, 44.0, 'front'),
    (0.0, -44.0, 'front'),
    (0.0, 316.0, 'front'),
    (0.0, 45.0, 'front'),
    (0.0, 46.0, 'side'),
    (0.0, 90.0, 'side'),
    (0.0, 134.0, 'side'),
    (0.0, 135.0, 'back'),
    (0.0, 180.0, 'back'),
    (0.0, -170.0, 'back'),
    (0.0, 225.0, 'back'),
    (0.0, 226.0, 'side'),
    (0.0, 300.0, 'side'),
    (0.0, 720.0 + 10.0, 'front'),
    (60.0, 0.0, 'front'),
    (59.0, 0.0, 'front'),
    (61.0, 0.0, 'overhead'),
    (61.0, 180.0, 'overhead'),
    (89.0, 90.0, 'overhead'),
    (-10.0, 180.0, 'back'),
])
def test_view_labels(elevation, azimuth, expected):
  label = view_labels(elevation, azimuth)
  assert camera.VIEW_NAMES[int(label)] == expected


def test_view_labels_vectorised_and_dtype():
  el = np.array([[0.0, 0.0, 0.0], [70.0, 10.0, 0.0]])
  az = np.array([[0.0, 90.0, 180.0], [180.0, 270.0, 359.0]])
  labels = view_labels(el, az)
  chex.assert_type(labels, jnp.int32)
  np.testing.assert_array_equal(labels, [[0, 1, 2], [3, 1, 0]])
  # Custom thresholds.
  np.testing.assert_array_equal(
      view_labels(np.array([0.0, 0.0, 35.0]),
                  np.array([50.0, 140.0, 0.0]),
                  overhead_min_deg=30.0,
                  front_half_width_deg=60.0), [0, 2, 3])


def test_orbit_cameras():
  n, el, dist, focal, start = 8, 15.0, 2.5, 100.0, 10.0
  cams = orbit_cameras(n, elevation_deg=el, distance=dist, focal=focal, start_azimuth_deg=start)
  az = np.asarray(cams.azimuth_deg, np.float64)
  np.testing.assert_allclose(az, np.mod(start + 45.0 * np.arange(n), 360.0), atol=1e-4)
  np.testing.assert_allclose(_angle_diff(np.roll(az, -1), az), 45.0, atol=1e-4)
  np.testing.assert_allclose(cams.elevation_deg, el)
  np.testing.assert_allclose(cams.distance, dist)
  np.testing.assert_allclose(cams.focal, focal)
  c2w = np.asarray(cams.c2w, np.float64)
  el_pos, az_pos, dist_pos = _spherical(c2w[:, :3, 3])
  np.testing.assert_allclose(el_pos, el, atol=1e-4)
  np.testing.assert_allclose(dist_pos, dist, rtol=1e-6)
  assert np.all(_angle_diff(az_pos, az) < 1e-3)
  _check_pose(c2w, c2w[:, :3, 3], np.zeros((n, 3)))
  # Front camera of a start-0 orbit sits on +x.
  front = orbit_cameras(4, elevation_deg=0.0, distance=2.0, focal=1.0)
  np.testing.assert_allclose(front.c2w[0, :3, 3], [2.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(front.c2w[1, :3, 3], [0.0, 2.0, 0.0], atol=1e-6)
