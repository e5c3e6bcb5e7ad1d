"""Tests for dreamfusion_jax.data.blender: loading, compositing, downsampling and error messages."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from dreamfusion_jax.data import blender

ANGLE = 0.7


def _write_scene(root, images, split='train', file_paths=None, meta_extra=None):
  """Write uint8 [H, W, 3 or 4] ``images`` and a transforms file in nerf_synthetic layout under ``root``."""
  (root / split).mkdir(parents=True, exist_ok=True)
  frames = []
  for k, image in enumerate(images):
    Image.fromarray(image).save(root / split / f'r_{k}.png')
    path = file_paths[k] if file_paths else f'./{split}/r_{k}'
    c2w = np.eye(4)
    c2w[:3, 3] = [0, 0, 4 + k]
    frames.append({'file_path': path, 'transform_matrix': c2w.tolist()})
  meta = {'camera_angle_x': ANGLE, 'frames': frames, **(meta_extra or {})}
  (root / f'transforms_{split}.json').write_text(json.dumps(meta))


def _solid(h, w, rgba):
  """uint8 [h, w, len(rgba)] image filled with ``rgba``."""
  return np.tile(np.array(rgba, np.uint8), (h, w, 1))


def test_loads_views_and_file_path_variants(tmp_path):
  images = [_solid(4, 6, (255, 0, 0, 255))] * 3
  _write_scene(tmp_path, images, file_paths=['./train/r_0', 'train/r_1.png', './train/r_2.png'])
  views = blender.load_split(tmp_path, 'train')
  assert views.images.shape == (3, 4, 6, 3) and views.images.dtype == np.float32
  assert (
    views.alphas.shape == (3, 4, 6)
    and views.c2w.shape == (3, 4, 4)
    and views.c2w.dtype == np.float32
  )
  assert (views.height, views.width) == (4, 6)
  assert views.focal == pytest.approx(0.5 * 6 / math.tan(0.5 * ANGLE))
  np.testing.assert_allclose(views.c2w[2, :3, 3], [0, 0, 6])
  np.testing.assert_allclose(views.images[..., 0], 1.0)
  np.testing.assert_allclose(views.images[..., 1:], 0.0)


def test_max_views(tmp_path):
  _write_scene(tmp_path, [_solid(4, 4, (0, 0, 0, 255))] * 3)
  assert blender.load_split(tmp_path, 'train', max_views=2).images.shape[0] == 2


def test_white_compositing_of_half_transparent_pixel(tmp_path):
  _write_scene(tmp_path, [_solid(2, 2, (255, 0, 0, 128))])
  views = blender.load_split(tmp_path, 'train')
  a = 128 / 255
  np.testing.assert_allclose(views.alphas[0], a, atol=1e-6)
  np.testing.assert_allclose(views.images[0, 0, 0], [1.0, 1 - a, 1 - a], atol=1e-6)
  black = blender.load_split(tmp_path, 'train', background=(0, 0, 0))
  np.testing.assert_allclose(black.images[0, 0, 0], [a, 0, 0], atol=1e-6)


def test_rgb_png_has_unit_alpha(tmp_path):
  _write_scene(tmp_path, [_solid(2, 2, (10, 20, 30))])
  views = blender.load_split(tmp_path, 'train')
  np.testing.assert_allclose(views.alphas, 1.0)
  np.testing.assert_allclose(views.images[0, 1, 1], np.array([10, 20, 30]) / 255, atol=1e-6)


def test_downsample_halves_size_and_focal_with_area_average(tmp_path):
  image = _solid(4, 6, (0, 0, 0, 0))
  image[0, 0] = (255, 0, 0, 255)  # one opaque red pixel in the top-left 2x2 block
  _write_scene(tmp_path, [image])
  full = blender.load_split(tmp_path, 'train')
  half = blender.load_split(tmp_path, 'train', downsample=2)
  assert (half.height, half.width) == (2, 3) and half.images.shape == (1, 2, 3, 3)
  assert half.focal == pytest.approx(full.focal / 2)
  np.testing.assert_allclose(half.alphas[0, 0, 0], 0.25)
  np.testing.assert_allclose(half.images[0, 0, 0], [1.0, 0.75, 0.75], atol=1e-6)
  np.testing.assert_allclose(half.images[0, 1, 2], 1.0)


def test_downsample_must_divide_size(tmp_path):
  _write_scene(tmp_path, [_solid(4, 6, (0, 0, 0, 255))])
  with pytest.raises(blender.SceneError, match='downsample=4'):
    blender.load_split(tmp_path, 'train', downsample=4)


def test_missing_folder(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(ValueError, match=f'{missing}.*does not exist'):
    blender.load_split(missing, 'train')


def test_path_is_a_file(tmp_path):
  file = tmp_path / 'file.txt'
  file.write_text('x')
  with pytest.raises(blender.SceneError, match='not a folder'):
    blender.load_split(file, 'train')


def test_missing_transforms_file(tmp_path):
  _write_scene(tmp_path, [_solid(2, 2, (0, 0, 0, 255))], split='train')
  with pytest.raises(ValueError, match='transforms_val.json'):
    blender.load_split(tmp_path, 'val')


def test_missing_image(tmp_path):
  _write_scene(tmp_path, [_solid(2, 2, (0, 0, 0, 255))] * 2)
  (tmp_path / 'train' / 'r_1.png').unlink()
  with pytest.raises(ValueError, match=r'missing image .*r_1\.png'):
    blender.load_split(tmp_path, 'train')


def test_inconsistent_sizes(tmp_path):
  _write_scene(tmp_path, [_solid(2, 2, (0, 0, 0, 255)), _solid(3, 2, (0, 0, 0, 255))])
  with pytest.raises(blender.SceneError, match=r'r_1\.png is 2x3 .* same size'):
    blender.load_split(tmp_path, 'train')


def test_bad_json_fields(tmp_path):
  _write_scene(tmp_path, [_solid(2, 2, (0, 0, 0, 255))])
  path = tmp_path / 'transforms_train.json'
  meta = json.loads(path.read_text())
  path.write_text(json.dumps({'frames': meta['frames']}))
  with pytest.raises(blender.SceneError, match='camera_angle_x'):
    blender.load_split(tmp_path, 'train')
  path.write_text(json.dumps({'camera_angle_x': ANGLE, 'frames': [{'file_path': './train/r_0'}]}))
  with pytest.raises(blender.SceneError, match='transform_matrix'):
    blender.load_split(tmp_path, 'train')
  path.write_text(
    json.dumps(
      {
        'camera_angle_x': ANGLE,
        'frames': [{'file_path': './train/r_0', 'transform_matrix': [[1, 0], [0, 1]]}],
      }
    )
  )
  with pytest.raises(blender.SceneError, match='4x4'):
    blender.load_split(tmp_path, 'train')
  path.write_text('{not json')
  with pytest.raises(blender.SceneError, match='not valid JSON'):
    blender.load_split(tmp_path, 'train')


def test_error_messages_are_one_line(tmp_path):
  with pytest.raises(blender.SceneError) as info:
    blender.load_split(tmp_path, 'test')
  assert '\n' not in str(info.value)
