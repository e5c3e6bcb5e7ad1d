"""Tests for dreamfusion_jax.data.synthetic: exact intersections, rendering, dataset writing, CLI."""

import json
import math

import numpy as np
import pytest

from dreamfusion_jax.data import blender
from dreamfusion_jax.data import primitives
from dreamfusion_jax.data import synthetic

RED = (0.9, 0.2, 0.1)


def _ray(origin, direction):
  """One ray as float64 [1, 3] origin and direction arrays."""
  return np.array([origin], np.float64), np.array([direction], np.float64)


def _assert_hit(result, t_expected, normal_expected, atol=1e-9):
  """Check the single-ray (t [1], normals [1, 3]) ``result`` against the analytic values."""
  t, n = result
  np.testing.assert_allclose(t[0], t_expected, atol=atol)
  np.testing.assert_allclose(n[0], normal_expected, atol=max(atol, 1e-7))


def test_sphere_silhouette_has_analytic_area():
  r, dist, f, size = 0.5, 4.0, 200.0, 128
  sphere = primitives.Sphere((0.0, 0.0, 0.0), r, RED)
  rgba = synthetic.render_view([sphere], synthetic.orbit_pose(dist, 25.0, 40.0), f, size, size)
  area = np.sum(rgba[..., 3] > 0.5)
  expected = math.pi * (f * r / math.sqrt(dist**2 - r**2)) ** 2
  assert abs(area - expected) / expected < 0.02


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


def test_colour_is_view_independent():
  scene = [
    primitives.Sphere((0, 0, 0), 0.5, RED),
    primitives.Box((0, 2, 0), (0.2, 0.2, 0.2), 0.0, (0, 1, 0)),
  ]
  point = 0.5 * np.array([1.0, 0.0, 0.0])
  eyes = np.array([[4.0, 1.0, 0.5], [4.0, -1.5, 1.0]])
  rgb, hit, depth = synthetic.render_rays(scene, eyes, point - eyes)
  assert hit.all()
  np.testing.assert_allclose(depth, np.linalg.norm(point - eyes, axis=1), atol=1e-5)
  np.testing.assert_allclose(rgb[0], rgb[1], atol=1e-6)
  light = np.array(synthetic.DEFAULT_LIGHT_DIR)
  np.testing.assert_allclose(rgb[0], np.array(RED) * (0.3 + 0.7 * max(0.0, light[0])), atol=1e-6)


def test_render_view_background_transparent_and_nearest_wins():
  near = primitives.Sphere((0, 0, 0), 0.5, (1, 0, 0))
  far = primitives.Sphere((-1.5, 0, 0), 0.9, (0, 0, 1))
  rgba = synthetic.render_view([far, near], synthetic.look_at([4, 0, 0]), 40.0, 33, 33)
  assert rgba.dtype == np.float32 and rgba.shape == (33, 33, 4)
  assert rgba[0, 0, 3] == 0 and np.all(rgba[0, 0] == 0)
  centre = rgba[16, 16]
  assert centre[3] == 1 and centre[0] > 0 and centre[2] == 0
  # Partially covered edge pixels exist (anti-aliasing).
  assert np.any((rgba[..., 3] > 0) & (rgba[..., 3] < 1))


def test_look_at_conventions():
  c2w = synthetic.look_at([0, -4, 0])
  np.testing.assert_allclose(c2w[:3, 2], [0, -1, 0], atol=1e-12)  # camera looks down -z, towards +y
  np.testing.assert_allclose(c2w[:3, 1], [0, 0, 1], atol=1e-12)  # image up is world up
  np.testing.assert_allclose(c2w[:3, 0], [1, 0, 0], atol=1e-12)  # image right
  np.testing.assert_allclose(np.linalg.det(c2w[:3, :3]), 1.0)


def test_sample_train_poses_ranges():
  poses = synthetic.sample_train_poses(np.random.default_rng(0), 50, radius=3.0)
  eyes = poses[:, :3, 3]
  np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), 3.0)
  elevations = np.degrees(np.arcsin(eyes[:, 2] / 3.0))
  assert elevations.min() >= 10 - 1e-9 and elevations.max() <= 70 + 1e-9
  forward = -poses[:, :3, 2]
  np.testing.assert_allclose(forward, -eyes / 3.0, atol=1e-12)


def test_random_scene_is_distinct_and_separated():
  for seed in range(5):
    scene = synthetic.random_scene(np.random.default_rng(seed), 5)
    assert sorted(p.kind for p in scene) == sorted(primitives.KINDS)
    spheres = [primitives.bounding_sphere(p) for p in scene]
    for i, (ci, ri) in enumerate(spheres):
      assert np.linalg.norm(ci) + ri <= 1.0 + 1e-9
      for cj, rj in spheres[i + 1 :]:
        assert np.linalg.norm(ci - cj) >= ri + rj - 1e-9
    colours = np.array([p.albedo for p in scene])
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + np.eye(5)
    assert gaps.min() > 0.2


def test_write_scene_round_trip(tmp_path):
  sphere = primitives.Sphere((0.0, 0.0, 0.0), 0.5, RED)
  # A narrow field of view keeps the centre pixel's sub-pixel rays close to the optical axis.
  size, angle = 21, 0.25
  poses = synthetic.write_scene(
    tmp_path,
    [sphere],
    resolution=size,
    num_train=3,
    num_val=2,
    num_test=4,
    camera_angle_x=angle,
    seed=1,
  )
  meta = json.loads((tmp_path / 'transforms_test.json').read_text())
  assert meta['camera_angle_x'] == angle
  assert meta['frames'][1]['file_path'] == './test/r_1'
  assert (tmp_path / 'test' / 'r_1.png').is_file()
  assert synthetic.load_scene(tmp_path / 'scene.json') == [sphere]
  focal = 0.5 * size / math.tan(0.5 * angle)
  light = np.array(synthetic.DEFAULT_LIGHT_DIR)
  for split, n in (('train', 3), ('val', 2), ('test', 4)):
    views = blender.load_split(tmp_path, split)
    assert views.images.shape == (n, size, size, 3) and views.alphas.shape == (n, size, size)
    assert views.c2w.shape == (n, 4, 4)
    np.testing.assert_allclose(views.c2w, poses[split], atol=1e-6)
    assert views.focal == pytest.approx(focal)
    for image, c2w in zip(views.images, poses[split]):
      # The centre pixel looks straight at the sphere centre: normal = direction to the camera.
      normal = c2w[:3, 3] / np.linalg.norm(c2w[:3, 3])
      expected = np.array(RED) * (0.3 + 0.7 * max(0.0, normal @ light))
      np.testing.assert_allclose(image[size // 2, size // 2], expected, atol=0.015)
      np.testing.assert_allclose(image[0, 0], 1.0)  # white background
  val, test = blender.load_split(tmp_path, 'val'), blender.load_split(tmp_path, 'test')
  assert not np.any(np.all(np.isclose(val.c2w[:, None], test.c2w[None], atol=1e-4), axis=(2, 3)))


def test_cli_writes_scene(tmp_path, capsys):
  out = tmp_path / 'scene'
  args = [
    '--out',
    str(out),
    '--resolution',
    '8',
    '--num_objects',
    '2',
    '--num_train',
    '2',
    '--num_val',
    '1',
    '--num_test',
    '1',
    '--seed',
    '3',
  ]
  assert synthetic.main(args) == 0
  assert 'wrote 2/1/1 views' in capsys.readouterr().out
  for split, n in (('train', 2), ('val', 1), ('test', 1)):
    frames = json.loads((out / f'transforms_{split}.json').read_text())['frames']
    assert len(frames) == n and all((out / (f['file_path'] + '.png')).is_file() for f in frames)
  assert len(json.loads((out / 'scene.json').read_text())['primitives']) == 2


@pytest.mark.parametrize(
  'flag, value',
  [
    ('--resolution', '4'),
    ('--num_objects', '0'),
    ('--num_objects', '6'),
    ('--num_train', '0'),
    ('--num_val', '0'),
    ('--num_test', '-1'),
    ('--resolution', 'abc'),
  ],
)
def test_cli_rejects_bad_values(tmp_path, capsys, flag, value):
  with pytest.raises(SystemExit) as info:
    synthetic.main(['--out', str(tmp_path / 'x'), flag, value])
  assert info.value.code == 2
  assert flag in capsys.readouterr().err
  assert not (tmp_path / 'x').exists()
