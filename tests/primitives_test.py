"""Tests for dreamfusion_jax.data.primitives: exact ray intersections with the five shapes."""

import math

import numpy as np
import pytest

from dreamfusion_jax.data import primitives

RED = (0.9, 0.2, 0.1)


def _ray(origin, direction):
  """One ray as float64 [1, 3] origin and direction arrays."""
  return np.array([origin], np.float64), np.array([direction], np.float64)


def _assert_hit(result, t_expected, normal_expected, atol=1e-9):
  """Check the single-ray (t [1], normals [1, 3]) ``result`` against the analytic values."""
  t, n = result
  np.testing.assert_allclose(t[0], t_expected, atol=atol)
  np.testing.assert_allclose(n[0], normal_expected, atol=max(atol, 1e-7))


def test_sphere_head_on():
  c = np.array([0.2, 0.1, 0.3])
  _assert_hit(primitives.intersect_sphere(*_ray(c + [0, 0, 3], [0, 0, -1]), c, 0.5), 2.5, [0, 0, 1])
  # Non-unit direction: t is the ray parameter, not the distance.
  _assert_hit(
    primitives.intersect_sphere(*_ray(c - [3, 0, 0], [2, 0, 0]), c, 0.5), 1.25, [-1, 0, 0]
  )


def test_box_head_on_rotated():
  c, angle = np.array([0.1, -0.2, 0.05]), math.radians(30.0)
  axis = np.array([math.cos(angle), math.sin(angle), 0.0])
  box = dict(center=c, half_sizes=(0.3, 0.2, 0.1), angle=angle)
  _assert_hit(primitives.intersect_box(*_ray(c + 3 * axis, -axis), **box), 2.7, axis)
  _assert_hit(primitives.intersect_box(*_ray(c + [0, 0, 3], [0, 0, -1]), **box), 2.9, [0, 0, 1])


def test_cylinder_side_and_caps():
  c, r, hh = np.array([0.0, 0.3, -0.1]), 0.25, 0.4
  _assert_hit(
    primitives.intersect_cylinder(*_ray(c + [3, 0, 0.1], [-1, 0, 0]), c, r, hh), 3 - r, [1, 0, 0]
  )
  _assert_hit(
    primitives.intersect_cylinder(*_ray(c + [0.1, 0, 3], [0, 0, -1]), c, r, hh), 3 - hh, [0, 0, 1]
  )
  _assert_hit(
    primitives.intersect_cylinder(*_ray(c + [0, -0.1, -3], [0, 0, 1]), c, r, hh), 3 - hh, [0, 0, -1]
  )


def test_cone_side_and_base():
  base, r, h = np.array([0.2, 0.0, -0.3]), 0.3, 0.6
  mid = base + [0, 0, h / 2]
  side_normal = np.array([h, 0, r]) / math.hypot(h, r)
  _assert_hit(
    primitives.intersect_cone(*_ray(mid + [3, 0, 0], [-1, 0, 0]), base, r, h),
    3 - r / 2,
    side_normal,
  )
  _assert_hit(
    primitives.intersect_cone(*_ray(base + [0.1, 0, -2], [0, 0, 1]), base, r, h), 2.0, [0, 0, -1]
  )


def test_torus_head_on():
  c, big, small = np.array([-0.1, 0.2, 0.1]), 0.5, 0.15
  torus = dict(center=c, major_radius=big, minor_radius=small)
  _assert_hit(
    primitives.intersect_torus(*_ray(c + [big, 0, 3], [0, 0, -1]), **torus),
    3 - small,
    [0, 0, 1],
    1e-6,
  )
  _assert_hit(
    primitives.intersect_torus(*_ray(c - [3, 0, 0], [1, 0, 0]), **torus),
    3 - big - small,
    [-1, 0, 0],
    1e-6,
  )
  # Oblique ray through the tube centre line at 45 degrees: distance is exact too.
  target = c + [0, big, 0]
  direction = np.array([0, 1, -1]) / math.sqrt(2)
  t, _ = primitives.intersect_torus(*_ray(target - 3 * direction, direction), **torus)
  np.testing.assert_allclose(t[0], 3 - small, atol=1e-6)


@pytest.mark.parametrize(
  'prim',
  [
    primitives.Sphere((0, 0, 0), 0.5, RED),
    primitives.Box((0, 0, 0), (0.3, 0.3, 0.3), 0.4, RED),
    primitives.Cylinder((0, 0, 0), 0.3, 0.3, RED),
    primitives.Cone((0, 0, -0.3), 0.3, 0.6, RED),
    primitives.Torus((0, 0, 0), 0.5, 0.15, RED),
  ],
)
def test_missing_rays_give_inf(prim):
  origins = np.array([[0, 0, 3], [2, 2, 3], [3, 0, 0], [0.0, 0.0, 3.0]])
  directions = np.array([[0, 0, 1], [0, 0, -1], [0, 1, 0], [1, 0, 0]], np.float64)
  t, normals = primitives.intersect_primitive(prim, origins, directions)
  assert np.all(np.isinf(t))
  assert np.all(normals == 0)


def test_torus_hole_is_empty():
  t, _ = primitives.intersect_torus(*_ray([0, 0, 3], [0, 0, -1]), (0, 0, 0), 0.5, 0.15)
  assert np.isinf(t[0])


def test_inside_matches_the_exact_volume_and_the_rotation():
  rng = np.random.default_rng(0)
  points = rng.uniform(-0.5, 0.5, size=(400_000, 3))
  box = primitives.Box(center=(0.05, 0.0, 0.0), half_sizes=(0.3, 0.1, 0.2), angle=0.6,
                       albedo=(1, 1, 1))
  cone = primitives.Cone(base_center=(0.0, 0.0, -0.2), radius=0.3, height=0.5, albedo=(1, 1, 1))
  for solid in (box, cone):
    estimate = primitives.inside(solid, points).mean()  # The cube [-0.5, 0.5]^3 has volume 1.
    assert estimate == pytest.approx(primitives.volume(solid), rel=0.02)
  # The box's long axis turned by 0.6 rad: a point along it is inside, one along x is not.
  along = 0.25 * np.array([[np.cos(0.6), np.sin(0.6), 0.0]]) + box.center
  assert primitives.inside(box, along)[0] and not primitives.inside(box, [[0.3, 0.0, 0.0]])[0]
