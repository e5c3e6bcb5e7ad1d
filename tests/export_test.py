"""Tests for dreamfusion_jax.export: grids, marching cubes on an analytic sphere, files, videos."""

import functools

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from dreamfusion_jax import export

# Compile without XLA's CPU optimisations: these graphs are tiny, compiling dominates.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})

CENTER = np.array([0.1, -0.2, 0.05])
RADIUS = 0.5
BOUND = 1.0
MAX_DENSITY = 50.0
RED = (255, 0, 0, 255)
BLUE = (0, 0, 255, 255)


@jit
def sphere_density(points):
  """An off-centre soft ball: MAX_DENSITY inside, 0 outside, MAX_DENSITY / 2 at |x - c| = r."""
  distance = jnp.linalg.norm(points - jnp.asarray(CENTER, jnp.float32), axis=-1)
  return MAX_DENSITY * jax.nn.sigmoid(20.0 * (RADIUS - distance))


def red_right_blue_left(points):
  """Red where x > c_x, else blue: float32 [N, 3] -> [N, 3]."""
  right = points[:, :1] > CENTER[0]
  return jnp.where(right, jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 1.0]))


@pytest.fixture(scope='module')
def sphere_grid():
  return export.density_grid(sphere_density, 96, BOUND)


@pytest.fixture(scope='module')
def sphere_mesh(sphere_grid):
  return export.extract_mesh(sphere_grid, BOUND, MAX_DENSITY / 2, color_fn=red_right_blue_left)


def test_density_grid_chunks_and_indexing():
  resolution, bound = 10, 1.5

  def fn(points):  # Distinct per axis, so a transposed grid would fail.
    return points[:, 0] + 10.0 * points[:, 1] + 100.0 * points[:, 2]

  grid = export.density_grid(jit(fn), resolution, bound, chunk_size=77)  # 1000 % 77 != 0.
  assert grid.shape == (resolution,) * 3 and grid.dtype == np.float32
  axis = np.linspace(-bound, bound, resolution)
  x, y, z = np.meshgrid(axis, axis, axis, indexing='ij')
  points = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)
  np.testing.assert_allclose(grid, np.asarray(fn(points)).reshape(grid.shape), atol=1e-4)
  np.testing.assert_allclose(grid[3, 0, 0] - grid[2, 0, 0], 2 * bound / (resolution - 1),
                             rtol=1e-4)


def test_sphere_mesh_geometry(sphere_mesh):
  assert sphere_mesh.is_watertight
  assert sphere_mesh.volume > 0  # Outward winding gives a positive signed volume.
  np.testing.assert_allclose(sphere_mesh.volume, 4.0 / 3.0 * np.pi * RADIUS**3, rtol=0.03)
  np.testing.assert_allclose(sphere_mesh.center_mass, CENTER, atol=0.01)
  np.testing.assert_allclose(sphere_mesh.centroid, CENTER, atol=0.01)
  radial = np.linalg.norm(sphere_mesh.vertices - CENTER, axis=-1)
  np.testing.assert_allclose(radial, RADIUS, atol=0.01)
  outward = (sphere_mesh.vertices - CENTER) / radial[:, None]
  assert np.mean(np.sum(sphere_mesh.vertex_normals * outward, axis=-1)) > 0.9
  assert np.all(np.abs(sphere_mesh.vertices) <= BOUND)


def test_vertex_colors_follow_color_fn(sphere_mesh):
  colors = sphere_mesh.visual.vertex_colors
  x = sphere_mesh.vertices[:, 0]
  clear = np.abs(x - CENTER[0]) > 1e-4  # float32 rounding decides vertices on the plane.
  assert colors.shape == (len(x), 4)
  assert np.all(colors[clear & (x > CENTER[0])] == RED)
  assert np.all(colors[clear & (x < CENTER[0])] == BLUE)
  assert np.sum(x > CENTER[0]) > 100 and np.sum(x < CENTER[0]) > 100


def test_write_mesh_round_trips(sphere_mesh, tmp_path):
  paths = export.write_mesh(sphere_mesh, tmp_path / 'out', name='ball')
  assert sorted(paths) == ['glb', 'obj', 'ply']
  for fmt, path in paths.items():
    assert path.name == f'ball.{fmt}' and path.is_file()
    loaded = trimesh.load(path, force='mesh')
    assert len(loaded.faces) == len(sphere_mesh.faces) > 0, fmt
    if fmt != 'obj':  # OBJ readers may split or merge vertices; faces are what must survive.
      assert len(loaded.vertices) == len(sphere_mesh.vertices), fmt
    np.testing.assert_allclose(loaded.volume, sphere_mesh.volume, rtol=1e-3, err_msg=fmt)
    assert {tuple(c) for c in loaded.visual.vertex_colors} == {RED, BLUE}, fmt
  ply = trimesh.load(paths['ply'], force='mesh')
  np.testing.assert_array_equal(ply.visual.vertex_colors, sphere_mesh.visual.vertex_colors)


def test_density_beyond_the_render_sphere_is_left_out():
  points = jnp.array([[0.0, 0.0, 0.5], [0.6, 0.6, 0.0], [0.0, 0.0, -0.7]])
  values = jnp.array([1.0, 2.0, 3.0])
  np.testing.assert_array_equal(export.inside_sphere(values, points, 0.7), [1.0, 0.0, 3.0])
  np.testing.assert_array_equal(export.inside_sphere(values, points, 0.0), values)


@pytest.mark.parametrize('value, hint', [(0.0, 'lower'), (40.0, 'raise')])
def test_constant_grid_raises(value, hint):
  grid = np.full((8, 8, 8), value, np.float32)
  with pytest.raises(export.ExportError, match=f'threshold.*{hint} the threshold'):
    export.extract_mesh(grid, BOUND, 25.0)


# JAX warns on any fork, here the one that starts ffmpeg to read the video back; it execs at once.
@pytest.mark.filterwarnings('ignore:os.fork:RuntimeWarning')
def test_turntable_video(tmp_path):
  num_frames, height, width, fps = 6, 15, 21, 10

  def render_fn(c2w, focal):
    del focal
    azimuth = np.arctan2(c2w[1, 3], c2w[0, 3]) % (2 * np.pi) / (2 * np.pi)
    shade = np.full((height, width, 3), azimuth, np.float32)
    return [shade, 1.0 - shade]

  frames = export.turntable_frames(render_fn, num_frames, elevation_deg=20.0, distance=3.0,
                                   focal=20.0, height=height, width=width)
  assert frames.shape == (num_frames, height, 2 * width, 3) and frames.dtype == np.uint8
  assert len({frame.tobytes() for frame in frames}) == num_frames
  path = export.write_video(tmp_path / 'turntable.mp4', frames, fps=fps)
  with imageio.get_reader(path, format='FFMPEG') as reader:
    video = np.stack(list(reader.iter_data()))  # list(reader) would trust its infinite len.
  assert video.shape == (num_frames, height + 1, 2 * width, 3)  # Padded to even sizes.
  # The left image's grey level encodes the azimuth: 255 / 6 apart between frames.
  left = video[:, :height, :width].reshape(num_frames, -1).mean(axis=-1)
  np.testing.assert_allclose(left, frames[:, :, :width].reshape(num_frames, -1).mean(-1), atol=3)


def test_write_video_rejects_empty(tmp_path):
  with pytest.raises(export.ExportError, match='frames'):
    export.write_video(tmp_path / 'empty.mp4', np.zeros((0, 4, 4, 3), np.uint8))
