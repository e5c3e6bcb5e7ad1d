"""Tests for dreamfusion_jax.data.synthetic: rendering, poses, dataset writing, CLI.

The ray intersections it renders with are tested in primitives_test; the analytic sphere
silhouette of its renderer in toy_world_test, beside the toy world's.
"""

import json
import math

import numpy as np
import pytest

from dreamfusion_jax.data import blender
from dreamfusion_jax.data import primitives
from dreamfusion_jax.data import synthetic

RED = (0.9, 0.2, 0.1)


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
