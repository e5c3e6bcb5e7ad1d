"""Analytic primitives (sphere, box, cylinder, cone, torus) and exact ray intersections.

Used by the synthetic scene generator and the toy world; NumPy only, no volume rendering. Each
`intersect_<kind>(origins [R, 3], directions [R, 3], ...)` returns (t [R], inf where missed;
normals [R, 3], unit and outward, zeros where missed); t is the ray parameter, so it is a
distance for unit directions.
"""

import dataclasses
import math
import typing

import numpy as np

KINDS = ('sphere', 'box', 'cylinder', 'cone', 'torus')
# Hits closer than this are ignored so a ray leaving a surface does not re-hit it.
_MIN_T = 1e-6

Vec3 = typing.Tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Sphere:
  """Sphere with ``center`` (x, y, z), ``radius`` and RGB ``albedo`` in [0, 1]."""

  center: Vec3
  radius: float
  albedo: Vec3
  kind: typing.ClassVar[str] = 'sphere'


@dataclasses.dataclass(frozen=True)
class Box:
  """Box with ``center``, ``half_sizes`` (local x, y, z) rotated by ``angle`` radians about +z."""

  center: Vec3
  half_sizes: Vec3
  angle: float
  albedo: Vec3
  kind: typing.ClassVar[str] = 'box'


@dataclasses.dataclass(frozen=True)
class Cylinder:
  """Capped cylinder with axis along z through ``center``, ``radius`` and ``half_height``."""

  center: Vec3
  radius: float
  half_height: float
  albedo: Vec3
  kind: typing.ClassVar[str] = 'cylinder'


@dataclasses.dataclass(frozen=True)
class Cone:
  """Cone with base disc at ``base_center`` (``radius``) and apex ``height`` above it along +z."""

  base_center: Vec3
  radius: float
  height: float
  albedo: Vec3
  kind: typing.ClassVar[str] = 'cone'


@dataclasses.dataclass(frozen=True)
class Torus:
  """Torus in the plane z = center[2], ring radius ``major_radius``, tube radius ``minor_radius``."""

  center: Vec3
  major_radius: float
  minor_radius: float
  albedo: Vec3
  kind: typing.ClassVar[str] = 'torus'


Primitive = typing.Union[Sphere, Box, Cylinder, Cone, Torus]
CLASSES_BY_KIND = {cls.kind: cls for cls in (Sphere, Box, Cylinder, Cone, Torus)}


def _quadratic_roots(a, b, c):
  """Both roots of a t^2 + 2 b t + c = 0 (all float64 [R]); NaN where none or a ~ 0."""
  disc = b * b - a * c
  sq = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
  safe_a = np.where(np.abs(a) > 1e-12, a, np.nan)
  return (-b - sq) / safe_a, (-b + sq) / safe_a


def _nearest(ts, normals):
  """Nearest valid candidate per ray.

  ts float64 [R, K] candidate parameters (NaN, inf or <= _MIN_T are invalid) and normals
  float64 [R, K, 3] -> (t float64 [R], inf where none; n float64 [R, 3], zeros where none).
  """
  ts = np.where(np.isfinite(ts) & (ts > _MIN_T), ts, np.inf)
  k = np.argmin(ts, axis=1)
  rows = np.arange(ts.shape[0])
  t = ts[rows, k]
  n = normals[rows, k]
  hit = np.isfinite(t)
  return t, np.where(hit[:, None], np.nan_to_num(n), 0.0)


def normalize(v):
  """Unit vectors along the last axis of float64 [..., 3] ``v`` (zero vectors stay zero)."""
  norm = np.linalg.norm(v, axis=-1, keepdims=True)
  return v / np.where(norm > 0.0, norm, 1.0)


def intersect_sphere(origins, directions, center, radius):
  """Intersect rays with a sphere.

  Args: origins float [R, 3]; directions float [R, 3] (need not be unit); center float [3]; radius float.
  Returns: t float64 [R], parameter of the first hit (point = o + t d), inf where missed;
    normals float64 [R, 3], unit outward normals, zeros where missed. Same returns for all intersect_*.
  """
  o = np.asarray(origins, np.float64) - np.asarray(center, np.float64)
  d = np.asarray(directions, np.float64)
  t0, t1 = _quadratic_roots(np.sum(d * d, -1), np.sum(o * d, -1), np.sum(o * o, -1) - radius**2)
  ts = np.stack([t0, t1], axis=1)
  normals = (o[:, None] + ts[..., None] * d[:, None]) / radius
  return _nearest(ts, normals)


def _rotation_z(angle):
  """float64 [3, 3] rotation by ``angle`` radians about +z."""
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def intersect_box(origins, directions, center, half_sizes, angle):
  """Intersect rays with a box rotated about z (slab method in the box frame).

  Args: origins float [R, 3]; directions float [R, 3]; center float [3]; half_sizes float [3] half
    extents along the box's local x, y, z; angle float rotation about +z in radians.
  Returns: t float64 [R] (exit face if the origin is inside), normals float64 [R, 3]; see intersect_sphere.
  """
  rot = _rotation_z(angle)
  # Row vectors times rot == rot.T @ v, i.e. world -> box frame.
  o = (np.asarray(origins, np.float64) - np.asarray(center, np.float64)) @ rot
  d = np.asarray(directions, np.float64) @ rot
  # Zero components would give 0/0 on a slab boundary; a tiny signed value keeps the slab logic exact.
  d = np.where(np.abs(d) < 1e-12, np.where(d < 0, -1e-12, 1e-12), d)
  h = np.asarray(half_sizes, np.float64)
  t_a, t_b = (-h - o) / d, (h - o) / d
  t_min, t_max = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
  t_enter, t_exit = t_min.max(axis=1), t_max.min(axis=1)
  inside = t_enter <= _MIN_T
  hit = t_exit >= np.maximum(t_enter, _MIN_T)
  t = np.where(hit, np.where(inside, t_exit, t_enter), np.inf)
  axis = np.where(inside, t_max.argmin(axis=1), t_min.argmax(axis=1))
  rows = np.arange(o.shape[0])
  d_axis = d[rows, axis]
  n_local = np.zeros_like(o)
  n_local[rows, axis] = np.where(inside, np.sign(d_axis), -np.sign(d_axis))
  normals = np.where(hit[:, None], n_local @ rot.T, 0.0)
  return t, normals


def _disc_candidate(o, d, plane_z, radius):
  """Hit parameter float64 [R] of rays with the disc z = plane_z, x^2 + y^2 <= radius^2 (NaN if none)."""
  with np.errstate(divide='ignore', invalid='ignore'):
    t = (plane_z - o[:, 2]) / d[:, 2]
    x, y = o[:, 0] + t * d[:, 0], o[:, 1] + t * d[:, 1]
  return np.where(x * x + y * y <= radius**2, t, np.nan)


def intersect_cylinder(origins, directions, center, radius, half_height):
  """Intersect rays with a capped cylinder whose axis is parallel to z.

  Args: origins float [R, 3]; directions float [R, 3]; center float [3] middle of the axis;
    radius float; half_height float half the length along z.
  Returns: t float64 [R], normals float64 [R, 3] (radial on the side, +-z on caps); see intersect_sphere.
  """
  o = np.asarray(origins, np.float64) - np.asarray(center, np.float64)
  d = np.asarray(directions, np.float64)
  a = d[:, 0] ** 2 + d[:, 1] ** 2
  b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
  c = o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2
  sides = np.stack(_quadratic_roots(a, b, c), axis=1)
  z = o[:, 2:3] + sides * d[:, 2:3]
  sides = np.where(np.abs(z) <= half_height, sides, np.nan)
  side_points = o[:, None] + sides[..., None] * d[:, None]
  side_normals = side_points * np.array([1.0, 1.0, 0.0]) / radius
  top = _disc_candidate(o, d, half_height, radius)
  bottom = _disc_candidate(o, d, -half_height, radius)
  ts = np.concatenate([sides, top[:, None], bottom[:, None]], axis=1)
  cap_normals = np.broadcast_to(np.array([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]]), (o.shape[0], 2, 3))
  return _nearest(ts, np.concatenate([side_normals, cap_normals], axis=1))


def intersect_cone(origins, directions, base_center, radius, height):
  """Intersect rays with an apex-up cone with a base cap.

  Args: origins float [R, 3]; directions float [R, 3]; base_center float [3] centre of the base disc
    (apex at base_center + (0, 0, height)); radius float base radius; height float.
  Returns: t float64 [R], normals float64 [R, 3]; see intersect_sphere.
  """
  apex = np.asarray(base_center, np.float64) + np.array([0.0, 0.0, height])
  o = np.asarray(origins, np.float64) - apex
  d = np.asarray(directions, np.float64)
  k2 = (radius / height) ** 2
  a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
  b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] - k2 * o[:, 2] * d[:, 2]
  c = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * o[:, 2] ** 2
  with np.errstate(divide='ignore', invalid='ignore'):
    # A ray parallel to a generator line (a == 0) meets the double cone once.
    linear = np.where(np.abs(a) <= 1e-12, -c / (2.0 * b), np.nan)
  sides = np.stack([*_quadratic_roots(a, b, c), linear], axis=1)
  z = o[:, 2:3] + sides * d[:, 2:3]
  # Only the lower nappe between apex and base is the solid's surface.
  sides = np.where((z <= 0.0) & (z >= -height), sides, np.nan)
  p = o[:, None] + sides[..., None] * d[:, None]
  side_normals = normalize(
    p * np.array([1.0, 1.0, 0.0]) - k2 * p[..., 2:3] * np.array([0.0, 0.0, 1.0])
  )
  base = _disc_candidate(o, d, -height, radius)
  ts = np.concatenate([sides, base[:, None]], axis=1)
  base_normals = np.broadcast_to(np.array([0.0, 0.0, -1.0]), (o.shape[0], 1, 3))
  return _nearest(ts, np.concatenate([side_normals, base_normals], axis=1))


def torus_sdf(points, major_radius, minor_radius):
  """Exact signed distance float64 [R] of float [R, 3] ``points`` to a torus centred at the origin in the xy plane."""
  rho = np.hypot(points[:, 0], points[:, 1])
  return np.hypot(rho - major_radius, points[:, 2]) - minor_radius


def _torus_normals(points, major_radius):
  """Unit outward normals float64 [R, 3] of a torus at the origin, at float [R, 3] surface ``points``."""
  rho = np.hypot(points[:, 0], points[:, 1])
  ring = (
    points * np.array([1.0, 1.0, 0.0]) * (major_radius / np.where(rho > 0.0, rho, 1.0))[:, None]
  )
  return normalize(points - ring)


def intersect_torus(
  origins, directions, center, major_radius, minor_radius, max_steps=300, tolerance=1e-7
):
  """Intersect rays with a torus lying in a plane of constant z.

  Sphere tracing of the exact signed distance (never steps past the first
  hit), restricted to rays meeting the bounding sphere and compacted to the
  still-marching rays each step, followed by two Newton steps along the ray
  so the hit distance is accurate to far below 1e-4. Ray origins must lie
  outside the torus.

  Args: origins float [R, 3]; directions float [R, 3]; center float [3]; major_radius float from the
    centre to the tube's centre line; minor_radius float tube radius; max_steps int marching steps
    (rays still marching afterwards are misses); tolerance float surface distance that stops marching.
  Returns: t float64 [R], normals float64 [R, 3]; see intersect_sphere.
  """
  o = np.asarray(origins, np.float64) - np.asarray(center, np.float64)
  d_raw = np.asarray(directions, np.float64)
  d_len = np.linalg.norm(d_raw, axis=-1)
  d = d_raw / d_len[:, None]
  bound = major_radius + minor_radius
  b = np.sum(o * d, -1)
  disc = b * b - (np.sum(o * o, -1) - bound**2)
  t_exit = np.where(disc > 0.0, -b + np.sqrt(np.maximum(disc, 0.0)), -np.inf)
  s = np.maximum(-b - np.sqrt(np.maximum(disc, 0.0)), 0.0)
  active = np.flatnonzero(t_exit > 0.0)
  hit = np.zeros(o.shape[0], bool)
  for _ in range(max_steps):
    if active.size == 0:
      break
    dist = torus_sdf(o[active] + s[active, None] * d[active], major_radius, minor_radius)
    done = dist < tolerance
    hit[active[done]] = True
    s[active] += np.where(done, 0.0, dist)
    active = active[~done & (s[active] <= t_exit[active])]
  idx = np.flatnonzero(hit)
  for _ in range(2):
    p = o[idx] + s[idx, None] * d[idx]
    slope = np.sum(_torus_normals(p, major_radius) * d[idx], -1)
    # Near-grazing hits are already within tolerance / |slope|; a Newton step there could overshoot.
    safe = np.where(np.abs(slope) > 1e-3, slope, np.inf)
    s[idx] -= torus_sdf(p, major_radius, minor_radius) / safe
  normals = np.zeros_like(o)
  normals[idx] = _torus_normals(o[idx] + s[idx, None] * d[idx], major_radius)
  t = np.where(hit, s / d_len, np.inf)
  return t, normals


def intersect_primitive(primitive, origins, directions):
  """Dispatch to the ``intersect_<kind>`` function of ``primitive``; same arguments and returns."""
  p = primitive
  if isinstance(p, Sphere):
    return intersect_sphere(origins, directions, p.center, p.radius)
  if isinstance(p, Box):
    return intersect_box(origins, directions, p.center, p.half_sizes, p.angle)
  if isinstance(p, Cylinder):
    return intersect_cylinder(origins, directions, p.center, p.radius, p.half_height)
  if isinstance(p, Cone):
    return intersect_cone(origins, directions, p.base_center, p.radius, p.height)
  if isinstance(p, Torus):
    return intersect_torus(origins, directions, p.center, p.major_radius, p.minor_radius)
  raise TypeError(f'unknown primitive type {type(p).__name__}')


def bounding_sphere(primitive):
  """(centre float64 [3], radius float) of a sphere enclosing ``primitive``."""
  p = primitive
  if isinstance(p, Sphere):
    return np.array(p.center), p.radius
  if isinstance(p, Box):
    return np.array(p.center), float(np.linalg.norm(p.half_sizes))
  if isinstance(p, Cylinder):
    return np.array(p.center), math.hypot(p.radius, p.half_height)
  if isinstance(p, Cone):
    return np.array(p.base_center) + [0.0, 0.0, 0.5 * p.height], math.hypot(
      p.radius, 0.5 * p.height
    )
  if isinstance(p, Torus):
    return np.array(p.center), p.major_radius + p.minor_radius
  raise TypeError(f'unknown primitive type {type(p).__name__}')


def inside(primitive, points):
  """bool [N]: whether float [N, 3] ``points`` lie inside ``primitive`` (its solid)."""
  p = primitive
  x = np.asarray(points, np.float64)
  if isinstance(p, Sphere):
    return np.linalg.norm(x - p.center, axis=-1) < p.radius
  if isinstance(p, Box):
    local = (x - p.center) @ _rotation_z(p.angle)  # Rows rotated by -angle: the box's frame.
    return np.all(np.abs(local) < np.asarray(p.half_sizes), axis=-1)
  if isinstance(p, Cylinder):
    d = x - p.center
    return (np.hypot(d[:, 0], d[:, 1]) < p.radius) & (np.abs(d[:, 2]) < p.half_height)
  if isinstance(p, Cone):
    d = x - p.base_center
    height = d[:, 2] / p.height  # 0 at the base, 1 at the apex.
    return (height > 0) & (height < 1) & (np.hypot(d[:, 0], d[:, 1]) < p.radius * (1 - height))
  if isinstance(p, Torus):
    return torus_sdf(x - p.center, p.major_radius, p.minor_radius) < 0
  raise TypeError(f'unknown primitive type {type(p).__name__}')


def volume(primitive):
  """The exact volume of ``primitive``'s solid."""
  p = primitive
  if isinstance(p, Sphere):
    return 4.0 / 3.0 * math.pi * p.radius**3
  if isinstance(p, Box):
    return 8.0 * float(np.prod(p.half_sizes))
  if isinstance(p, Cylinder):
    return math.pi * p.radius**2 * 2.0 * p.half_height
  if isinstance(p, Cone):
    return math.pi * p.radius**2 * p.height / 3.0
  if isinstance(p, Torus):
    return 2.0 * math.pi**2 * p.major_radius * p.minor_radius**2
  raise TypeError(f'unknown primitive type {type(p).__name__}')
