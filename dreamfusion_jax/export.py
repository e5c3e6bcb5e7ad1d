"""Exporting a trained scene: density grids, marching-cubes meshes, mesh files, turntable videos.

`export_assets(run, workdir, params)` writes a run's turntable.mp4, mesh.glb and mesh.obj (+
mesh.mtl, texture.png) with the albedo baked into a UV texture (texture.py), and mesh.ply with
vertex colours (the end of every text-to-3D run); `python -m dreamfusion_jax.export --workdir W`
does the same for the newest checkpoint of any run folder.

The mesh is the `threshold` level set of the NeRF density sampled on a regular grid over the cube
[-bound, bound]^3 (world coordinates, world up +z as in `camera`). Its triangles wind
counter-clockwise seen from outside (trimesh's convention), so face and vertex normals point
towards lower density. A surface cut by the cube's faces is left open there.

Letters: R grid vertices per axis, N points, V mesh vertices, F frames, H, W image size.
"""

import pathlib
import warnings

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import skimage.measure
import trimesh

from dreamfusion_jax import build
from dreamfusion_jax import camera
from dreamfusion_jax import texture

MESH_FORMATS = ('glb', 'obj', 'ply')


class ExportError(ValueError):
  """An export that cannot produce a useful file, with a one-line reason and what to change."""


def _evaluate_chunked(fn, count, points_fn, chunk_size):
  """Evaluates a batched point function over `count` points in fixed-size chunks.

  Args:
    fn: function float32 [chunk, 3] -> float [chunk, ...] (ideally jitted: every call has the
      same shape, so it compiles once).
    count: int, number of points N.
    points_fn: function int64 [chunk] point indices -> float32 [chunk, 3] points.
    chunk_size: int, points per call; the last chunk is padded with copies of the last point.

  Returns:
    numpy [N, ...] results in point order.
  """
  chunk = min(chunk_size, count)
  outputs = []
  for start in range(0, count, chunk):
    # Clamping repeats the last point in the padding, so the padded inputs stay in the box.
    indices = np.minimum(np.arange(start, start + chunk), count - 1)
    outputs.append(np.asarray(fn(jnp.asarray(points_fn(indices)))))
  return np.concatenate(outputs)[:count]


def grid_points(indices, resolution, bound):
  """World positions of flat indices into a regular grid over [-bound, bound]^3.

  Args:
    indices: int [N] flat indices into an [R, R, R] array indexed [x, y, z] (C order).
    resolution: int, grid vertices per axis R (>= 2).
    bound: float, half the side of the cube.

  Returns:
    float32 [N, 3] positions; vertex i along an axis sits at -bound + i * 2 bound / (R - 1).
  """
  ijk = np.stack(np.unravel_index(indices, (resolution,) * 3), axis=-1)
  return (-bound + ijk * (2.0 * bound / (resolution - 1))).astype(np.float32)


def density_grid(density_fn, resolution, bound, chunk_size=65536):
  """Samples a density function on the vertices of a regular grid.

  Args:
    density_fn: function float32 [chunk, 3] world positions -> float [chunk] densities (ideally
      jitted; it is always called with the same shape).
    resolution: int, grid vertices per axis R (>= 2).
    bound: float, the grid spans [-bound, bound]^3, both ends included.
    chunk_size: int, points per call of density_fn.

  Returns:
    numpy float32 [R, R, R] densities indexed [x, y, z].
  """
  if resolution < 2:
    raise ExportError(f'the grid needs at least 2 vertices per axis, got {resolution}')
  densities = _evaluate_chunked(density_fn, resolution**3,
                                lambda i: grid_points(i, resolution, bound), chunk_size)
  return densities.astype(np.float32).reshape((resolution,) * 3)


def _check_level(grid, threshold):
  """Raises ExportError unless the `threshold` level set of `grid` is a non-empty surface."""
  if not np.all(np.isfinite(grid)):
    raise ExportError(f'the density grid holds {np.sum(~np.isfinite(grid))} non-finite values')
  low, high = float(np.min(grid)), float(np.max(grid))
  if high <= threshold:
    raise ExportError(f'no density reaches the threshold {threshold:g} (max density found '
                      f'{high:g}): lower the threshold (--threshold)')
  if low >= threshold:
    raise ExportError(f'every density reaches the threshold {threshold:g} (min density found '
                      f'{low:g}): raise the threshold (--threshold)')


def inside_sphere(values, points, radius):
  """values float [N] where |points| <= radius, else 0 (radius <= 0: all kept)."""
  if radius <= 0:
    return values
  return jnp.where(jnp.linalg.norm(points, axis=-1) <= radius, values, 0.0)


def vertex_colors(color_fn, vertices, chunk_size=65536):
  """Per-vertex RGBA colours from a colour function (e.g. the NeRF's albedo).

  Args:
    color_fn: function float32 [chunk, 3] positions -> float [chunk, 3] RGB in [0, 1].
    vertices: float [V, 3] world positions.
    chunk_size: int, points per call of color_fn.

  Returns:
    uint8 [V, 4] RGBA colours, opaque.
  """
  vertices = np.asarray(vertices, np.float32)
  rgb = _evaluate_chunked(color_fn, len(vertices), lambda i: vertices[i], chunk_size)
  rgb = to_uint8(rgb)
  return np.concatenate([rgb, np.full_like(rgb[:, :1], 255)], axis=-1)


def extract_mesh(grid, bound, threshold, color_fn=None, chunk_size=65536):
  """The `threshold` level set of a density grid as a triangle mesh (marching cubes).

  Args:
    grid: float [R, R, R] densities indexed [x, y, z] on the vertices of a regular grid over
      [-bound, bound]^3, as from `density_grid`.
    bound: float, half the side of the cube the grid spans.
    threshold: float density of the surface; points with higher density are inside.
    color_fn: optional function float32 [chunk, 3] positions -> float [chunk, 3] RGB in [0, 1]
      giving the vertex colours.
    chunk_size: int, points per call of color_fn.

  Returns:
    trimesh.Trimesh with world-space vertices in [-bound, bound]^3, faces wound so their
    normals point outwards (towards lower density) and, given color_fn, uint8 RGBA vertex
    colours.

  Raises:
    ExportError: no grid value crosses the threshold, so the surface would be empty.
  """
  grid = np.asarray(grid, np.float32)
  if grid.ndim != 3 or min(grid.shape) < 2:
    raise ExportError(f'the density grid must be [R, R, R] with R >= 2, got {grid.shape}')
  _check_level(grid, threshold)
  spacing = tuple(2.0 * bound / (n - 1) for n in grid.shape)
  vertices, faces, _, _ = skimage.measure.marching_cubes(grid, level=threshold, spacing=spacing)
  vertices = vertices.astype(np.float64) - bound
  # skimage winds triangles clockwise seen from the low (outer) side when the object is the high
  # side; trimesh takes counter-clockwise as outward, so reverse the winding.
  faces = faces[:, ::-1]
  colors = None if color_fn is None else vertex_colors(color_fn, vertices, chunk_size)
  # process=True merges duplicate vertices (their colours follow) so the mesh is watertight.
  return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=True)


def write_mesh(mesh, out_dir, name='mesh', color_fn=None, texture_size=2048, max_faces=0,
               padding=4):
  """Writes a mesh as a textured GLB and OBJ (+ MTL + texture PNG) and a vertex-coloured PLY.

  Args:
    mesh: trimesh.Trimesh, e.g. from `extract_mesh` (with vertex colours for the PLY).
    out_dir: str or path of the folder to write into (created if missing).
    name: file name stem.
    color_fn: function float32 [N, 3] surface points -> float [N, 3] RGB in [0, 1] baked into
      the texture (chunked here); None writes GLB and OBJ with vertex colours instead.
    texture_size: int, the texture's side in texels.
    max_faces: int, the face budget of the textured meshes (0: every face); the PLY keeps all.
    padding: int, texels grown around each chart of the atlas.

  Returns:
    dict 'glb', 'obj', 'ply' (and with a texture 'mtl', 'texture') -> pathlib.Path.

  Raises:
    ExportError: an empty mesh or one with nothing to unwrap; nothing is written then.
  """
  if len(mesh.faces) == 0:
    raise ExportError('the mesh has no faces: nothing to write')
  out_dir = pathlib.Path(out_dir)
  if color_fn is None:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {fmt: out_dir / f'{name}.{fmt}' for fmt in MESH_FORMATS}
    mesh.export(paths['glb'])
    # OBJ has no standard vertex colours; include_color writes the common `v x y z r g b`
    # extension that Blender, MeshLab and trimesh read.
    paths['obj'].write_text(trimesh.exchange.obj.export_obj(
        mesh, include_normals=False, include_color=True, include_texture=False))
  else:
    try:
      textured = texture.textured_mesh(
          texture.decimate(mesh, max_faces),
          lambda x: _evaluate_chunked(color_fn, len(x), lambda i: x[i], 65536),
          texture_size, padding=padding)
    except texture.TextureError as e:
      raise ExportError(str(e)) from e
    paths = {'glb': texture.write_glb(textured, out_dir / f'{name}.glb'),
             **texture.write_obj(textured, out_dir, name)}
  paths['ply'] = out_dir / f'{name}.ply'
  mesh.export(paths['ply'], encoding='binary')
  return paths


def to_uint8(image):
  """Float colours in [0, 1] (clipped), any shape, as uint8 in [0, 255] (rounded)."""
  return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def normals_to_rgb(normals):
  """Unit normals float [..., 3] in [-1, 1] shown as colours (n + 1) / 2 in [0, 1]."""
  return 0.5 * (jnp.asarray(normals) + 1.0)


def turntable_frames(render_fn, num_frames, *, elevation_deg, distance, focal, height, width):
  """Renders a turntable: cameras evenly spaced on a circle around the origin.

  Args:
    render_fn: function (c2w float32 [4, 4], focal float32 []) -> list of k float images
      [H, W, 3] in [0, 1] (e.g. albedo, normals_to_rgb(normals), textureless), shown side by side
      in this order. The camera is OpenGL-style (see `camera`); render_fn makes its rays with
      `camera.generate_rays(c2w, focal, height, width)`.
    num_frames: int, number of frames F; frame i sits at azimuth 360 i / F degrees.
    elevation_deg: float elevation of the circle, degrees.
    distance: float distance of the cameras from the origin.
    focal: float focal length in pixels.
    height, width: int image size H, W every rendered image must have.

  Returns:
    numpy uint8 [F, H, W * k, 3] frames.
  """
  if num_frames < 1:
    raise ExportError(f'a turntable needs at least one frame, got {num_frames}')
  cameras = camera.orbit_cameras(num_frames, elevation_deg=elevation_deg, distance=distance,
                                 focal=focal)
  frames = []
  for i in range(num_frames):
    images = render_fn(cameras.c2w[i], cameras.focal[i])
    if not isinstance(images, (list, tuple)) or not images:
      raise ExportError(f'render_fn must return a non-empty list of images, got {type(images)}')
    images = [np.asarray(image) for image in images]
    for image in images:
      if image.shape != (height, width, 3):
        raise ExportError(f'render_fn returned an image of shape {image.shape}, expected '
                          f'{(height, width, 3)}')
    frames.append(to_uint8(np.concatenate(images, axis=1)))
  return np.stack(frames)


def pad_to_even(frames):
  """Pads frames uint8 [F, H, W, 3] by repeating the last row/column to even H and W."""
  _, height, width, _ = frames.shape
  return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode='edge')


def write_video(path, frames, fps=30):
  """Writes frames as an H.264 MP4 (yuv420p, which players expect and which needs even sizes).

  Args:
    path: str or path of the .mp4 file (its folder is created if missing).
    frames: uint8 [F, H, W, 3] frames, e.g. from `turntable_frames`; odd H or W are padded by
      one row/column.
    fps: frames per second.

  Returns:
    pathlib.Path of the written file.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
    raise ExportError(f'write_video needs frames [F > 0, H, W, 3], got shape {frames.shape}')
  if frames.dtype != np.uint8:
    raise ExportError(f'write_video needs uint8 frames, got {frames.dtype} (see to_uint8)')
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with warnings.catch_warnings():
    # JAX warns on any fork; the ffmpeg child execs at once, so it cannot deadlock on JAX's locks.
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called', category=RuntimeWarning)
    # macro_block_size=1: imageio-ffmpeg would otherwise resize frames to multiples of 16.
    with imageio.get_writer(path, format='FFMPEG', mode='I', fps=fps, codec='libx264',
                            pixelformat='yuv420p', macro_block_size=1,
                            ffmpeg_log_level='error') as writer:
      for frame in pad_to_even(frames):
        writer.append_data(frame)
  return path


def field_fns(run):
  """Jitted (density(nerf_params, x), albedo(nerf_params, x)) of a run's NeRF at points [N, 3].

  The renderer samples only inside render.scene_radius: the density beyond it is never trained
  nor seen (the mesh cube's corners), so here it is 0 there and meshes leave it out.
  """
  model = run.model
  radius = float(run.config.render.get('scene_radius', 0.0) or 0.0)
  density = jax.jit(lambda p, x: inside_sphere(model.apply(p, x, jnp.zeros_like(x))[0], x,
                                               radius))
  albedo = jax.jit(lambda p, x: model.apply(p, x, jnp.zeros_like(x))[1])
  return density, albedo


def export_assets(run, workdir, params):
  """Writes the turntable video (albedo | normals | textureless) and the mesh files.

  Args:
    run: the build.Run of the trained scene (its config's export settings).
    workdir: the folder that receives them.
    params: the trained {'nerf', 'background'} (host or single-device arrays).

  Returns:
    (path of turntable.mp4, {format: path} of the mesh files).
  """
  ex = run.config.export
  focal = float(camera.focal_from_fov(ex.video_fov_deg, ex.video_size))
  frames = turntable_frames(
      lambda c2w, f: run.renderer(params, c2w, f, ex.video_size)[:3], ex.video_frames,
      elevation_deg=ex.video_elevation_deg, distance=ex.video_distance, focal=focal,
      height=ex.video_size, width=ex.video_size)
  video = write_video(pathlib.Path(workdir) / 'turntable.mp4', frames, fps=ex.video_fps)
  density, albedo = field_fns(run)
  grid = density_grid(lambda x: density(params['nerf'], x), ex.mesh_resolution, ex.mesh_bound)
  color_fn = lambda x: np.asarray(albedo(params['nerf'], x))
  mesh = extract_mesh(grid, ex.mesh_bound, ex.mesh_threshold, color_fn=color_fn)
  # Older run folders have no texture settings: the defaults of configs/dreamfusion.py.
  paths = write_mesh(mesh, workdir, 'mesh', color_fn=color_fn,
                     texture_size=ex.get('texture_size', 2048),
                     max_faces=ex.get('max_faces', 50_000), padding=ex.get('texture_padding', 4))
  print(f'wrote {video} and {", ".join(str(p) for p in paths.values())} '
        f'({len(mesh.faces)} faces; the textured meshes at most {ex.get("max_faces", 50_000)})')
  return video, paths


def export_from_checkpoint(workdir, threshold=None):
  """Exports the assets of the newest good checkpoint in `workdir` (with its saved config).

  Args:
    workdir: the folder of a text-to-3D run.
    threshold: density level of the mesh surface, or None for the run config's.

  Raises:
    build.ConfigError: no run config or no readable checkpoint there.
  """
  config = build.read_config(workdir)
  if threshold is not None:
    config.export.mesh_threshold = threshold
  loaded = build.load_run(workdir, config)
  print(f'exporting checkpoint {loaded.step} of {workdir}')
  return export_assets(loaded.run, workdir, loaded.state.params)


def main(argv=None):
  """`python -m dreamfusion_jax.export --workdir W`: video and mesh from W's newest checkpoint."""
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  # Run as __main__, this module's classes are copies: use the package's own ExportError.
  from dreamfusion_jax import export as export_lib  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument('--workdir', required=True, help='the folder of a DreamFusion run')
  parser.add_argument('--threshold', type=float, default=None,
                      help='density level of the mesh surface (default: the run config\'s)')
  args = parser.parse_args(argv)
  try:
    export_lib.export_from_checkpoint(args.workdir, args.threshold)
  except (build.ConfigError, export_lib.ExportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
