"""3D measures of a NeRF against a known solid: volume IoU and Chamfer distance.

The toy world knows its true object (`toy.world.make_primitive`), so a run's shape can be
scored in 3D, not only through silhouettes:
- `volume_iou`: the NeRF's occupancy (density >= the export's mesh threshold, inside the sphere
  the renderer samples) against the true solid's, both on the vertices of a GRID_RESOLUTION^3
  grid (the centres of 0.01 cells tiling [-0.45, 0.45]^3); |pred & true| / |pred | true|. On
  it the true objects' own volumes are within 0.6% of their exact ones
  (tests/shape_metrics_test.py).
- `chamfer`: the symmetric Chamfer distance between the exported surface (marching cubes of the
  density at the export's resolution and threshold) and the true surface (marching cubes of the
  true solid at TRUE_SURFACE_RESOLUTION^3), on NUM_SURFACE_POINTS area-weighted points of each:
  the mean of the two directions' mean nearest-neighbour distances, divided by the true object's
  bounding radius (so 0.01 is 1% of its size).

Letters: R grid vertices per axis, N points.
"""

import numpy as np
import scipy.spatial
import skimage.measure
import trimesh

from dreamfusion_jax import export
from dreamfusion_jax.data import primitives

# The centres of 90^3 cells of side 0.01 tiling [-0.45, 0.45]^3 (the toy objects lie inside a
# sphere of radius 0.4): the toy objects' flat faces (z = +-0.22, +-0.25, +-0.26, x, y = +-0.22)
# fall on cell boundaries, so their volumes come out within 0.6% (0.0% for the cube; 180^3
# cells of 0.005: within 0.2%, at 8 times the cost).
GRID_RESOLUTION = 90
GRID_BOUND = 0.45 - 0.005
TRUE_SURFACE_RESOLUTION = 160
NUM_SURFACE_POINTS = 100_000


def true_occupancy(primitive, resolution=GRID_RESOLUTION, bound=GRID_BOUND):
  """bool [R, R, R] (indexed [x, y, z], export.grid_points' vertices): inside the solid."""
  points = export.grid_points(np.arange(resolution**3), resolution, bound)
  return primitives.inside(primitive, points).reshape((resolution,) * 3)


def nerf_occupancy(density_fn, threshold, resolution=GRID_RESOLUTION, bound=GRID_BOUND):
  """bool [R, R, R]: density_fn (float32 [chunk, 3] -> [chunk]) >= threshold on the grid."""
  return export.density_grid(density_fn, resolution, bound) >= threshold


def volume_iou(pred, true):
  """|pred & true| / |pred | true| of two bool occupancy grids (1 for two empty ones)."""
  union = np.logical_or(pred, true).sum()
  return float(np.logical_and(pred, true).sum() / union) if union else 1.0


def true_surface(primitive, resolution=TRUE_SURFACE_RESOLUTION, bound=GRID_BOUND):
  """trimesh.Trimesh of the solid's surface: marching cubes of its occupancy at level 0.5."""
  grid = true_occupancy(primitive, resolution, bound).astype(np.float32)
  spacing = (2.0 * bound / (resolution - 1),) * 3
  vertices, faces, _, _ = skimage.measure.marching_cubes(grid, level=0.5, spacing=spacing)
  return trimesh.Trimesh(vertices=vertices - bound, faces=faces[:, ::-1], process=True)


def surface_points(mesh, count=NUM_SURFACE_POINTS, seed=0):
  """float64 [count, 3] points on the mesh's faces, uniform by area (a fixed seed)."""
  points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
  return np.asarray(points, np.float64)


def chamfer(points_a, points_b):
  """Symmetric Chamfer distance: (mean_a min_b |a - b| + mean_b min_a |a - b|) / 2."""
  a_to_b, _ = scipy.spatial.cKDTree(points_b).query(points_a)
  b_to_a, _ = scipy.spatial.cKDTree(points_a).query(points_b)
  return 0.5 * float(np.mean(a_to_b) + np.mean(b_to_a))


def shape_scores(density_fn, primitive, *, threshold, mesh_resolution, mesh_bound):
  """volume_iou and chamfer of a density field against a true solid.

  Args:
    density_fn: function float32 [chunk, 3] world positions -> float [chunk] densities (jitted;
      zero where the renderer never samples, as export's).
    primitive: the true data.primitives solid.
    threshold: the density of the surface (config.export.mesh_threshold).
    mesh_resolution, mesh_bound: the export's marching-cubes grid (config.export).

  Returns:
    dict volume_iou (float in [0, 1]) and chamfer (float, in units of the true bounding radius;
    None when the field has no surface at the threshold).
  """
  iou = volume_iou(nerf_occupancy(density_fn, threshold), true_occupancy(primitive))
  try:
    mesh = export.extract_mesh(export.density_grid(density_fn, mesh_resolution, mesh_bound),
                               mesh_bound, threshold)
  except export.ExportError:
    return {'volume_iou': iou, 'chamfer': None}
  if len(mesh.faces) == 0:
    return {'volume_iou': iou, 'chamfer': None}
  radius = primitives.bounding_sphere(primitive)[1]
  distance = chamfer(surface_points(mesh), surface_points(true_surface(primitive)))
  return {'volume_iou': iou, 'chamfer': distance / radius}
