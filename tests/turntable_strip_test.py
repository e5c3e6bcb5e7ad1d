"""docs/turntable_strip.py: the README's picture of a run's turntable."""

import pathlib
import runpy
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np

from dreamfusion_jax import export

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'turntable_strip.py'


def _frames(count, panels, height=8, width=6):
  """uint8 [count, H, W * panels, 3] frames whose panel p of frame f is the colour (f, p, 7)."""
  frames = np.zeros((count, height, width * panels, 3), np.uint8)
  for f in range(count):
    for p in range(panels):
      frames[f, :, p * width:(p + 1) * width] = (20 * f, 60 * p, 200)
  return frames


def test_strip_puts_frames_in_columns_and_panels_in_rows():
  strip = runpy.run_path(str(SCRIPT))['strip']
  image = strip(_frames(10, 3), num_frames=5, panels=3, scale=2)
  assert image.shape == (3 * 8 * 2, 5 * 6 * 2, 3)
  for row in range(3):
    for column in range(5):
      tile = image[row * 16:(row + 1) * 16, column * 12:(column + 1) * 12]
      np.testing.assert_array_equal(tile, np.broadcast_to((20 * 2 * column, 60 * row, 200),
                                                          tile.shape))


def test_script_reads_a_written_turntable(tmp_path):
  frames = _frames(12, 3, height=16, width=16)
  video = export.write_video(tmp_path / 'turntable.mp4', frames, fps=10)
  out = tmp_path / 'strip.png'
  subprocess.run([sys.executable, str(SCRIPT), '--video', str(video), '--out', str(out),
                  '--frames', '4', '--scale', '1'], check=True, capture_output=True)
  image = imageio.imread(out)
  assert image.shape == (3 * 16, 4 * 16, 3)
  for row in range(3):
    for column in range(4):
      tile = image[row * 16 + 4:(row + 1) * 16 - 4, column * 16 + 4:(column + 1) * 16 - 4]
      expected = (20 * 3 * column, 60 * row, 200)  # Frames 0, 3, 6, 9 of 12.
      assert np.abs(tile.mean(axis=(0, 1)) - expected).max() < 8, (row, column)


def test_script_refuses_more_frames_than_the_video_has(tmp_path):
  video = export.write_video(tmp_path / 'turntable.mp4', _frames(4, 3, 16, 16), fps=10)
  result = subprocess.run([sys.executable, str(SCRIPT), '--video', str(video), '--out',
                           str(tmp_path / 'strip.png'), '--frames', '9'],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert "between 1 and the video's 4 frames" in result.stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'strip.png').exists()


def test_mesh_row_shows_the_textured_side_each_camera_faces(tmp_path):
  from dreamfusion_jax import texture  # pylint: disable=g-import-not-at-top
  import trimesh  # pylint: disable=g-import-not-at-top
  sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
  red_front = lambda p: np.where(p[:, :1] > 0, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])
  textured = texture.to_trimesh(texture.textured_mesh(sphere, red_front, 128))
  mesh_row = runpy.run_path(str(SCRIPT))['mesh_row']
  export_config = {'video_elevation_deg': 0.0, 'video_distance': 3.0, 'video_fov_deg': 40.0}
  row = mesh_row(textured, export_config, count=4, num_frames=2, height=24, width=24)
  assert row.shape == (24, 48, 3)
  # Frame 0 sits at azimuth 0 (on +x, facing the red half), frame 2 of 4 at 180 (the blue one).
  np.testing.assert_array_equal(row[12, 12], (255, 0, 0))
  np.testing.assert_array_equal(row[12, 36], (0, 0, 255))
  assert np.all(row[0, 0] == 255)  # The background.
