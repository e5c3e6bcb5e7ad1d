"""Tests for dreamfusion_jax.nerf: the field's shapes, density blob, gradients and encodings."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import camera
from dreamfusion_jax import nerf
from dreamfusion_jax import render
from dreamfusion_jax import shading

# XLA's CPU backend optimisations dominate these tests' run time (compiling, not running, tiny
# graphs), so compile without them; the numerics under test are the same.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})

SMALL = dict(width=16, num_blocks=1, max_deg=4, grid_resolutions=(4, 8), grid_features=2,
             hash_levels=2, hash_log2_table=6, hash_min_res=4, hash_max_res=8)


def _samples(rays=3, samples=5, seed=0):
  rng = np.random.default_rng(seed)
  means = jnp.asarray(rng.uniform(-0.8, 0.8, (rays, samples, 3)), jnp.float32)
  variances = jnp.asarray(rng.uniform(0.0, 1e-3, (rays, samples, 3)), jnp.float32)
  directions = rng.normal(size=(rays, samples, 3))
  directions = jnp.asarray(directions / np.linalg.norm(directions, axis=-1, keepdims=True),
                           jnp.float32)
  return means, variances, directions


@pytest.mark.parametrize('encoding', ['ipe', 'grid', 'hash'])
@pytest.mark.parametrize('dir_max_deg', [0, 3])
def test_nerf_shapes_ranges_and_view_dependence(encoding, dir_max_deg):
  model = nerf.NeRF(encoding=encoding, dir_max_deg=dir_max_deg, **SMALL)
  means, variances, directions = _samples()

  @jit
  def run(key):
    (density, albedo), variables = model.init_with_output(key, means, variances, directions)
    density2, albedo2 = model.apply(variables, means, variances, -directions)
    return density, albedo, density2, albedo2, variables

  density, albedo, density2, albedo2, variables = run(jax.random.PRNGKey(0))
  chex.assert_shape(density, (3, 5))
  chex.assert_shape(albedo, (3, 5, 3))
  chex.assert_type([density, albedo], jnp.float32)
  chex.assert_tree_all_finite((density, albedo))
  assert np.all(np.asarray(density) >= 0.0)
  assert np.all((np.asarray(albedo) >= 0.0) & (np.asarray(albedo) <= 1.0))
  # The density never depends on the view; the albedo does iff dir_max_deg > 0.
  np.testing.assert_array_equal(density2, density)
  if dir_max_deg:
    assert np.max(np.abs(np.asarray(albedo2) - np.asarray(albedo))) > 1e-4
  else:
    np.testing.assert_array_equal(albedo2, albedo)
  params = variables['params']
  if encoding == 'grid':
    chex.assert_shape(params['grid_0'], (4, 4, 4, 2))
    chex.assert_shape(params['grid_1'], (8, 8, 8, 2))
  elif encoding == 'hash':  # 4^3 = 64 entries (dense), then 8^3 hashed into 2^6 = 64.
    chex.assert_shape(params['hash_table'], (128, 2))
    chex.assert_shape(params['input']['kernel'], (2 * 2, 16))
  else:
    assert not any(name.startswith('grid') for name in params)
    chex.assert_shape(params['input']['kernel'], (6 * 4, 16))
  assert ('view' in params) == (dir_max_deg > 0)


def test_nerf_argument_errors():
  means, variances, _ = _samples()
  # Abstract evaluation (no compilation) raises the same errors as a real call.
  with pytest.raises(ValueError, match='pass directions'):
    jax.eval_shape(nerf.NeRF(dir_max_deg=2, **SMALL).init, jax.random.PRNGKey(0), means, variances)
  with pytest.raises(ValueError, match='ipe, grid or hash'):
    jax.eval_shape(
        nerf.NeRF(encoding='triplane', **SMALL).init, jax.random.PRNGKey(0), means, variances)
  with pytest.raises(ValueError, match='exp or softplus'):
    jax.eval_shape(
        nerf.NeRF(density_activation='relu', **SMALL).init, jax.random.PRNGKey(0), means, variances)


def test_density_blob_values():
  points = jnp.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.6, 0.8], [0.1, -0.1, 0.1]])
  blob = nerf.density_blob(points, 5.0, 0.2)
  np.testing.assert_allclose(blob,
                             [5.0, 5.0 * np.exp(-0.5), 5.0 * np.exp(-12.5), 5.0 * np.exp(-0.375)],
                             rtol=1e-5)
  # threestudio's blob_magic3d: 10 (1 - |x| / 0.5), negative beyond the radius.
  magic = nerf.density_blob(points, 10.0, 0.5, 'magic3d')
  np.testing.assert_allclose(magic, [10.0, 6.0, -10.0, 10.0 * (1 - np.sqrt(0.03) / 0.5)],
                             rtol=1e-5)


def _zero_density_head(variables):
  params = dict(variables['params'])
  params['density'] = jax.tree.map(jnp.zeros_like, params['density'])
  return {'params': params}


def test_nerf_density_blob_dominates_at_init():
  model = nerf.NeRF(blob_density=5.0, blob_radius=0.2, **SMALL)
  rng = np.random.default_rng(1)
  directions = rng.normal(size=(64, 3))
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  points = jnp.asarray(
      np.concatenate([np.zeros((1, 3)), 0.2 * directions[:1], directions[:1], 0.8 * directions]),
      jnp.float32)
  variances = jnp.full_like(points, 1e-4)
  softplus = nerf.NeRF(blob_density=5.0,
                       blob_radius=0.2,
                       density_activation='softplus',
                       density_bias=-1.0,
                       **SMALL)

  @jit
  def run(key):
    variables = model.init(key, points, variances)
    fresh, _ = model.apply(variables, points, variances)
    zeroed, _ = model.apply(_zero_density_head(variables), points, variances)
    soft, _ = softplus.apply(_zero_density_head(variables), points, variances)
    return fresh, zeroed, soft

  for seed in range(3):
    fresh, zeroed, soft = (np.asarray(x, np.float64) for x in run(jax.random.PRNGKey(seed)))
    # Without the learned part the density is exactly exp(blob): exp(5) at the centre, ~1 at
    # distance 1.
    np.testing.assert_allclose(zeroed[:3],
                               np.exp([5.0, 5.0 * np.exp(-0.5), 5.0 * np.exp(-12.5)]),
                               rtol=1e-4)
    np.testing.assert_allclose(zeroed[0] / zeroed[2], np.exp(5.0), rtol=1e-4)
    np.testing.assert_allclose(soft[0], np.log1p(np.exp(4.0)), rtol=1e-5)
    # With the freshly initialised head the blob still makes the centre far denser than radius 0.8.
    assert fresh[0] > 20.0 * np.mean(fresh[3:]), (fresh[0], np.mean(fresh[3:]))


@pytest.fixture(scope='module')
def small_model():
  model = nerf.NeRF(**SMALL)
  variables = jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 1, 3)), jnp.zeros((1, 1, 3)))
  return model, variables


# Normals double the backward pass's compile time, so that case renders one level only.
@pytest.mark.parametrize('with_normals,num_samples', [(False, (8, 8)), (True, (8,))])
def test_gradients_through_render_are_finite_and_nonzero(small_model, with_normals, num_samples):
  model, variables = small_model
  c2w = camera.look_at(np.array([1.2, 0.4, 0.5]), np.zeros(3))
  rays = camera.generate_rays(c2w, 4.0, 2, 3).reshape(-1)
  target = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 3)), jnp.float32)
  light = jnp.array([2.0, 1.0, 2.0])

  def shade(samples, means):
    if samples.normals is None:
      return samples.albedo
    return shading.shade(samples.albedo, samples.normals, means, light, shading.LAMBERTIAN)

  def loss_fn(variables):
    field = nerf.field_fn(model, variables, with_normals=with_normals)
    outputs = render.render_rays(jax.random.PRNGKey(1),
                                 field,
                                 rays,
                                 near=0.2,
                                 far=2.5,
                                 num_samples=num_samples,
                                 background=jnp.full((6, 3), 0.5),
                                 shade=shade)
    assert len(outputs) == len(num_samples)
    assert (outputs[-1].normals is not None) == with_normals
    return sum(jnp.mean((out.rgb - target)**2) for out in outputs)

  def normals_loss_fn(variables):
    # Depends on the parameters only through the per-sample normals, i.e. second derivatives of
    # the density.
    field = nerf.field_fn(model, variables, with_normals=True)
    edges = jnp.tile(jnp.linspace(0.5, 1.5, 5), (6, 1))
    samples = field(*render.conical_frustum_gaussians(rays, edges), rays.directions)
    return jnp.sum(samples.normals * jnp.array([0.3, -0.5, 0.8]))

  @jit
  def run(variables):
    normal_grads = jax.grad(normals_loss_fn)(variables) if with_normals else None
    return jax.value_and_grad(loss_fn)(variables), normal_grads

  (loss, grads), normal_grads = run(variables)
  assert np.isfinite(loss) and loss > 0.0
  chex.assert_trees_all_equal_shapes(grads, variables)
  chex.assert_tree_all_finite(grads)
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.max(np.abs(np.asarray(leaf))) > 0.0, jax.tree_util.keystr(path)
  if with_normals:
    # Normals are differentiable: the density path gets gradients, the albedo head none.
    chex.assert_tree_all_finite(normal_grads)
    normal_grads = normal_grads['params']
    assert np.max(np.abs(np.asarray(normal_grads['density']['kernel']))) > 0.0
    assert np.max(np.abs(np.asarray(normal_grads['input']['kernel']))) > 0.0
    np.testing.assert_array_equal(normal_grads['albedo']['kernel'], 0.0)


def test_trunc_exp_value_and_clipped_gradient():
  x = jnp.array([-3.0, 0.0, 2.0, 14.9, 15.0, 20.0, 40.0])
  np.testing.assert_allclose(nerf.trunc_exp(x), np.exp(np.asarray(x, np.float64)), rtol=1e-6)
  grad = jax.vmap(jax.grad(nerf.trunc_exp))(x)
  np.testing.assert_allclose(grad, np.exp(np.minimum(np.asarray(x, np.float64), 15.0)), rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(grad)))
  # Under jit and through a chain rule too.
  g = jit(jax.grad(lambda v: jnp.sum(nerf.trunc_exp(2.0 * v))))(jnp.array([1.0, 10.0]))
  np.testing.assert_allclose(g, [2.0 * np.exp(2.0), 2.0 * np.exp(15.0)], rtol=1e-6)


def _numpy_pos_enc(x, min_deg, max_deg):
  """sin(2^l x_c) for l in [min, max) (degree major, coordinate minor), then the same with cos."""
  x = np.asarray(x, np.float64)
  sines = [np.sin(2.0**l * x[..., c]) for l in range(min_deg, max_deg) for c in range(3)]
  cosines = [np.cos(2.0**l * x[..., c]) for l in range(min_deg, max_deg) for c in range(3)]
  return np.stack(sines + cosines, axis=-1)


@pytest.mark.parametrize('min_deg,max_deg', [(0, 4), (2, 5)])
def test_integrated_pos_enc_zero_variance_is_pos_enc(min_deg, max_deg):
  x = np.random.default_rng(0).uniform(-1.5, 1.5, (4, 2, 3)).astype(np.float32)
  enc = nerf.integrated_pos_enc(jnp.asarray(x), jnp.zeros_like(x), min_deg, max_deg)
  chex.assert_shape(enc, (4, 2, 6 * (max_deg - min_deg)))
  np.testing.assert_allclose(enc, _numpy_pos_enc(x, min_deg, max_deg), atol=2e-5)
  np.testing.assert_allclose(nerf.pos_enc(jnp.asarray(x), min_deg, max_deg), enc, atol=1e-6)


def test_integrated_pos_enc_is_gaussian_expectation():
  # E[sin(w x)], E[cos(w x)] for x ~ N(mu, var), by Gauss-Hermite quadrature.
  rng = np.random.default_rng(1)
  mean = rng.uniform(-1.0, 1.0, (5, 3))
  var = rng.uniform(0.0, 0.05, (5, 3))
  nodes, quad_weights = np.polynomial.hermite_e.hermegauss(60)
  quad_weights = quad_weights / quad_weights.sum()
  x = mean[..., None] + np.sqrt(var)[..., None] * nodes  # [5, 3, Q]
  expected = []
  for fn in (np.sin, np.cos):
    for l in range(0, 4):
      expected += [np.sum(quad_weights * fn(2.0**l * x[:, c]), axis=-1) for c in range(3)]
  expected = np.stack(expected, axis=-1)
  enc = nerf.integrated_pos_enc(jnp.asarray(mean, jnp.float32), jnp.asarray(var, jnp.float32), 0, 4)
  np.testing.assert_allclose(enc, expected, atol=2e-5)


def test_integrated_pos_enc_large_variance_kills_high_frequencies():
  mean = jnp.asarray(np.random.default_rng(2).uniform(-1.0, 1.0, (6, 3)), jnp.float32)
  enc = np.asarray(nerf.integrated_pos_enc(mean, jnp.full_like(mean, 0.01), 0,
                                           8)).reshape(6, 2, 8, 3)
  plain = _numpy_pos_enc(mean, 0, 8).reshape(6, 2, 8, 3)
  # Degree l is damped by exp(-4^l var / 2): untouched at l = 0, gone at l >= 6.
  np.testing.assert_allclose(enc[:, :, 0], plain[:, :, 0] * np.exp(-0.005), atol=1e-5)
  assert np.max(np.abs(enc[:, :, 6:])) < 1e-8
  damping = np.exp(-0.5 * 4.0**np.arange(8) * 0.01)
  np.testing.assert_allclose(enc, plain * damping[None, None, :, None], atol=2e-5)
  huge = nerf.integrated_pos_enc(mean, jnp.full_like(mean, 100.0), 0, 8)
  np.testing.assert_allclose(huge, 0.0, atol=1e-20)


def _vertices(size):
  axis = np.linspace(0.0, 1.0, size)
  return np.stack(np.meshgrid(axis, axis, axis, indexing='ij'), axis=-1)  # [G, G, G, 3]


def test_trilinear_reproduces_linear_and_multilinear_functions():
  rng = np.random.default_rng(0)
  size = 5
  vertices = _vertices(size)
  a, b = rng.normal(size=(3, 2)), rng.normal(size=2)
  grid = np.concatenate([vertices @ a + b, np.prod(vertices, axis=-1, keepdims=True)], axis=-1)
  points = np.concatenate(
      [rng.uniform(0.0, 1.0, (50, 3)), [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5]]])
  out = jit(nerf.trilinear)(jnp.asarray(grid, jnp.float32), jnp.asarray(points, jnp.float32))
  chex.assert_shape(out, (53, 3))
  np.testing.assert_allclose(out[:, :2], points @ a + b, atol=1e-5)
  np.testing.assert_allclose(out[:, 2], np.prod(points, axis=-1), atol=1e-5)


def test_trilinear_at_vertices_and_clipping():
  rng = np.random.default_rng(1)
  size = 4
  grid = jnp.asarray(rng.normal(size=(size, size, size, 2)), jnp.float32)
  vertices = _vertices(size).reshape(-1, 3)
  # Points outside [0, 1]^3 take the value of the nearest boundary point; an edge midpoint
  # averages its ends.
  outside = [[1.5, -0.2, 0.5], [-3.0, 2.0, 0.25]]
  inside = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]]
  midpoint = [[0.5 / 3.0, 0.0, 1.0]]
  points = jnp.asarray(np.concatenate([vertices, outside, inside, midpoint]), jnp.float32)
  out = np.asarray(jit(nerf.trilinear)(grid, points))
  grid = np.asarray(grid)
  n = vertices.shape[0]
  np.testing.assert_allclose(out[:n], grid.reshape(-1, 2), atol=1e-5)
  np.testing.assert_allclose(out[n:n + 2], out[n + 2:n + 4], atol=1e-6)
  np.testing.assert_allclose(out[-1], 0.5 * (grid[0, 0, 3] + grid[1, 0, 3]), atol=1e-6)


def test_normals_from_density_of_a_blob_point_outwards():
  center = jnp.array([0.2, -0.1, 0.3])
  rng = np.random.default_rng(0)
  points = jnp.asarray(np.asarray(center) + rng.uniform(-0.5, 0.5, (4, 6, 3)), jnp.float32)

  def density_fn(x):
    d2 = jnp.sum((x - center)**2, axis=-1)
    return 3.0 * jnp.exp(-d2 / 0.5), d2

  density, normals, aux = jit(functools.partial(nerf.normals_from_density, density_fn))(points)
  chex.assert_shape(density, (4, 6))
  chex.assert_shape(normals, (4, 6, 3))
  offset = np.asarray(points - center, np.float64)
  np.testing.assert_allclose(aux, np.sum(offset**2, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(density, 3.0 * np.exp(-np.sum(offset**2, axis=-1) / 0.5), rtol=1e-5)
  np.testing.assert_allclose(normals,
                             offset / np.linalg.norm(offset, axis=-1, keepdims=True),
                             atol=1e-5)


def test_normals_from_density_of_a_linear_ramp():
  # Density increasing along a: the surface normal is -a / |a| everywhere.
  a = jnp.array([1.0, -2.0, 2.0])
  points = jnp.asarray(np.random.default_rng(1).normal(size=(7, 3)), jnp.float32)
  density, normals, _ = nerf.normals_from_density(lambda x: (jnp.sum(x * a, axis=-1) + 10.0, ()),
                                                  points)
  np.testing.assert_allclose(normals, np.broadcast_to(-np.asarray(a) / 3.0, (7, 3)), atol=1e-6)
  np.testing.assert_allclose(density, np.asarray(points) @ np.asarray(a) + 10.0, rtol=1e-5)


def test_difference_normals_equal_the_gradient_on_a_gaussian_blob():
  # log density is a quadratic: central differences are exact for it.
  center = jnp.array([0.1, 0.2, -0.1])
  points = jnp.asarray(np.random.default_rng(3).uniform(-0.4, 0.4, (5, 3)), jnp.float32)
  density_fn = lambda x: (2.0 * jnp.exp(-jnp.sum((x - center)**2, axis=-1) / 0.1), x[..., 0])
  exact = nerf.normals_from_density(density_fn, points)
  diff = nerf.normals_from_density(density_fn, points, eps=0.05)
  np.testing.assert_allclose(diff[0], exact[0], rtol=1e-6)
  np.testing.assert_allclose(diff[2], exact[2], rtol=1e-6)
  np.testing.assert_allclose(diff[1], exact[1], atol=1e-4)


def test_difference_normals_average_out_a_ripple_of_their_own_scale():
  # A ramp along a with a ripple along x of wavelength 0.04: the analytic normals wobble by tens
  # of degrees; differences over eps = one wavelength see only the ramp.
  a = jnp.array([0.0, 0.6, 0.8])
  density_fn = lambda x: (jnp.exp(x @ a + 0.2 * jnp.sin(2 * jnp.pi * x[..., 0] / 0.04)), ())
  points = jnp.asarray(np.random.default_rng(4).uniform(-0.3, 0.3, (64, 3)), jnp.float32)
  _, analytic, _ = nerf.normals_from_density(density_fn, points)
  _, smooth, _ = nerf.normals_from_density(density_fn, points, eps=0.04)
  assert np.max(np.abs(analytic - (-a))) > 0.5
  np.testing.assert_allclose(smooth, np.broadcast_to(-np.asarray(a), (64, 3)), atol=1e-4)


@pytest.mark.parametrize('dir_max_deg, normal_eps', [(0, 0.0), (2, 0.0), (0, 0.01)])
def test_normals_at_of_the_blob_alone_point_outwards(dir_max_deg, normal_eps):
  model = nerf.NeRF(blob_density=5.0, blob_radius=0.2, dir_max_deg=dir_max_deg,
                    normal_eps=normal_eps, **SMALL)
  points = jnp.asarray(np.random.default_rng(2).normal(size=(9, 3)) * 0.3, jnp.float32)
  dirs = jnp.zeros_like(points).at[:, 2].set(1.0) if dir_max_deg else None
  variables = model.init(jax.random.PRNGKey(0), points, jnp.zeros_like(points), dirs)
  normals = jit(nerf.normals_at, static_argnums=0)(model, _zero_density_head(variables), points)
  chex.assert_shape(normals, (9, 3))
  expected = np.asarray(points) / np.linalg.norm(np.asarray(points), axis=-1, keepdims=True)
  np.testing.assert_allclose(normals, expected, atol=3e-3 if normal_eps else 1e-4)
