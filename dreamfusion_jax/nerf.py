"""The NeRF field of DreamFusion (density, albedo, normals) and its background model.

DreamFusion's field (Appendix A, via PAPER.md) is a mip-NeRF 360-style MLP: integrated positional
encoding of the sample Gaussians, residual blocks with layer norm and swish, an exp density with a
Gaussian density "blob" added at the origin before the activation, and a sigmoid albedo. A second
small MLP maps the ray direction to a background colour. Normals are minus the normalised gradient
of density with respect to position.

Letters: R rays, S samples per ray, D encoding size.
"""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamfusion_jax import hashgrid


@jax.custom_jvp
def trunc_exp(x):
  """exp(x) whose derivative is clipped at exp(15), so a large density cannot explode gradients."""
  return jnp.exp(x)


@trunc_exp.defjvp
def _trunc_exp_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  return jnp.exp(x), dx * jnp.exp(jnp.minimum(x, 15.0))


def integrated_pos_enc(means, variances, min_deg, max_deg):
  """mip-NeRF's integrated positional encoding of diagonal Gaussians.

  E[sin(2^l x)] for x ~ N(mean, var) is sin(2^l mean) exp(-4^l var / 2); likewise for cos.

  Args:
    means: float [..., 3] Gaussian means.
    variances: float [..., 3] diagonal of the Gaussian covariances.
    min_deg: int, lowest frequency exponent (inclusive).
    max_deg: int, highest frequency exponent (exclusive).

  Returns:
    float [..., 6 * (max_deg - min_deg)] encoding.
  """
  scales = 2.0**jnp.arange(min_deg, max_deg, dtype=means.dtype)
  shape = means.shape[:-1] + (-1,)
  scaled_means = (means[..., None, :] * scales[:, None]).reshape(shape)
  scaled_vars = (variances[..., None, :] * scales[:, None]**2).reshape(shape)
  x = jnp.concatenate([scaled_means, scaled_means + 0.5 * jnp.pi], axis=-1)
  var = jnp.concatenate([scaled_vars, scaled_vars], axis=-1)
  return jnp.exp(-0.5 * var) * jnp.sin(x)


def trilinear(grid, points):
  """Trilinear interpolation of a dense feature grid.

  Args:
    grid: float [G, G, G, F] features at the vertices of a regular grid spanning [0, 1]^3.
    points: float [..., 3] query points in [0, 1]^3 (clipped to it).

  Returns:
    float [..., F] interpolated features.
  """
  size = grid.shape[0]
  flat_grid = grid.reshape(-1, grid.shape[-1])
  scaled = jnp.clip(points, 0.0, 1.0) * (size - 1)
  base = jnp.clip(jnp.floor(scaled).astype(jnp.int32), 0, size - 2)
  frac = scaled - base
  out = 0.0
  for corner in range(8):
    offset = jnp.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], jnp.int32)
    index = base + offset
    weight = jnp.prod(jnp.where(offset == 1, frac, 1.0 - frac), axis=-1, keepdims=True)
    out = out + weight * flat_grid[(index[..., 0] * size + index[..., 1]) * size + index[..., 2]]
  return out


def pos_enc(x, min_deg, max_deg):
  """Plain sinusoidal encoding [..., 6 * (max_deg - min_deg)] of unit directions x [..., 3]."""
  return integrated_pos_enc(x, jnp.zeros_like(x), min_deg, max_deg)


BLOB_SHAPES = ('gaussian', 'magic3d')


def density_blob(means, strength, radius, shape='gaussian'):
  """The density blob added to the raw density, float [...] at means float [..., 3].

  'gaussian' (DreamFusion): strength * exp(-||mu||^2 / (2 radius^2)); 'magic3d' (threestudio's
  blob_magic3d): strength * (1 - ||mu|| / radius), which also pushes density down beyond radius.
  """
  if shape == 'magic3d':
    norm = jnp.sqrt(jnp.maximum(jnp.sum(means**2, axis=-1), 1e-12))
    return strength * (1.0 - norm / radius)
  return strength * jnp.exp(-jnp.sum(means**2, axis=-1) / (2.0 * radius**2))


class NeRF(nn.Module):
  """DreamFusion's NeRF MLP.

  Attributes:
    encoding: 'ipe' (paper: integrated positional encoding), 'grid' (a multi-resolution dense
      feature grid, DVGO-style, that fits posed images in minutes on a CPU) or 'hash'
      (Instant-NGP's multiresolution hash grid, hashgrid.py); the grids ignore the sample
      variances.
    width: hidden width (paper: 128).
    num_blocks: residual blocks (paper: 5).
    min_deg, max_deg: IPE frequency range, applied to positions divided by `scene_radius`.
    scene_radius: radius of the bounded scene; positions are normalised by it.
    density_activation: 'exp' (paper, with gradient clipping) or 'softplus' (mip-NeRF's, for
      fitting posed images).
    density_bias: added to the raw density before the activation.
    blob_density, blob_radius: the density blob lambda_tau and c (paper: 5 and 0.2); 0 disables.
    blob_shape: 'gaussian' (paper) or 'magic3d' (threestudio); see density_blob.
    dir_max_deg: 0 for the paper's view-independent albedo; > 0 adds a view-dependent colour head
      with this many direction frequencies (classic NeRF).
    grid_resolutions: vertex counts per axis of each grid level (encoding='grid').
    grid_features: features per grid level (encoding='grid').
    hash_levels, hash_features, hash_log2_table, hash_min_res, hash_max_res: Instant-NGP's L,
      F, log2 T, N_min and N_max (encoding='hash'; see hashgrid.levels).
    hash_band: () for every level from the start, or threestudio's progressive band
      (start_level, start_step, update_steps): the levels from start_level on start at 0 and the
      optimiser (build.make_optimizer) turns them on one by one (hashgrid.band_mask).
    normal_eps: 0 for the paper's normals, the analytic gradient of the density; > 0 for the
      gradient of the log density by central differences over this distance
      (world units), which smooths the normals over that scale (threestudio's finite-difference
      normals; not in the paper).
  """
  encoding: str = 'ipe'
  width: int = 128
  num_blocks: int = 5
  min_deg: int = 0
  max_deg: int = 8
  scene_radius: float = 1.0
  density_activation: str = 'exp'
  density_bias: float = 0.0
  blob_density: float = 5.0
  blob_radius: float = 0.2
  blob_shape: str = 'gaussian'
  dir_max_deg: int = 0
  grid_resolutions: tuple[int, ...] = (16, 32, 64, 128)
  grid_features: int = 4
  hash_levels: int = 16
  hash_features: int = 2
  hash_log2_table: int = 19
  hash_min_res: int = 16
  hash_max_res: int = 2048
  hash_band: tuple[int, ...] = ()
  normal_eps: float = 0.0

  def hash_grid(self):
    """The hashgrid.Levels of encoding='hash'."""
    return hashgrid.levels(self.hash_levels, self.hash_features, self.hash_log2_table,
                           self.hash_min_res, self.hash_max_res)

  def _encode(self, means, variances):
    """Encodes positions normalised by scene_radius: float [..., 3] -> [..., D]."""
    scale = 1.0 / self.scene_radius
    if self.encoding == 'ipe':
      return integrated_pos_enc(means * scale, variances * scale**2, self.min_deg, self.max_deg)
    if self.encoding == 'grid':
      unit = 0.5 * (means * scale + 1.0)
      levels = []
      for i, size in enumerate(self.grid_resolutions):
        grid = self.param(f'grid_{i}', nn.initializers.uniform(1e-4),
                          (size, size, size, self.grid_features))
        levels.append(trilinear(grid, unit))
      return jnp.concatenate(levels, axis=-1)
    if self.encoding == 'hash':
      grid = self.hash_grid()
      zero_from = self.hash_band[0] if self.hash_band else None
      table = self.param(hashgrid.TABLE_NAME,
                         lambda key: hashgrid.init_table(key, grid, zero_from_level=zero_from))
      return hashgrid.encode(table, 0.5 * (means * scale + 1.0), grid)
    raise ValueError(f'encoding must be ipe, grid or hash, got {self.encoding!r}')

  @nn.compact
  def __call__(self, means, variances, directions=None):
    """Evaluates the field at sample Gaussians.

    Args:
      means: float32 [..., 3] sample means in world space.
      variances: float32 [..., 3] diagonal covariances in world space.
      directions: float32 [..., 3] unit view directions; required iff dir_max_deg > 0.

    Returns:
      density: float32 [...] volume density (>= 0).
      albedo: float32 [..., 3] colour in [0, 1] (view dependent iff dir_max_deg > 0).
    """
    h = nn.Dense(self.width, name='input')(self._encode(means, variances))
    for i in range(self.num_blocks):
      r = nn.swish(nn.LayerNorm(name=f'norm_{i}')(h))
      h = h + nn.Dense(self.width, name=f'block_{i}')(r)
    h = nn.swish(nn.LayerNorm(name='norm_out')(h))
    raw_density = nn.Dense(1, name='density')(h)[..., 0] + self.density_bias
    if self.blob_density:
      raw_density = raw_density + density_blob(means, self.blob_density, self.blob_radius,
                                                self.blob_shape)
    if self.density_activation == 'exp':
      density = trunc_exp(raw_density)
    elif self.density_activation == 'softplus':
      density = nn.softplus(raw_density)
    else:
      raise ValueError(f'density_activation must be exp or softplus, got '
                       f'{self.density_activation!r}')
    if self.dir_max_deg > 0:
      if directions is None:
        raise ValueError('this NeRF is view dependent (dir_max_deg > 0): pass directions')
      dir_enc = pos_enc(directions, 0, self.dir_max_deg)
      h = jnp.concatenate([nn.Dense(self.width, name='bottleneck')(h), dir_enc], axis=-1)
      h = nn.swish(nn.Dense(self.width // 2, name='view')(h))
    albedo = nn.sigmoid(nn.Dense(3, name='albedo')(h))
    return density, albedo


class Background(nn.Module):
  """DreamFusion's background: a small MLP from the ray direction to an RGB colour.

  Attributes:
    width: hidden width.
    max_deg: frequencies of the direction encoding.
    color: () for the learned MLP, or a fixed RGB colour (3 floats in [0, 1]) for a plain
      background (the MLP then has no parameters).
  """
  width: int = 32
  max_deg: int = 4
  color: tuple = ()

  @nn.compact
  def __call__(self, directions):
    """Maps unit directions float32 [..., 3] to colours float32 [..., 3] in [0, 1]."""
    if self.color:
      return jnp.broadcast_to(jnp.asarray(self.color, jnp.float32), directions.shape)
    h = pos_enc(directions, 0, self.max_deg)
    h = nn.swish(nn.Dense(self.width)(h))
    return nn.sigmoid(nn.Dense(3)(h))


@flax.struct.dataclass
class FieldSamples:
  """What a field returns at the samples of a batch of rays.

  Attributes:
    density: float32 [R, S] volume density.
    albedo: float32 [R, S, 3] colour.
    normals: float32 [R, S, 3] unit normals (-grad density), or None when not computed.
  """
  density: jax.Array
  albedo: jax.Array
  normals: jax.Array | None = None


def normals_from_density(density_fn, means, eps=0.0):
  """Density and normals n = -grad(density) / ||grad(density)|| (DreamFusion Sec. 3.1).

  Args:
    density_fn: pointwise function float [..., 3] -> (density float [...], aux pytree).
    means: float32 [..., 3] positions.
    eps: 0 for the analytic gradient; > 0 for the gradient of log density by central differences
      (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) on each axis (6 more density evaluations,
      second-order accurate). Density = exp(raw) makes grad log density parallel to grad density,
      and the log keeps one high-density point from swamping the other.

  Returns:
    density float32 [...], normals float32 [..., 3], and density_fn's aux.
  """
  if eps > 0:
    density, aux = density_fn(means)
    log_density = lambda x: jnp.log(jnp.maximum(density_fn(x)[0], 1e-30))
    axes = jnp.eye(3, dtype=means.dtype) * eps
    grad = jnp.stack([log_density(means + e) - log_density(means - e) for e in axes], axis=-1)
    grad = grad / (2.0 * eps)
  else:
    density, vjp_fn, aux = jax.vjp(density_fn, means, has_aux=True)
    # density_fn is pointwise, so the VJP with ones gives each point's own gradient.
    (grad,) = vjp_fn(jnp.ones_like(density))
  norm = jnp.sqrt(jnp.maximum(jnp.sum(grad**2, axis=-1, keepdims=True), 1e-20))
  return density, -grad / norm, aux


def normals_at(model, params, points):
  """Unit normals float32 [N, 3] of a NeRF's density at points float32 [N, 3] (zero variance)."""
  # Density ignores the view direction; a view-dependent module still wants one.
  up = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], points.dtype), points.shape)
  samples = field_fn(model, params, with_normals=True)(
      points[:, None], jnp.zeros_like(points[:, None]), up)
  return samples.normals[:, 0]


def field_fn(model, params, *, with_normals):
  """Wraps a NeRF and its parameters as the renderer's field function.

  Args:
    model: a NeRF module, or any module with its call signature and dir_max_deg (normal_eps is
      read when present, else 0).
    params: its variables ({'params': ...}).
    with_normals: whether to compute normals (doubles the cost of the backward pass).

  Returns:
    A function (means [R, S, 3], variances [R, S, 3], directions [R, 3]) -> FieldSamples.
  """

  def evaluate(means, variances, directions):
    dirs = None
    if model.dir_max_deg > 0:
      dirs = jnp.broadcast_to(directions[..., None, :], means.shape)
    apply = functools.partial(model.apply, params)
    if not with_normals:
      density, albedo = apply(means, variances, dirs)
      return FieldSamples(density=density, albedo=albedo)
    density, normals, albedo = normals_from_density(
        lambda m: apply(m, variances, dirs), means, eps=getattr(model, 'normal_eps', 0.0))
    return FieldSamples(density=density, albedo=albedo, normals=normals)

  return evaluate
