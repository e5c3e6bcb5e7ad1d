"""Analytic test scenes written in the Blender ``nerf_synthetic`` layout.

A scene is a handful of coloured primitives (sphere, box, cylinder, cone,
torus). Views are rendered by exact ray-primitive intersection with Lambertian
shading under a fixed directional light, so the ground truth is known and view
independent: a radiance field without view dependence can fit it exactly. No
volume rendering is involved.

Conventions (shared with the rest of the package): right-handed world, +z up;
OpenGL/Blender cameras given as camera-to-world 4x4 matrices ``c2w`` (camera
looks down local -z, local +y is image up, local +x is image right); pixel
(row i, column j) has its centre at x = j + 0.5, y = i + 0.5 and camera-space
direction ((x - W/2)/f, -(y - H/2)/f, -1).

Run ``python -m dreamfusion_jax.data.synthetic --out DIR`` to write a scene.
"""

import argparse
import colorsys
import dataclasses
import json
import math
import pathlib
import time

import numpy as np
from PIL import Image

from dreamfusion_jax.data import primitives as primitive_lib

# Unit vector towards the light: from above and slightly to one side, so shading varies over every object.
DEFAULT_LIGHT_DIR = (0.36, -0.48, 0.8)
_VAL_AZIMUTH_OFFSET_DEG = 10.0


def _rays_near_sphere(origins, directions, center, radius):
  """int [K] indices of rays (float64 [R, 3] origins, unit directions) meeting a sphere ahead of the origin."""
  o = origins - center
  b = np.einsum('ij,ij->i', o, directions)
  disc = b * b - (np.einsum('ij,ij->i', o, o) - radius**2)
  return np.flatnonzero((disc >= 0.0) & (b < np.sqrt(np.maximum(disc, 0.0))))


def render_rays(
  primitives, origins, directions, light_dir=DEFAULT_LIGHT_DIR, ambient=0.3, diffuse=0.7
):
  """Shade the nearest hit of each ray over all primitives.

  Args: primitives sequence of primitive_lib.* dataclasses; origins float [R, 3] (or [3]);
    directions float [R, 3] (normalised here); light_dir float [3] towards the light (normalised
    here); ambient float; diffuse float Lambertian weight.
  Returns: rgb float32 [R, 3] = albedo * (ambient + diffuse * max(0, n . light_dir)) clipped to [0, 1],
    0 where missed; hit bool [R]; depth float32 [R] distance to the hit, inf where missed.
  """
  d = primitive_lib.normalize(np.asarray(directions, np.float64).reshape(-1, 3))
  o = np.broadcast_to(np.asarray(origins, np.float64), d.shape)
  best_t = np.full(d.shape[0], np.inf)
  best_n = np.zeros_like(d)
  best_albedo = np.zeros_like(d)
  for prim in primitives:
    # Only rays meeting the bounding sphere can hit; the exact tests run on that small subset.
    center, radius = primitive_lib.bounding_sphere(prim)
    idx = _rays_near_sphere(o, d, center, 1.001 * radius + 1e-6)
    t, n = primitive_lib.intersect_primitive(prim, o[idx], d[idx])
    closer = t < best_t[idx]
    idx, t, n = idx[closer], t[closer], n[closer]
    best_t[idx], best_n[idx], best_albedo[idx] = t, n, np.asarray(prim.albedo, np.float64)
  shade = ambient + diffuse * np.maximum(
    best_n @ primitive_lib.normalize(np.asarray(light_dir, np.float64)), 0.0
  )
  hit = np.isfinite(best_t)
  rgb = np.where(hit[:, None], np.clip(best_albedo * shade[:, None], 0.0, 1.0), 0.0)
  return rgb.astype(np.float32), hit, best_t.astype(np.float32)


def camera_rays(c2w, focal, height, width, supersample=1):
  """World-space rays through evenly spaced sub-pixel centres (s x s per pixel at offsets (k + 0.5) / s).

  Args: c2w float [4, 4] camera-to-world (OpenGL); focal float pixels; height, width int H, W;
    supersample int s.
  Returns: origins float64 [H*s*W*s, 3] (the camera centre); directions float64 [H*s*W*s, 3],
    unnormalised, row-major over the (H*s, W*s) grid of sub-pixels.
  """
  c2w = np.asarray(c2w, np.float64)
  offsets = (np.arange(supersample) + 0.5) / supersample
  xs = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
  ys = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
  x, y = np.meshgrid(xs, ys)
  d_cam = np.stack(
    [(x - 0.5 * width) / focal, -(y - 0.5 * height) / focal, -np.ones_like(x)], axis=-1
  )
  directions = d_cam.reshape(-1, 3) @ c2w[:3, :3].T
  return np.broadcast_to(c2w[:3, 3], directions.shape).copy(), directions


def render_view(
  primitives,
  c2w,
  focal,
  height,
  width,
  light_dir=DEFAULT_LIGHT_DIR,
  ambient=0.3,
  diffuse=0.7,
  supersample=2,
):
  """Render an anti-aliased RGBA image.

  Args: primitives sequence; c2w float [4, 4] camera-to-world (OpenGL); focal float pixels;
    height, width int H, W; light_dir, ambient, diffuse as in render_rays; supersample int s,
    s x s rays per pixel averaged with premultiplied alpha.
  Returns: float32 [H, W, 4] straight (not premultiplied) RGBA in [0, 1]; alpha is coverage and
    RGB is 0 where alpha is 0.
  """
  s = int(supersample)
  origins, directions = camera_rays(c2w, focal, height, width, s)
  rgb, hit, _ = render_rays(primitives, origins, directions, light_dir, ambient, diffuse)
  # rgb is already 0 on misses, so averaging it gives the premultiplied colour.
  fine = np.concatenate([rgb, hit.astype(np.float32)[:, None]], axis=1)
  rgba = fine.reshape(height, s, width, s, 4).mean(axis=(1, 3))
  a = rgba[..., 3:]
  rgba[..., :3] = np.where(a > 0.0, rgba[..., :3] / np.where(a > 0.0, a, 1.0), 0.0)
  return np.clip(rgba, 0.0, 1.0).astype(np.float32)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
  """Camera-to-world float64 [4, 4] for a camera at ``eye`` [3] looking at ``target`` [3].

  Columns of the rotation are camera right (+x), camera up (+y) and the
  backward direction (+z, the camera looks down -z); ``up`` [3] is the world up.
  """
  eye = np.asarray(eye, np.float64)
  forward = primitive_lib.normalize(np.asarray(target, np.float64) - eye)
  right = np.cross(forward, np.asarray(up, np.float64))
  if np.linalg.norm(right) < 1e-9:
    raise ValueError(
      'look_at: viewing direction is parallel to the up vector; move the camera off the pole'
    )
  right = primitive_lib.normalize(right)
  cam_up = np.cross(right, forward)
  c2w = np.eye(4)
  c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, eye
  return c2w


def orbit_pose(radius, elevation_deg, azimuth_deg):
  """float64 [4, 4] c2w of a camera at float ``radius``, ``elevation_deg``, ``azimuth_deg`` looking at the origin."""
  el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
  eye = radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
  return look_at(eye)


def sample_train_poses(rng, n, radius=4.0, min_elevation_deg=10.0, max_elevation_deg=70.0):
  """Random cameras on the upper hemisphere looking at the origin with world up +z.

  Args: rng np.random.Generator; n int N; radius float distance to the origin;
    min_elevation_deg, max_elevation_deg float elevation range in degrees.
  Returns: float64 [N, 4, 4] camera-to-world, uniform in area over the zone (sin(elevation) uniform).
  """
  lo, hi = math.sin(math.radians(min_elevation_deg)), math.sin(math.radians(max_elevation_deg))
  elevations = np.degrees(np.arcsin(rng.uniform(lo, hi, n)))
  azimuths = rng.uniform(0.0, 360.0, n)
  return np.stack([orbit_pose(radius, e, a) for e, a in zip(elevations, azimuths)]).reshape(n, 4, 4)


def ring_poses(n, radius=4.0, elevation_deg=30.0, azimuth_offset_deg=0.0):
  """float64 [N, 4, 4] c2w of int ``n`` cameras on a ring (float ``radius``, ``elevation_deg``), aimed at the origin.

  Azimuths are evenly spaced starting at float ``azimuth_offset_deg`` (degrees).
  """
  azimuths = azimuth_offset_deg + 360.0 * np.arange(n) / n
  return np.stack([orbit_pose(radius, elevation_deg, a) for a in azimuths]).reshape(n, 4, 4)


def focal_from_fov(width, camera_angle_x):
  """Focal length in pixels (float) for int ``width`` and horizontal field of view ``camera_angle_x`` (radians)."""
  return 0.5 * width / math.tan(0.5 * camera_angle_x)


def distinct_colours(rng, n):
  """float64 [n, 3] bright saturated RGB colours with hues evenly spread around the colour wheel."""
  hues = (rng.uniform() + np.arange(n) / max(n, 1)) % 1.0
  return np.array([colorsys.hsv_to_rgb(h, 0.85, 0.95) for h in rng.permutation(hues)]).reshape(n, 3)


def place_spheres(rng, radii, container_radius=1.0, z_extent=0.6, max_tries=500):
  """Rejection-sample non-overlapping spheres inside a container sphere around the origin.

  Args: rng np.random.Generator; radii float [K]; container_radius float; z_extent float, centres
    have |z| <= max(z_extent - radius, 0.1) so objects sit near z = 0; max_tries int tries per
    sphere before all radii shrink by 10 %.
  Returns: centres float64 [K, 3]; radii float64 [K] (possibly shrunk so that everything fits).
  """
  radii = np.asarray(radii, np.float64)
  while True:
    centres = []
    for r in radii:
      for _ in range(max_tries):
        reach = container_radius - r
        c = np.array(
          [*rng.uniform(-reach, reach, 2), rng.uniform(-1.0, 1.0) * max(z_extent - r, 0.1)]
        )
        inside = np.linalg.norm(c) + r <= container_radius
        apart = all(np.linalg.norm(c - c2) >= r + r2 for c2, r2 in zip(centres, radii))
        if inside and apart:
          centres.append(c)
          break
      else:
        break
    if len(centres) == len(radii):
      return np.array(centres).reshape(-1, 3), radii
    radii = 0.9 * radii


def make_primitive(kind, rng, center, bound, albedo):
  """Primitive of str ``kind`` with bounding sphere (float [3] ``center``, float ``bound``), float [3] ``albedo``.

  Proportions (aspect ratios, box rotation) are drawn from np.random.Generator ``rng``.
  """
  c, bound = tuple(float(v) for v in center), float(bound)
  col = tuple(float(v) for v in albedo)
  if kind == 'sphere':
    return primitive_lib.Sphere(c, float(bound), col)
  if kind == 'box':
    dims = rng.uniform(0.5, 1.0, 3)
    half = bound * dims / np.linalg.norm(dims)
    return primitive_lib.Box(
      c, tuple(float(v) for v in half), float(rng.uniform(0.0, 0.5 * math.pi)), col
    )
  if kind == 'cylinder':
    q = rng.uniform(0.6, 1.4)  # radius / half-height
    hh = bound / math.sqrt(1.0 + q * q)
    return primitive_lib.Cylinder(c, float(q * hh), float(hh), col)
  if kind == 'cone':
    q = rng.uniform(0.5, 1.0)  # base radius / half-height; bounding sphere centred at mid-height
    half_h = bound / math.sqrt(1.0 + q * q)
    return primitive_lib.Cone(
      (c[0], c[1], c[2] - half_h), float(q * half_h), float(2.0 * half_h), col
    )
  if kind == 'torus':
    ratio = rng.uniform(0.3, 0.45)  # minor / major
    major = bound / (1.0 + ratio)
    return primitive_lib.Torus(c, float(major), float(ratio * major), col)
  raise ValueError(
    f'unknown primitive kind {kind!r}; expected one of {", ".join(primitive_lib.KINDS)}'
  )


def random_scene(rng, num_objects=3):
  """List of int ``num_objects`` primitives of distinct kinds (when <= 5) and distinct bright colours.

  Bounding radii are drawn in [0.25, 0.5] (shrunk if they cannot be packed); bounding spheres do
  not overlap and lie inside the unit sphere with centres near z = 0. ``rng`` np.random.Generator.
  """
  if num_objects <= len(primitive_lib.KINDS):
    kinds = list(rng.permutation(primitive_lib.KINDS)[:num_objects])
  else:
    kinds = list(rng.choice(primitive_lib.KINDS, num_objects))
  colours = distinct_colours(rng, num_objects)
  # Big objects first: they are the hardest to place.
  radii = np.sort(rng.uniform(0.25, 0.5, num_objects))[::-1]
  centres, radii = place_spheres(rng, radii)
  return [make_primitive(k, rng, c, r, col) for k, c, r, col in zip(kinds, centres, radii, colours)]


def primitive_to_dict(primitive):
  """JSON-ready dict ``{"kind": str, <field>: value, ...}`` of a primitive."""
  fields = dataclasses.asdict(primitive)
  return {
    'kind': primitive.kind,
    **{k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()},
  }


def primitive_from_dict(d):
  """Primitive rebuilt from a ``primitive_to_dict`` dict."""
  fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != 'kind'}
  if d.get('kind') not in primitive_lib.CLASSES_BY_KIND:
    raise ValueError(
      f'unknown primitive kind {d.get("kind")!r}; expected one of {", ".join(primitive_lib.KINDS)}'
    )
  return primitive_lib.CLASSES_BY_KIND[d['kind']](**fields)


def load_scene(path):
  """List of primitives read from a ``scene.json`` written by ``write_scene`` (``path`` str or Path)."""
  data = json.loads(pathlib.Path(path).read_text())
  return [primitive_from_dict(p) for p in data['primitives']]


def _write_png(path, rgba):
  """Save float [H, W, 4] RGBA in [0, 1] as an 8-bit RGBA PNG at ``path``."""
  Image.fromarray(np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)).save(path)


def write_scene(
  out_dir,
  primitives,
  resolution=100,
  num_train=100,
  num_val=8,
  num_test=16,
  camera_angle_x=0.6911,
  seed=0,
  light_dir=DEFAULT_LIGHT_DIR,
  ambient=0.3,
  diffuse=0.7,
  supersample=2,
):
  """Render a scene into a Blender ``nerf_synthetic``-layout folder.

  Writes ``{train,val,test}/r_<k>.png`` (RGBA, transparent background),
  ``transforms_<split>.json`` ({"camera_angle_x", "frames": [{"file_path": "./<split>/r_<k>",
  "transform_matrix": 4x4}]}) and ``scene.json`` (primitives, shading, camera settings).

  Args: out_dir str or Path (created); primitives sequence; resolution int H = W; num_train,
    num_val, num_test int views per split; camera_angle_x float horizontal field of view (radians);
    seed int seed of the random training poses (val and test are fixed rings at different
    azimuth offsets); light_dir, ambient, diffuse, supersample as in render_view.
  Returns: dict split -> float64 [N, 4, 4] camera-to-world matrices written.
  """
  out = pathlib.Path(out_dir)
  focal = focal_from_fov(resolution, camera_angle_x)
  poses = {
    # A stream separate from the one random_scene may have used with the same seed.
    'train': sample_train_poses(np.random.default_rng((seed, 1)), num_train),
    'val': ring_poses(num_val, azimuth_offset_deg=_VAL_AZIMUTH_OFFSET_DEG),
    'test': ring_poses(num_test),
  }
  for split, c2ws in poses.items():
    (out / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for k, c2w in enumerate(c2ws):
      rgba = render_view(
        primitives, c2w, focal, resolution, resolution, light_dir, ambient, diffuse, supersample
      )
      _write_png(out / split / f'r_{k}.png', rgba)
      frames.append({'file_path': f'./{split}/r_{k}', 'transform_matrix': c2w.tolist()})
    meta = {'camera_angle_x': float(camera_angle_x), 'frames': frames}
    (out / f'transforms_{split}.json').write_text(json.dumps(meta, indent=2))
  scene = {
    'primitives': [primitive_to_dict(p) for p in primitives],
    'light_dir': [float(v) for v in light_dir],
    'ambient': float(ambient),
    'diffuse': float(diffuse),
    'resolution': int(resolution),
    'camera_angle_x': float(camera_angle_x),
    'seed': int(seed),
  }
  (out / 'scene.json').write_text(json.dumps(scene, indent=2))
  return poses


def _parser():
  """argparse.ArgumentParser of the command line interface."""
  p = argparse.ArgumentParser(
    prog='python -m dreamfusion_jax.data.synthetic', description=__doc__.splitlines()[0]
  )
  p.add_argument('--out', required=True, help='output folder (nerf_synthetic layout)')
  p.add_argument(
    '--resolution', type=int, default=100, help='image height and width in pixels (>= 8)'
  )
  p.add_argument('--num_objects', type=int, default=3, help='number of primitives (1 to 5)')
  p.add_argument('--num_train', type=int, default=100, help='training views (>= 1)')
  p.add_argument('--num_val', type=int, default=8, help='validation views (>= 1)')
  p.add_argument('--num_test', type=int, default=16, help='test views (>= 1)')
  p.add_argument('--seed', type=int, default=0, help='seed of the scene and training poses')
  return p


def _check_args(args):
  """First problem with parsed ``args`` as a one-line message, or None."""
  if args.resolution < 8:
    return f'--resolution must be at least 8, got {args.resolution}'
  if not 1 <= args.num_objects <= len(primitive_lib.KINDS):
    return f'--num_objects must be between 1 and {len(primitive_lib.KINDS)}, got {args.num_objects}'
  for name in ('num_train', 'num_val', 'num_test'):
    if getattr(args, name) < 1:
      return f'--{name} must be at least 1, got {getattr(args, name)}'
  return None


def main(argv=None):
  """Command line entry point; ``argv`` list of str (defaults to sys.argv[1:]). Returns exit status 0."""
  parser = _parser()
  args = parser.parse_args(argv)
  problem = _check_args(args)
  if problem:
    parser.error(problem)
  start = time.perf_counter()
  primitives = random_scene(np.random.default_rng(args.seed), args.num_objects)
  write_scene(
    args.out,
    primitives,
    resolution=args.resolution,
    num_train=args.num_train,
    num_val=args.num_val,
    num_test=args.num_test,
    seed=args.seed,
  )
  kinds = ', '.join(p.kind for p in primitives)
  print(
    f'wrote {args.num_train}/{args.num_val}/{args.num_test} views of [{kinds}] to {args.out} '
    f'in {time.perf_counter() - start:.1f}s'
  )
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
