"""Instant-NGP's multiresolution hash encoding (Müller et al. 2022), in pure JAX with gathers.

L levels, each a table of up to 2^T entries of F features. Level l has scale
s_l = N_min * b^l - 1 with the growth factor b = (N_max / N_min)^(1 / (L - 1)), and
res_l = ceil(s_l) + 1 vertices per axis; a point x in [0, 1]^3 sits at x * s_l + 0.5 in the
level's vertex coordinates (tiny-cuda-nn, `grid.h`). A level whose dense grid fits its table
(res_l^3 <= 2^T) indexes it directly (x + y res + z res^2); the finer ones use the spatial hash
(x * 1) ^ (y * 2654435761) ^ (z * 805459861) in uint32 arithmetic, modulo the table size. Table
sizes are min(res_l^3 rounded up to a multiple of 8, 2^T), and the tables of all levels are one
parameter, stacked row-wise (tiny-cuda-nn's layout). The 8 corners of each point's cell are
trilinearly interpolated, and the levels' features concatenated.

Letters: N points, L levels, F features per level, P = sum of the levels' table sizes.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

PRIMES = (1, 2654435761, 805459861)  # tiny-cuda-nn `coherent_prime_hash`.
INIT_RANGE = 1e-4  # Table entries start U(-1e-4, 1e-4) (tiny-cuda-nn `grid.h`).
TABLE_NAME = 'hash_table'  # The parameter's name inside the NeRF.


@dataclasses.dataclass(frozen=True)
class Levels:
  """The static layout of a hash grid.

  Attributes:
    scales: float [L] s_l, the cells per unit length of each level.
    resolutions: int [L] vertices per axis, ceil(s_l) + 1.
    sizes: int [L] table entries of each level.
    offsets: int [L] first row of each level in the stacked table.
    hashed: bool [L] whether a level uses the spatial hash (else direct indexing).
    features: F.
  """
  scales: tuple
  resolutions: tuple
  sizes: tuple
  offsets: tuple
  hashed: tuple
  features: int

  @property
  def rows(self):
    """P, the stacked table's rows."""
    return self.offsets[-1] + self.sizes[-1]

  @property
  def num_params(self):
    """Parameters of the table: P * F."""
    return self.rows * self.features


def levels(num_levels, features, log2_table, min_res, max_res):
  """The Levels of a grid from coarsest min_res to finest max_res (Instant-NGP's N_min, N_max)."""
  growth = math.exp(math.log(max_res / min_res) / (num_levels - 1)) if num_levels > 1 else 1.0
  limit = 2**log2_table
  scales, resolutions, sizes, offsets, hashed = [], [], [], [], []
  offset = 0
  for level in range(num_levels):
    # float32, as tiny-cuda-nn computes it: exp2(l * log2(b)) * N_min - 1.
    scale = float(np.float32(np.exp2(np.float32(level * math.log2(growth))) * min_res - 1.0))
    res = math.ceil(scale) + 1
    dense = res**3
    size = min(-(-dense // 8) * 8, limit)
    scales.append(scale)
    resolutions.append(res)
    sizes.append(size)
    offsets.append(offset)
    hashed.append(dense > limit)
    offset += size
  return Levels(tuple(scales), tuple(resolutions), tuple(sizes), tuple(offsets), tuple(hashed),
                features)


def spatial_hash(coords):
  """Instant-NGP's hash of integer vertex coordinates, uint32 [..., 3] -> uint32 [...].

  The products wrap modulo 2^32, as the CUDA code's uint32 arithmetic does.
  """
  coords = coords.astype(jnp.uint32)
  out = coords[..., 0] * jnp.uint32(PRIMES[0])
  for axis in (1, 2):
    out = out ^ (coords[..., axis] * jnp.uint32(PRIMES[axis]))
  return out


def table_index(coords, grid):
  """Rows of the stacked table for vertex coordinates uint32 [..., L, 3] -> int32 [..., L]."""
  res = jnp.asarray(grid.resolutions, jnp.uint32)
  coords = coords.astype(jnp.uint32)
  dense = coords[..., 0] + coords[..., 1] * res + coords[..., 2] * res * res
  index = jnp.where(jnp.asarray(grid.hashed), spatial_hash(coords), dense)
  index = index % jnp.asarray(grid.sizes, jnp.uint32)
  return (index + jnp.asarray(grid.offsets, jnp.uint32)).astype(jnp.int32)


def encode(table, points, grid):
  """The hash encoding of points.

  Args:
    table: float [P, F] the stacked tables of all levels.
    points: float [..., 3] positions in [0, 1]^3 (clipped to it).
    grid: the Levels that laid out `table`.

  Returns:
    float [..., L * F] the levels' interpolated features, coarsest first.
  """
  scales = jnp.asarray(grid.scales, points.dtype)[:, None]
  pos = jnp.clip(points, 0.0, 1.0)[..., None, :] * scales + 0.5  # [..., L, 3]
  cell = jnp.floor(pos)
  frac = pos - cell  # floor has zero derivative, so the position gradient flows through frac.
  cell = cell.astype(jnp.uint32)
  out = 0.0
  for corner in range(8):
    offset = np.array([corner & 1, (corner >> 1) & 1, (corner >> 2) & 1], np.uint32)
    weight = jnp.prod(jnp.where(offset == 1, frac, 1.0 - frac), axis=-1)  # [..., L]
    rows = table_index(cell + offset, grid)
    out = out + weight[..., None] * table[rows]  # [..., L, F]
  return out.reshape(points.shape[:-1] + (-1,))


def init_table(key, grid, zero_from_level=None, dtype=jnp.float32):
  """The table's initial values, float [P, F]: U(-1e-4, 1e-4), as Instant-NGP initialises it.

  Args:
    key: PRNG key.
    grid: the Levels.
    zero_from_level: None, or the first level of a progressive band: that level's rows and the
      finer ones start at 0 (see `band_mask`).
    dtype: the table's dtype.
  """
  table = jax.random.uniform(key, (grid.rows, grid.features), dtype, -INIT_RANGE, INIT_RANGE)
  if zero_from_level is not None and zero_from_level < len(grid.sizes):
    table = table.at[grid.offsets[zero_from_level]:].set(0.0)
  return table


def active_levels(step, num_levels, start_level, start_step, update_steps):
  """threestudio's progressive band: min(start_level + max(step - start_step, 0) // update_steps,
  L) levels are on at `step` (int or int array)."""
  grown = jnp.maximum(step - start_step, 0) // update_steps
  return jnp.minimum(start_level + grown, num_levels)


def row_levels(grid):
  """int32 [P] the level of each row of the stacked table."""
  return np.repeat(np.arange(len(grid.sizes), dtype=np.int32), grid.sizes)


def band_mask(grid, start_level, start_step, update_steps):
  """An optax transform that zeroes the gradient of the table rows of levels not yet on.

  threestudio's ProgressiveBandHashGrid multiplies the encoding of the levels not yet on by 0, so
  those levels add nothing and get no gradient. Here their rows start at 0 (init_table's
  zero_from_level) and this transform, placed first in the optimiser chain, keeps their gradient
  at 0 until threestudio's schedule turns them on: the encoding is the same, without the step
  number reaching the field. One departure: a level turns on from 0 rather than from its
  U(-1e-4, 1e-4) initial values, which the trilinear interpolation's gradient does not depend on.

  Args:
    grid: the Levels of the NeRF's table.
    start_level, start_step, update_steps: threestudio's start_level, start_step, update_steps.

  Returns:
    optax.GradientTransformation acting on the leaves named TABLE_NAME (others pass through);
    its state counts the updates it has seen, as the step does.
  """
  levels_of_rows = row_levels(grid)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    on = active_levels(state.count, len(grid.sizes), start_level, start_step, update_steps)
    row_on = (jnp.asarray(levels_of_rows) < on)[:, None]

    def mask(path, g):
      return jnp.where(row_on, g, 0.0) if is_table(path) else g
    updates = jax.tree_util.tree_map_with_path(mask, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def is_table(path):
  """Whether a pytree path (from jax.tree_util) ends at the hash table parameter."""
  last = path[-1] if path else None
  return getattr(last, 'key', None) == TABLE_NAME


def table_labels(params):
  """A pytree of booleans like params: True at the hash table, for optax.masked."""
  return jax.tree_util.tree_map_with_path(lambda path, _: is_table(path), params)
