"""Volume rendering: sampling along rays, alpha compositing, hierarchical resampling, chunking.

Chunking comes in three kinds: `render_image` renders an image of any size in fixed-size calls
(previews, exports, evaluation); inside a training step `remat_chunks` recomputes chunks of rays
in the backward pass (memory) and `independent_chunks` renders independent groups (concurrency
on a CPU). `Renderer` is the deterministic, chunked render of a trained scene.

Rays are cones (mip-NeRF): each interval [t0, t1] of a ray is a conical frustum approximated by a
Gaussian, so the field sees integrated positional encodings. Sampling is hierarchical with one
field evaluated at every level (mip-NeRF): stratified samples first, then samples drawn from the
previous level's weights by inverse transform sampling. Directions are unit vectors, so t is
metric distance.

Letters: R rays, S samples per ray (S + 1 interval edges).
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dreamfusion_jax import camera
from dreamfusion_jax import nerf
from dreamfusion_jax import shading


@flax.struct.dataclass
class RenderOutput:
  """What one sampling level renders for a batch of rays.

  Attributes:
    rgb: float32 [R, 3] composited colour over the background.
    acc: float32 [R] accumulated opacity (sum of the weights).
    depth: float32 [R] expected distance of the visible surface, sum(w t) / acc, in [near, far].
    normals: float32 [R, 3] composited normals sum(w n), or None.
    weights: float32 [R, S] compositing weights of the samples.
    t_edges: float32 [R, S + 1] interval edges along the rays.
    sample_normals: float32 [R, S, 3] per-sample normals, or None (for the orientation loss).
  """
  rgb: jax.Array
  acc: jax.Array
  depth: jax.Array
  normals: jax.Array | None
  weights: jax.Array
  t_edges: jax.Array
  sample_normals: jax.Array | None


def intersect_sphere(rays, radius):
  """Entry and exit distances of rays through a sphere of `radius` at the origin.

  Args:
    rays: Rays with origins and unit directions [R, 3].
    radius: float sphere radius.

  Returns:
    t_enter, t_exit: float32 [R]; equal (zero-length) where the ray misses.
  """
  b = jnp.sum(rays.origins * rays.directions, axis=-1)
  c = jnp.sum(rays.origins**2, axis=-1) - radius**2
  disc = b**2 - c
  root = jnp.sqrt(jnp.maximum(disc, 0.0))
  t_enter = jnp.maximum(-b - root, 0.0)
  t_exit = jnp.maximum(-b + root, t_enter)
  return jnp.where(disc > 0, t_enter, 0.0), jnp.where(disc > 0, t_exit, 0.0)


def stratified_edges(key, near, far, num_samples, randomized):
  """Interval edges evenly spaced in [near, far], jittered within their bins when `randomized`.

  Args:
    key: a PRNG key (unused when not randomized).
    near, far: float32 [R] bounds per ray.
    num_samples: int, S intervals.
    randomized: bool, whether to jitter (training) or use bin edges (evaluation).

  Returns:
    float32 [R, S + 1] sorted edges starting at near and ending at far.
  """
  u = jnp.linspace(0.0, 1.0, num_samples + 1)
  u = jnp.broadcast_to(u, near.shape + (num_samples + 1,))
  if randomized:
    jitter = jax.random.uniform(key, near.shape + (num_samples - 1,)) - 0.5
    interior = u[..., 1:-1] + jitter / num_samples
    u = jnp.concatenate([u[..., :1], jnp.sort(interior, axis=-1), u[..., -1:]], axis=-1)
  return near[..., None] + (far - near)[..., None] * u


def conical_frustum_gaussians(rays, t_edges):
  """Means and diagonal covariances of conical frustums along rays (mip-NeRF, Eq. 7).

  Args:
    rays: Rays with origins, directions [R, 3] and radii [R, 1].
    t_edges: float32 [R, S + 1] interval edges.

  Returns:
    means float32 [R, S, 3], variances float32 [R, S, 3].
  """
  t0, t1 = t_edges[..., :-1], t_edges[..., 1:]
  mu, hw = 0.5 * (t0 + t1), 0.5 * (t1 - t0)
  denom = jnp.maximum(3.0 * mu**2 + hw**2, 1e-10)
  t_mean = mu + 2.0 * mu * hw**2 / denom
  t_var = hw**2 / 3.0 - (4.0 / 15.0) * hw**4 * (12.0 * mu**2 - hw**2) / denom**2
  r_var = rays.radii**2 * (mu**2 / 4.0 + (5.0 / 12.0) * hw**2 - (4.0 / 15.0) * hw**4 / denom)
  d = rays.directions[..., None, :]
  means = rays.origins[..., None, :] + t_mean[..., None] * d
  variances = t_var[..., None] * d**2 + r_var[..., None] * (1.0 - d**2)
  return means, variances


def compositing_weights(density, t_edges):
  """Alpha-compositing weights w_i = T_i (1 - exp(-sigma_i delta_i)) (NeRF, Eq. 3).

  Args:
    density: float32 [R, S] volume density of each interval.
    t_edges: float32 [R, S + 1] interval edges (metric distances).

  Returns:
    weights float32 [R, S] and transmittance float32 [R, S + 1] (T before each interval, and
    after the last one as the final entry).
  """
  optical_depth = density * (t_edges[..., 1:] - t_edges[..., :-1])
  cumulative = jnp.concatenate(
      [jnp.zeros_like(optical_depth[..., :1]), jnp.cumsum(optical_depth, axis=-1)], axis=-1)
  transmittance = jnp.exp(-cumulative)
  weights = transmittance[..., :-1] * (1.0 - jnp.exp(-optical_depth))
  return weights, transmittance


def sample_from_weights(key, t_edges, weights, num_samples, randomized, padding=0.01):
  """New interval edges drawn from a piecewise-constant density along each ray.

  The weights are max-blurred over neighbours and padded (mip-NeRF) so empty space keeps a few
  samples. Returned edges carry no gradient.

  Args:
    key: a PRNG key (unused when not randomized).
    t_edges: float32 [R, S + 1] edges of the previous level.
    weights: float32 [R, S] its compositing weights.
    num_samples: int, S' new intervals.
    randomized: bool, jittered (training) or evenly spaced (evaluation) quantiles.
    padding: float added to the blurred weights.

  Returns:
    float32 [R, S' + 1] sorted edges.
  """
  t_edges = jax.lax.stop_gradient(t_edges)
  weights = jax.lax.stop_gradient(weights)
  padded = jnp.concatenate([weights[..., :1], weights, weights[..., -1:]], axis=-1)
  blurred = jnp.maximum(padded[..., :-1], padded[..., 1:])
  blurred = 0.5 * (blurred[..., :-1] + blurred[..., 1:]) + padding
  pdf = blurred / jnp.sum(blurred, axis=-1, keepdims=True)
  cdf = jnp.concatenate(
      [jnp.zeros_like(pdf[..., :1]), jnp.minimum(1.0, jnp.cumsum(pdf, axis=-1))], axis=-1)
  cdf = cdf.at[..., -1].set(1.0)
  n = num_samples + 1
  if randomized:
    u = (jnp.arange(n) + jax.random.uniform(key, weights.shape[:-1] + (n,))) / n
  else:
    u = jnp.broadcast_to(jnp.linspace(0.0, 1.0 - 1e-6, n), weights.shape[:-1] + (n,))
  # Index of the bin each quantile falls into, then linear interpolation inside it.
  idx = jnp.sum(u[..., :, None] >= cdf[..., None, 1:-1], axis=-1)  # [R, S' + 1]
  cdf0 = jnp.take_along_axis(cdf, idx, axis=-1)
  cdf1 = jnp.take_along_axis(cdf, idx + 1, axis=-1)
  t0 = jnp.take_along_axis(t_edges, idx, axis=-1)
  t1 = jnp.take_along_axis(t_edges, idx + 1, axis=-1)
  frac = jnp.clip((u - cdf0) / jnp.maximum(cdf1 - cdf0, 1e-10), 0.0, 1.0)
  samples = t0 + frac * (t1 - t0)
  ends = jnp.stack([t_edges[..., 0], t_edges[..., -1]], axis=-1)
  return jnp.sort(jnp.concatenate([ends[..., :1], samples[..., 1:-1], ends[..., 1:]], -1), -1)


def composite(weights, t_edges, colors, background, near, far, sample_normals=None):
  """Integrates per-sample colours (and normals) along the rays.

  Args:
    weights: float32 [R, S] compositing weights.
    t_edges: float32 [R, S + 1] interval edges.
    colors: float32 [R, S, 3] per-sample colours.
    background: float32 [R, 3] colour seen through the remaining transmittance.
    near, far: float32 [R] bounds used to clip the depth.
    sample_normals: float32 [R, S, 3] or None.

  Returns:
    RenderOutput.
  """
  acc = jnp.sum(weights, axis=-1)
  t_mid = 0.5 * (t_edges[..., :-1] + t_edges[..., 1:])
  depth = jnp.sum(weights * t_mid, axis=-1) / jnp.maximum(acc, 1e-10)
  depth = jnp.clip(jnp.where(acc > 1e-10, depth, far), near, far)
  rgb = jnp.sum(weights[..., None] * colors, axis=-2) + (1.0 - acc[..., None]) * background
  normals = None
  if sample_normals is not None:
    normals = jnp.sum(weights[..., None] * sample_normals, axis=-2)
  return RenderOutput(rgb=rgb, acc=acc, depth=depth, normals=normals, weights=weights,
                      t_edges=t_edges, sample_normals=sample_normals)


def albedo_colors(samples, means):
  """The default shading: the field's (possibly view dependent) colour, unlit."""
  del means
  return samples.albedo


def render_rays(key, field, rays, *, near, far, num_samples, background, scene_radius=None,
                shade=albedo_colors, randomized=True):
  """Renders rays with hierarchical sampling; one field serves every level.

  Args:
    key: a PRNG key.
    field: function (means [R, S, 3], variances [R, S, 3], directions [R, 3]) -> FieldSamples.
    rays: Rays [R].
    near, far: float bounds of the samples along every ray.
    num_samples: tuple of ints, the number of intervals at each level, e.g. (64, 64): level 0
      is stratified, each later level is resampled from the previous one's weights.
    background: float32 [R, 3] colours behind the scene.
    scene_radius: if set, samples are further restricted to the sphere of this radius, so none
      are spent outside the bounded scene.
    shade: function (FieldSamples, means [R, S, 3]) -> colours [R, S, 3].
    randomized: jitter samples (training) or not (evaluation).

  Returns:
    A tuple of RenderOutput, one per level; the last is the final render.
  """
  batch = rays.origins.shape[:-1]
  near = jnp.full(batch, near, jnp.float32)
  far = jnp.full(batch, far, jnp.float32)
  if scene_radius is not None:
    t_enter, t_exit = intersect_sphere(rays, scene_radius)
    near = jnp.clip(t_enter, near, far)
    far = jnp.clip(t_exit, near, far)
  keys = jax.random.split(key, len(num_samples))
  outputs = []
  for level, count in enumerate(num_samples):
    if level == 0:
      t_edges = stratified_edges(keys[0], near, far, count, randomized)
    else:
      t_edges = sample_from_weights(keys[level], t_edges, outputs[-1].weights, count, randomized)
    means, variances = conical_frustum_gaussians(rays, t_edges)
    samples = field(means, variances, rays.directions)
    weights, _ = compositing_weights(samples.density, t_edges)
    colors = shade(samples, means)
    outputs.append(composite(weights, t_edges, colors, background, near, far, samples.normals))
  return tuple(outputs)


def render_image(render_fn, rays, chunk_size):
  """Renders an image of any size in fixed-size chunks, so memory stays bounded.

  Args:
    render_fn: function Rays [chunk_size] -> pytree of arrays with leading size chunk_size
      (ideally jitted: every chunk has the same shape, so it compiles once).
    rays: Rays [..., 3] of any batch shape, e.g. [H, W].
    chunk_size: int rays per call.

  Returns:
    The pytree of render_fn with leading dimension reshaped to the rays' batch shape.
  """
  batch_shape = rays.origins.shape[:-1]
  flat = rays.reshape(-1)
  count = flat.origins.shape[0]
  pad = (-count) % chunk_size
  flat = jax.tree.map(lambda x: jnp.pad(x, ((0, pad), (0, 0)), mode='edge'), flat)
  chunks = []
  for start in range(0, count + pad, chunk_size):
    chunks.append(render_fn(jax.tree.map(lambda x, s=start: x[s:s + chunk_size], flat)))
  return jax.tree.map(
      lambda *xs: jnp.concatenate(xs)[:count].reshape(batch_shape + xs[0].shape[1:]), *chunks)


def _interleave(count, num_chunks):
  """(split, merge) between [count, ...] and [num_chunks, count / num_chunks, ...].

  Chunk c holds rows c, c + num_chunks, ..., so a ray batch split over devices stays split in
  every chunk.
  """
  if count % num_chunks:
    raise ValueError(f'{count} rays do not split into {num_chunks} chunks')
  split = lambda x: x.reshape(count // num_chunks, num_chunks, *x.shape[1:]).swapaxes(0, 1)
  merge = lambda y: y.swapaxes(0, 1).reshape(count, *y.shape[2:])
  return split, merge


def remat_chunks(fn, key, inputs, num_chunks):
  """fn(key, *inputs) over the rays in interleaved chunks, each recomputed in the backward pass.

  A lax.scan over jax.checkpoint(fn) keeps one chunk's activations at a time instead of all of
  them (the NeRF's activations dominate the step's memory), for one more forward pass.

  Args:
    fn: (key, *inputs with leading size R / num_chunks) -> pytree with that leading size.
    key: PRNG key, split into one per chunk.
    inputs: tuple of pytrees with leading size R (divisible by num_chunks).
    num_chunks: int.

  Returns:
    fn's pytree with leading size R, rows in the order of the inputs.
  """
  split, merge = _interleave(jax.tree.leaves(inputs)[0].shape[0], num_chunks)
  body = jax.checkpoint(lambda k, xs: fn(k, *xs))
  _, outputs = jax.lax.scan(lambda carry, x: (carry, body(*x)), None,
                            (jax.random.split(key, num_chunks), jax.tree.map(split, inputs)))
  return jax.tree.map(merge, outputs)


def independent_chunks(fn, num_chunks):
  """fn over the rays as num_chunks independent interleaved groups, for concurrency on a CPU.

  XLA:CPU runs most fused element-wise loops on one thread; with the NeRF of one batch of rays,
  only one of two cores was busy for 72% of the step (benchmarks/NOTES.md). The groups are separate,
  unrolled computations with no data between them, which XLA's concurrency-optimised
  scheduler (build.step_compiler_options) runs side by side on the threads.
  Nothing is recomputed; each group draws its samples from its own key.

  Args:
    fn: (key, *inputs with leading size R / num_chunks) -> pytree with that leading size.
    num_chunks: int.

  Returns:
    A function (key, *inputs with leading size R) -> fn's pytree with leading size R, rows in
    the order of the inputs.
  """

  def chunked(key, *inputs):
    split, merge = _interleave(jax.tree.leaves(inputs)[0].shape[0], num_chunks)
    groups = jax.tree.map(split, inputs)
    keys = jax.random.split(key, num_chunks)
    outputs = [fn(keys[c], *jax.tree.map(lambda x, c=c: x[c], groups))
               for c in range(num_chunks)]
    return jax.tree.map(lambda *ys: merge(jnp.stack(ys)), *outputs)

  return chunked


def render_background(params, rays, background_model):
  """The background colour behind each ray, float32 [R, 3]."""
  return background_model.apply(params['background'], rays.directions)


def shade_samples(samples, means, *, modes, lights, light_color, ambient):
  """render_rays' shade function: shading.shade of FieldSamples at their means [R, S, 3]."""
  return shading.shade(samples.albedo, samples.normals, means, lights, modes,
                       light_color=light_color, ambient=ambient)

class Renderer:
  """Deterministic chunked renders of a trained DreamFusion scene (previews, exports, eval).

  The lit modes (LAMBERTIAN, TEXTURELESS) put a point light at the camera with the run's light
  colour and ambient.
  """

  def __init__(self, model, background_model, render_fn, *, chunk_size, light_color, ambient):
    """Args:
      model, background_model: the NeRF and background modules.
      render_fn: render_rays with the run's sampling settings bound.
      chunk_size: int, rays per call.
      light_color, ambient: the Lambertian light colour and ambient of the shaded modes.
    """
    self.chunk_size = chunk_size
    light = dict(light_color=light_color, ambient=ambient)

    @functools.partial(jax.jit, static_argnums=(3, 4))
    def chunk(nerf_params, rays, background, mode, with_normals):
      shade = albedo_colors
      if mode != shading.ALBEDO:
        shade = functools.partial(shade_samples, modes=mode, lights=rays.origins[:, None],
                                  **light)
      field = nerf.field_fn(model, nerf_params,
                            with_normals=with_normals or mode != shading.ALBEDO)
      out = render_fn(jax.random.key(0), field, rays, background=background, shade=shade,
                      randomized=False)[-1]
      return out.rgb, out.normals, out.acc

    self.chunk = chunk
    """fn(nerf_params, rays [R], background float32 [R, 3], mode, with_normals) -> (rgb [R, 3],
    normals [R, 3] or None, acc [R]); mode (a shading mode index) and with_normals are static."""
    self._background = jax.jit(background_model.apply)

  def _render(self, params, rays, mode, with_normals=False):
    return render_image(
        lambda r: self.chunk(params['nerf'], r, self._background(params['background'],
                                                                 r.directions),
                             mode, with_normals), rays, self.chunk_size)

  def __call__(self, params, c2w, focal, size):
    """Albedo, normal ((n + 1) / 2 over white), textureless and opacity images [size, size, 3].

    Args:
      params: {'nerf', 'background'} of the trained scene.
      c2w: float32 [4, 4] camera-to-world matrix (camera's convention).
      focal: float, focal length in pixels.
      size: int, H = W.
    """
    rays = camera.generate_rays(c2w, focal, size, size)
    albedo, normals, acc = self._render(params, rays, shading.ALBEDO, with_normals=True)
    textureless, _, _ = self._render(params, rays, shading.TEXTURELESS)
    unit = normals / jnp.maximum(jnp.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    normal_img = (0.5 * (unit + 1.0)) * acc[..., None] + (1.0 - acc[..., None])
    opacity = jnp.broadcast_to(acc[..., None], albedo.shape)
    return [np.asarray(jnp.clip(x, 0, 1)) for x in (albedo, normal_img, textureless, opacity)]
