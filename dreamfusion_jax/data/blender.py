"""Loader for scenes in the Blender ``nerf_synthetic`` layout.

A scene folder holds ``transforms_<split>.json`` files of the form
``{"camera_angle_x": float, "frames": [{"file_path": "./train/r_0", "transform_matrix": 4x4}, ...]}``
next to the PNG images they name. Matrices are camera-to-world in the OpenGL
convention (camera looks down -z, +y up), which is the package convention, so
they are used unchanged. Works for the original scenes and for the ones written
by ``dreamfusion_jax.data.synthetic``.
"""

import dataclasses
import json
import math
import pathlib

import numpy as np
from PIL import Image


class SceneError(ValueError):
  """A scene folder, its transforms file or one of its images is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class Views:
  """Posed images of one split.

  images: float32 [N, H, W, 3] in [0, 1], RGBA composited onto the background colour.
  alphas: float32 [N, H, W] in [0, 1], coverage (1 for images without alpha).
  c2w: float32 [N, 4, 4] camera-to-world matrices (OpenGL convention).
  focal: float focal length in pixels (of the possibly downsampled images).
  height, width: int image size H, W.
  file_paths: tuple of N str, image paths on disk.
  """

  images: np.ndarray
  alphas: np.ndarray
  c2w: np.ndarray
  focal: float
  height: int
  width: int
  file_paths: tuple = ()


def read_transforms(root, split):
  """Parse and validate ``transforms_<split>.json``.

  Args: root str or Path scene folder; split str such as "train", "val" or "test".
  Returns: (camera_angle_x float radians, frames list of dicts each with "file_path" str and
    "transform_matrix" float64 [4, 4] array).
  Raises: SceneError for a missing folder or file, invalid JSON, or missing/ill-shaped fields.
  """
  root = pathlib.Path(root)
  if not root.exists():
    raise SceneError(
      f'scene folder {root} does not exist; pass the folder that holds transforms_{split}.json'
    )
  if not root.is_dir():
    raise SceneError(
      f'scene path {root} is not a folder; pass the folder that holds transforms_{split}.json'
    )
  path = root / f'transforms_{split}.json'
  if not path.is_file():
    raise SceneError(
      f'missing {path.name} in {root}; expected a Blender nerf_synthetic scene folder '
      f'(write one with python -m dreamfusion_jax.data.synthetic --out DIR)'
    )
  try:
    meta = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise SceneError(
      f'{path} is not valid JSON ({e.msg} at line {e.lineno}); fix or regenerate the file'
    ) from e
  if not isinstance(meta, dict) or 'camera_angle_x' not in meta:
    raise SceneError(f'{path} has no camera_angle_x (horizontal field of view in radians); add it')
  frames = meta.get('frames')
  if not isinstance(frames, list) or not frames:
    raise SceneError(
      f'{path} has no frames list (or it is empty); add frames with file_path and transform_matrix'
    )
  parsed = []
  for k, frame in enumerate(frames):
    for key in ('file_path', 'transform_matrix'):
      if not isinstance(frame, dict) or key not in frame:
        raise SceneError(
          f'{path}: frame {k} has no {key}; every frame needs file_path and transform_matrix'
        )
    matrix = np.asarray(frame['transform_matrix'], np.float64)
    if matrix.shape != (4, 4):
      raise SceneError(f'{path}: frame {k} transform_matrix has shape {matrix.shape}, expected 4x4')
    parsed.append({'file_path': str(frame['file_path']), 'transform_matrix': matrix})
  return float(meta['camera_angle_x']), parsed


def resolve_image_path(root, file_path):
  """Path of the PNG named by a frame's str ``file_path`` (with or without "./" and ".png") under ``root``."""
  rel = file_path[2:] if file_path.startswith('./') else file_path
  path = pathlib.Path(root) / rel
  return path if path.suffix.lower() == '.png' else path.with_name(path.name + '.png')


def load_rgba(path):
  """float32 [H, W, 4] straight RGBA in [0, 1] from the image at ``path``; alpha is 1 for images without alpha."""
  try:
    with Image.open(path) as img:
      rgba = np.asarray(img.convert('RGBA'), np.float32) / 255.0
  except FileNotFoundError as e:
    raise SceneError(
      f'missing image {path}; the transforms file names it, so add it or remove its frame'
    ) from e
  except OSError as e:
    raise SceneError(f'cannot read image {path} ({e}); replace it with a valid PNG') from e
  return rgba


def premultiply(rgba):
  """float32 [..., 4] premultiplied RGBA (rgb * a, a) from straight float [..., 4] ``rgba``."""
  return np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1).astype(np.float32)


def downsample_premultiplied(rgba, factor):
  """Area-average float [H, W, 4] premultiplied ``rgba`` by int ``factor`` -> float32 [H/factor, W/factor, 4]."""
  h, w = rgba.shape[:2]
  if h % factor or w % factor:
    raise SceneError(
      f'downsample={factor} does not divide the image size {h}x{w}; choose a divisor of both'
    )
  return rgba.reshape(h // factor, factor, w // factor, factor, 4).mean(
    axis=(1, 3), dtype=np.float32
  )


def composite(premultiplied, background=(1.0, 1.0, 1.0)):
  """float32 [..., 3] colour of float [..., 4] premultiplied RGBA over float [3] ``background`` (rgb*a + bg*(1-a))."""
  bg = np.asarray(background, np.float32)
  return (premultiplied[..., :3] + bg * (1.0 - premultiplied[..., 3:])).astype(np.float32)


def load_split(path, split, background=(1.0, 1.0, 1.0), downsample=1, max_views=None):
  """Load one split of a Blender ``nerf_synthetic`` scene.

  Args: path str or Path scene folder; split str ("train", "val", "test"); background float [3]
    colour the RGBA images are composited onto; downsample int factor (area averaging of
    premultiplied RGBA, focal divided by it); max_views int or None, keep only the first frames.
  Returns: Views with images float32 [N, H, W, 3], alphas float32 [N, H, W], c2w float32 [N, 4, 4],
    focal float pixels, height and width ints.
  Raises: SceneError (a ValueError) with a one-line message naming what is missing or wrong.
  """
  if int(downsample) != downsample or downsample < 1:
    raise SceneError(f'downsample must be a positive integer, got {downsample!r}')
  if max_views is not None and max_views < 1:
    raise SceneError(f'max_views must be at least 1 or None, got {max_views!r}')
  downsample = int(downsample)
  camera_angle_x, frames = read_transforms(path, split)
  frames = frames[:max_views] if max_views is not None else frames
  paths = [resolve_image_path(path, f['file_path']) for f in frames]
  images, alphas, size = [], [], None
  for image_path in paths:
    rgba = premultiply(load_rgba(image_path))
    if size is None:
      size = rgba.shape[:2]
    elif rgba.shape[:2] != size:
      raise SceneError(
        f'image {image_path} is {rgba.shape[1]}x{rgba.shape[0]} but earlier images are '
        f'{size[1]}x{size[0]}; all images of a split must have the same size'
      )
    if downsample > 1:
      rgba = downsample_premultiplied(rgba, downsample)
    images.append(composite(rgba, background))
    alphas.append(rgba[..., 3])
  height, width = images[0].shape[:2]
  return Views(
    images=np.stack(images),
    alphas=np.stack(alphas),
    c2w=np.stack([f['transform_matrix'] for f in frames]).astype(np.float32),
    focal=0.5 * width / math.tan(0.5 * camera_angle_x),
    height=int(height),
    width=int(width),
    file_paths=tuple(str(p) for p in paths),
  )
