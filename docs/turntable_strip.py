"""A PNG strip of a run's turntable: N evenly spaced frames, one row per panel of the video.

    python docs/turntable_strip.py --video /tmp/toy/turntable.mp4 --out docs/toy_turntable.png \
        --mesh /tmp/toy/mesh.glb

The turntable written by a run (dreamfusion_jax.export) shows k panels side by side in every
frame (albedo | normals | textureless); the strip puts the chosen frames in columns and the
panels in rows, each image enlarged `--scale` times (nearest neighbour, so pixels stay sharp).
With `--mesh`, a last row shows the textured mesh.glb from the same cameras (the run's
config.json beside it gives them): points sampled densely on its faces, coloured from its
texture at their UVs and z-buffered, so the row shows what a mesh viewer would.
"""

import argparse
import json
import pathlib

import imageio.v2 as imageio
import numpy as np
import trimesh

from dreamfusion_jax import camera


def strip(frames, num_frames, panels, scale=1):
  """The strip of a turntable.

  Args:
    frames: uint8 [F, H, W * panels, 3] video frames.
    num_frames: int N <= F, frames taken at indices round(i F / N), i = 0 .. N - 1.
    panels: int k, images side by side in each frame.
    scale: int, each pixel becomes scale x scale pixels.

  Returns:
    uint8 [k H scale, N W scale, 3].
  """
  frames = np.asarray(frames)
  count, height, full_width, _ = frames.shape
  if not 1 <= num_frames <= count:
    raise ValueError(f'--frames must be between 1 and the video\'s {count} frames, got '
                     f'{num_frames}')
  if full_width % panels:
    raise ValueError(f'a frame {full_width} px wide does not split into {panels} panels')
  width = full_width // panels
  chosen = frames[np.round(np.arange(num_frames) * count / num_frames).astype(int)]
  # [N, H, k, W, 3] -> [k, H, N, W, 3]: panel rows, frame columns.
  grid = chosen.reshape(num_frames, height, panels, width, 3).transpose(2, 1, 0, 3, 4)
  grid = grid.reshape(panels * height, num_frames * width, 3)
  return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def render_textured_mesh(mesh, c2w, focal, height, width, num_points=400_000, seed=0,
                         background=255):
  """A textured trimesh seen by an OpenGL-style pinhole camera (as camera.generate_rays).

  Args:
    mesh: trimesh.Trimesh with TextureVisuals (uv and a base-colour texture).
    c2w: float [4, 4] camera-to-world; focal: float focal length in pixels.
    height, width: int image size.
    num_points: surface points sampled (area-weighted), each drawn as one pixel.
    seed: int seed of the sampling.
    background: uint8 grey level of empty pixels.

  Returns:
    uint8 [H, W, 3].
  """
  c2w = np.asarray(c2w, np.float64)
  points, face = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
  bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
  uv = np.einsum('nk,nkd->nd', bary, mesh.visual.uv[mesh.faces[face]])
  colors = trimesh.visual.color.uv_to_color(uv, mesh.visual.material.baseColorTexture)[:, :3]
  local = (points - c2w[:3, 3]) @ c2w[:3, :3]  # World to camera: R^T (p - t).
  depth = -local[:, 2]
  ahead = depth > 1e-6
  depth = np.where(ahead, depth, 1.0)
  col = np.floor(local[:, 0] / depth * focal + 0.5 * width).astype(np.int64)
  row = np.floor(-local[:, 1] / depth * focal + 0.5 * height).astype(np.int64)
  ok = ahead & (col >= 0) & (col < width) & (row >= 0) & (row < height)
  pixel, depth, colors = row[ok] * width + col[ok], depth[ok], colors[ok]
  order = np.lexsort((depth, pixel))  # By pixel, nearest first.
  first = order[np.unique(pixel[order], return_index=True)[1]]
  image = np.full((height * width, 3), background, np.uint8)
  image[pixel[first]] = colors[first]
  return image.reshape(height, width, 3)


def mesh_row(mesh, export_config, count, num_frames, height, width):
  """uint8 [H, N W, 3]: the mesh from the cameras of the strip's frames.

  Args:
    mesh: textured trimesh.Trimesh.
    export_config: dict, the run's config.json 'export' section (turntable cameras).
    count: int F, the video's frames; num_frames: int N, the strip's.
    height, width: int, one panel's size.
  """
  cameras = camera.orbit_cameras(count, elevation_deg=export_config['video_elevation_deg'],
                                 distance=export_config['video_distance'],
                                 focal=float(camera.focal_from_fov(
                                     export_config['video_fov_deg'], width)))
  chosen = np.round(np.arange(num_frames) * count / num_frames).astype(int)
  return np.concatenate([render_textured_mesh(mesh, np.asarray(cameras.c2w[i]),
                                              float(cameras.focal[i]), height, width)
                         for i in chosen], axis=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--video', required=True, help='a turntable.mp4 written by a run')
  parser.add_argument('--out', required=True, help='the PNG to write')
  parser.add_argument('--frames', type=int, default=8, help='frames in the strip')
  parser.add_argument('--panels', type=int, default=3, help='images side by side per frame')
  parser.add_argument('--scale', type=int, default=2)
  parser.add_argument('--mesh', default=None,
                      help='the run\'s textured mesh.glb: a last row shows it (optional)')
  args = parser.parse_args()
  video = pathlib.Path(args.video)
  if not video.is_file():
    parser.error(f'--video {video}: no such file (a run writes <workdir>/turntable.mp4)')
  with imageio.get_reader(video, format='FFMPEG') as reader:
    frames = np.stack(list(reader.iter_data()))  # Its len() is inf: list(reader) would fail.
  try:
    image = strip(frames, args.frames, args.panels, args.scale)
  except ValueError as error:
    parser.error(str(error))
  if args.mesh:
    mesh_path = pathlib.Path(args.mesh)
    config_path = mesh_path.parent / 'config.json'
    if not mesh_path.is_file() or not config_path.is_file():
      parser.error(f'--mesh {mesh_path}: needs the file and the run\'s config.json beside it')
    export_config = json.loads(config_path.read_text())['export']
    height, width = frames.shape[1], frames.shape[2] // args.panels
    row = mesh_row(trimesh.load(mesh_path, force='mesh'), export_config, len(frames),
                   args.frames, height, width)
    image = np.concatenate([image, np.repeat(np.repeat(row, args.scale, 0), args.scale, 1)])
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  imageio.imwrite(out, image)
  print(f'{out}: {image.shape[1]} x {image.shape[0]} px, {args.frames} frames of {video}')


if __name__ == '__main__':
  main()
