"""Tests for dreamfusion_jax.render against closed forms: compositing, slabs, spheres, sampling."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import camera
from dreamfusion_jax import nerf
from dreamfusion_jax import render

# XLA's CPU backend optimisations dominate these tests' run time (compiling, not running, tiny
# graphs), so compile without them; the numerics under test are the same.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})

COLOR = (0.2, 0.5, 0.8)


def _rays(origins, directions, radii=0.002):
  origins = np.asarray(origins, np.float64)
  directions = np.asarray(directions, np.float64)
  directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  origins = np.broadcast_to(origins, directions.shape)
  return camera.Rays(origins=jnp.asarray(origins, jnp.float32),
                     directions=jnp.asarray(directions, jnp.float32),
                     radii=jnp.full(directions.shape[:-1] + (1,), radii, jnp.float32))


def _slab_field(sigma, half_thickness, sharpness=100.0, color=COLOR):
  """Density sigma between the planes z = +-half_thickness, sigmoid edges (integral 2 h sigma)."""

  def field(means, variances, directions):
    del variances, directions
    z = means[..., 2]
    density = sigma * (jax.nn.sigmoid(sharpness *
                                      (z + half_thickness)) - jax.nn.sigmoid(sharpness *
                                                                             (z - half_thickness)))
    return nerf.FieldSamples(density=density,
                             albedo=jnp.broadcast_to(jnp.asarray(color), means.shape))

  return field


def _sphere_density(points, radius, strength=1e3, sharpness=1e3):
  """A dense ball at the origin, sigmoid edge; (density, aux) as normals_from_density wants."""
  distance = jnp.sqrt(jnp.sum(points**2, axis=-1))
  return strength * jax.nn.sigmoid((radius - distance) * sharpness), distance


def _sphere_field(radius):

  def field(means, variances, directions):
    del variances, directions
    density, normals, _ = nerf.normals_from_density(
        functools.partial(_sphere_density, radius=radius), means)
    return nerf.FieldSamples(density=density, albedo=jnp.ones_like(means), normals=normals)

  return field


def _ray_sphere(origins, directions, radius):
  """Float64 first hit distances, hit mask and closest approach of rays to an origin sphere."""
  b = np.sum(origins * directions, axis=-1)
  disc = b**2 - (np.sum(origins**2, axis=-1) - radius**2)
  t_hit = -b - np.sqrt(np.maximum(disc, 0.0))
  closest = np.sqrt(np.maximum(-disc, 0.0) + radius**2)
  return t_hit, disc > 0.0, closest


# compositing_weights


@pytest.mark.parametrize('num_intervals', [1, 2, 7, 64])
def test_constant_density_compositing_is_subdivision_invariant(num_intervals):
  rng = np.random.default_rng(num_intervals)
  sigma, t0, length = np.array([0.3, 2.0, 9.0]), 0.7, 1.3
  inner = np.sort(rng.uniform(t0, t0 + length, size=(3, num_intervals - 1)), axis=-1)
  edges = np.concatenate([np.full((3, 1), t0), inner, np.full((3, 1), t0 + length)], axis=-1)
  density = np.broadcast_to(sigma[:, None], (3, num_intervals))
  weights, transmittance = jit(render.compositing_weights)(density, edges)
  chex.assert_shape(weights, (3, num_intervals))
  chex.assert_shape(transmittance, (3, num_intervals + 1))
  expected_t = np.exp(-sigma * length)
  np.testing.assert_allclose(transmittance[:, -1], expected_t, rtol=1e-5)
  np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0 - expected_t, rtol=1e-5)
  np.testing.assert_allclose(transmittance[:, 0], 1.0)
  assert np.all(np.asarray(weights) >= 0.0)
  assert np.all(np.diff(np.asarray(transmittance), axis=-1) <= 0.0)
  # Transmittance before each edge is exp(-sigma (t - t0)).
  np.testing.assert_allclose(transmittance,
                             np.exp(-sigma[:, None] * (edges - t0)),
                             rtol=1e-5,
                             atol=1e-7)


def test_compositing_weights_two_intervals_closed_form():
  s1, s2, d1, d2 = 1.5, 0.4, 0.3, 2.0
  weights, transmittance = render.compositing_weights(jnp.array([[s1, s2]]),
                                                      jnp.array([[1.0, 1.0 + d1, 1.0 + d1 + d2]]))
  a1, a2 = 1.0 - np.exp(-s1 * d1), 1.0 - np.exp(-s2 * d2)
  np.testing.assert_allclose(weights[0], [a1, (1.0 - a1) * a2], rtol=1e-6)
  np.testing.assert_allclose(transmittance[0], [1.0, 1.0 - a1, (1.0 - a1) * (1.0 - a2)], rtol=1e-6)
  # A zero-length or zero-density interval is invisible.
  weights, _ = render.compositing_weights(jnp.array([[5.0, 0.0, 5.0]]),
                                          jnp.array([[0.0, 0.0, 1.0, 1.0]]))
  np.testing.assert_allclose(weights, 0.0)


# render_rays on analytic fields


def test_render_rays_slab_opacity_matches_beer_lambert():
  sigma, half = 3.0, 0.25
  theta = np.deg2rad([0.0, 30.0, 45.0, 60.0])
  phi = np.array([0.0, 1.0, 2.0, 3.0])
  directions = np.stack([np.sin(theta) * np.cos(phi),
                         np.sin(theta) * np.sin(phi), -np.cos(theta)],
                        axis=-1)
  rays = _rays([0.1, 0.2, 1.0], directions)
  expected = 1.0 - np.exp(-sigma * 2.0 * half / np.cos(theta))
  render_fn = jit(
      functools.partial(render.render_rays,
                        jax.random.PRNGKey(0),
                        _slab_field(sigma, half),
                        near=0.0,
                        far=3.0,
                        num_samples=(64, 128),
                        background=jnp.zeros((4, 3)),
                        randomized=False))
  outputs = render_fn(rays)
  assert len(outputs) == 2
  chex.assert_shape(outputs[0].weights, (4, 64))
  chex.assert_shape(outputs[1].weights, (4, 128))
  chex.assert_shape(outputs[1].t_edges, (4, 129))
  np.testing.assert_allclose(outputs[-1].acc, expected, atol=1e-3)
  np.testing.assert_allclose(outputs[0].acc, expected, atol=3e-3)
  # Uniform density: the depth is the mean of an exponential of rate sigma truncated to the path
  # in the slab.
  rate = sigma
  length = 2.0 * half / np.cos(theta)
  entry = (1.0 - half) / np.cos(theta)
  mean_in_slab = 1.0 / rate - length * np.exp(-rate * length) / (1.0 - np.exp(-rate * length))
  np.testing.assert_allclose(outputs[-1].depth, entry + mean_in_slab, atol=5e-3)
  assert outputs[-1].normals is None and outputs[-1].sample_normals is None


@pytest.fixture(scope='module')
def sphere_render():
  radius, distance, size, focal = 0.5, 3.0, 9, 15.0
  el, az = np.deg2rad(17.0), np.deg2rad(29.0)
  eye = distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
  c2w = camera.look_at(eye, np.zeros(3))
  rays = camera.generate_rays(c2w, focal, size, size).reshape(-1)
  count = size * size
  render_fn = jit(
      functools.partial(render.render_rays,
                        jax.random.PRNGKey(0),
                        _sphere_field(radius),
                        near=1.0,
                        far=5.0,
                        num_samples=(64, 128),
                        background=jnp.zeros((count, 3)),
                        randomized=False))
  return dict(rays=rays,
              outputs=render_fn(rays),
              radius=radius,
              distance=distance,
              center=count // 2)


def test_render_rays_sphere_depth_and_opacity(sphere_render):
  rays, out, radius = sphere_render['rays'], sphere_render['outputs'][-1], sphere_render['radius']
  origins = np.asarray(rays.origins, np.float64)
  directions = np.asarray(rays.directions, np.float64)
  t_hit, hit, closest = _ray_sphere(origins, directions, radius)
  assert 5 < hit.sum() < hit.size - 5  # The image holds both hits and misses.
  depth, acc = np.asarray(out.depth, np.float64), np.asarray(out.acc, np.float64)
  center = sphere_render['center']
  assert hit[center]
  np.testing.assert_allclose(depth[center], sphere_render['distance'] - radius, atol=1e-3)
  np.testing.assert_allclose(depth[hit], t_hit[hit], atol=5e-3)
  np.testing.assert_allclose(acc[hit], 1.0, atol=1e-3)
  assert np.all(closest[~hit] > radius + 0.05)
  np.testing.assert_allclose(acc[~hit], 0.0, atol=1e-3)
  np.testing.assert_allclose(depth[~hit], 5.0, atol=1e-3)  # Empty rays report the far bound.
  # The coarse level already sees the sphere, less precisely.
  coarse = sphere_render['outputs'][0]
  np.testing.assert_allclose(np.asarray(coarse.depth)[hit], t_hit[hit], atol=0.05)


def test_render_rays_sphere_normals(sphere_render):
  rays, out, radius = sphere_render['rays'], sphere_render['outputs'][-1], sphere_render['radius']
  origins = np.asarray(rays.origins, np.float64)
  directions = np.asarray(rays.directions, np.float64)
  t_hit, hit, _ = _ray_sphere(origins, directions, radius)
  chex.assert_shape(out.normals, (hit.size, 3))
  chex.assert_shape(out.sample_normals, (hit.size, 128, 3))
  normals = np.asarray(out.normals, np.float64)[hit]
  # Composited normals of opaque hits are (nearly) unit and point outwards at the hit point.
  np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=2e-2)
  points = origins[hit] + t_hit[hit, None] * directions[hit]
  outward = points / np.linalg.norm(points, axis=-1, keepdims=True)
  cosine = np.sum(normals * outward, axis=-1) / np.linalg.norm(normals, axis=-1)
  assert np.all(cosine > 0.99), cosine
  # They face the camera.
  assert np.all(np.sum(normals * directions[hit], axis=-1) < 0.0)


def test_render_rays_composites_color_over_background():
  # Rays from z = 2 downwards, some missing the scene sphere of radius 1 entirely.
  xs = np.array([0.0, 0.3, 0.6, 0.9, 1.2, 1.5])
  origins = np.stack([xs, 0.1 * xs, np.full_like(xs, 2.0)], axis=-1)
  directions = np.broadcast_to([-0.05, 0.0, -1.0], origins.shape)
  rays = _rays(origins, directions)
  background = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 3)), jnp.float32)
  render_fn = jit(lambda key, r: render.render_rays(key,
                                                    _slab_field(2.0, 0.3),
                                                    r,
                                                    near=0.5,
                                                    far=4.0,
                                                    num_samples=(16, 24),
                                                    background=background,
                                                    scene_radius=1.0,
                                                    randomized=True))
  outputs = render_fn(jax.random.PRNGKey(3), rays)
  t_enter, t_exit = render.intersect_sphere(rays, 1.0)
  inside = np.asarray(t_exit > t_enter)
  assert inside.any() and not inside.all()
  for out in outputs:
    acc = np.asarray(out.acc)[:, None]
    np.testing.assert_allclose(out.rgb, acc * np.array(COLOR) + (1.0 - acc) * background, atol=1e-5)
    assert np.all(acc[:3] > 0.5)  # These cross the whole slab inside the scene sphere.
    np.testing.assert_allclose(acc[~inside], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.rgb)[~inside],
                               np.asarray(background)[~inside],
                               atol=1e-6)
    # Samples are restricted to the part of the ray inside the scene sphere, in order.
    edges = np.asarray(out.t_edges)
    assert np.all(np.diff(edges, axis=-1) >= 0.0)
    np.testing.assert_allclose(edges[inside, 0], np.maximum(t_enter[inside], 0.5), atol=1e-5)
    np.testing.assert_allclose(edges[inside, -1], np.minimum(t_exit[inside], 4.0), atol=1e-5)
  # Randomized: another key gives other sample positions.
  again = render_fn(jax.random.PRNGKey(4), rays)
  assert not np.allclose(again[0].t_edges[inside], outputs[0].t_edges[inside])


# sample_from_weights


def _expected_pdf(weights, padding=0.01):
  """mip-NeRF's resampling pdf: each bin's mean of its max with either neighbour, plus padding."""
  w = np.pad(np.asarray(weights, np.float64), ((0, 0), (1, 1)), mode='edge')
  left = np.maximum(w[:, :-2], w[:, 1:-1])
  right = np.maximum(w[:, 1:-1], w[:, 2:])
  pdf = 0.5 * (left + right) + padding
  return pdf / pdf.sum(axis=-1, keepdims=True)


def test_sample_from_weights_inverts_the_cdf():
  rng = np.random.default_rng(0)
  bins, new = 16, 200
  edges = np.stack([
      np.linspace(0.0, 1.0, bins + 1),
      np.sort(np.concatenate([[2.0, 5.0], rng.uniform(2.0, 5.0, bins - 1)]))
  ]).astype(np.float32)
  concentrated = np.full(bins, 0.002)
  concentrated[5] = 0.97
  weights = np.stack([concentrated, rng.uniform(size=bins)]).astype(np.float32)
  samples = np.asarray(
      jit(render.sample_from_weights, static_argnums=(3, 4))(jax.random.PRNGKey(0), edges, weights,
                                                             new, False), np.float64)
  chex.assert_shape(samples, (2, new + 1))
  assert np.all(np.diff(samples, axis=-1) >= 0.0)
  np.testing.assert_array_equal(samples[:, 0], edges[:, 0])
  np.testing.assert_array_equal(samples[:, -1], edges[:, -1])

  pdf = _expected_pdf(weights)
  cdf = np.concatenate([np.zeros((2, 1)), np.cumsum(pdf, axis=-1)], axis=-1)
  u = np.linspace(0.0, 1.0 - 1e-6, new + 1)
  for ray in range(2):
    # Interior samples are the evenly spaced quantiles of the piecewise linear CDF.
    np.testing.assert_allclose(samples[ray, 1:-1],
                               np.interp(u[1:-1], cdf[ray], edges[ray]),
                               atol=1e-5)
    # So each bin receives its share of the samples.
    counts, _ = np.histogram(samples[ray], bins=edges[ray])
    np.testing.assert_allclose(counts / new, pdf[ray], atol=2.0 / new)
  # The bin with 97% of the weight (and its blurred neighbours) get most samples.
  counts, _ = np.histogram(samples[0], bins=edges[0])
  assert counts[5] > 0.4 * new and counts[4:7].sum() > 0.9 * new


def test_sample_from_weights_randomized_and_no_gradient():
  rng = np.random.default_rng(1)
  edges = jnp.asarray(np.sort(rng.uniform(1.0, 3.0, (4, 9)), axis=-1), jnp.float32)
  weights = jnp.asarray(rng.uniform(size=(4, 8)), jnp.float32)
  fn = jit(render.sample_from_weights, static_argnums=(3, 4))
  a = np.asarray(fn(jax.random.PRNGKey(0), edges, weights, 32, True))
  b = np.asarray(fn(jax.random.PRNGKey(1), edges, weights, 32, True))
  for s in (a, b):
    assert np.all(np.diff(s, axis=-1) >= 0.0)
    np.testing.assert_array_equal(s[:, 0], edges[:, 0])
    np.testing.assert_array_equal(s[:, -1], edges[:, -1])
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, fn(jax.random.PRNGKey(0), edges, weights, 32, True))
  grads = jit(
      jax.grad(
          lambda e, w: jnp.sum(render.sample_from_weights(jax.random.PRNGKey(0), e, w, 32, True)),
          argnums=(0, 1)))(edges, weights)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


# intersect_sphere


def test_intersect_sphere():
  rays = _rays([[0.0, 0.0, -3.0], [0.0, 0.6, -3.0], [0.0, 2.0, -3.0], [0.0, 0.0, 0.0],
                [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]],
               [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0],
                [-1.0, -1.0, -1.0]])
  t_enter, t_exit = render.intersect_sphere(rays, 1.0)
  s3 = np.sqrt(3.0)
  # Through the centre, off-centre (chord half-length 0.8), missing, from inside, pointing away,
  # diagonal.
  np.testing.assert_allclose(t_enter, [2.0, 2.2, 0.0, 0.0, 0.0, s3 - 1.0], atol=1e-5)
  np.testing.assert_allclose(t_exit, [4.0, 3.8, 0.0, 1.0, 0.0, s3 + 1.0], atol=1e-5)


# render_image


def test_render_image_chunking_matches_single_batch():
  height, width, chunk = 5, 7, 8  # 35 rays: 4 full chunks and a padded one.
  c2w = camera.look_at(np.array([1.5, -1.0, 1.2]), np.zeros(3))
  rays = camera.generate_rays(c2w, 6.0, height, width)
  count = height * width

  def render_fn(r):
    outputs = render.render_rays(jax.random.PRNGKey(0),
                                 _slab_field(2.0, 0.3),
                                 r,
                                 near=0.5,
                                 far=4.0,
                                 num_samples=(12, 12),
                                 background=jnp.broadcast_to(jnp.array([1.0, 0.0, 0.5]),
                                                             r.origins.shape),
                                 randomized=False)
    return outputs[-1]

  render_fn = jit(render_fn)
  image = render.render_image(render_fn, rays, chunk)
  whole = render_fn(rays.reshape(count))
  chex.assert_shape(image.rgb, (height, width, 3))
  chex.assert_shape(image.acc, (height, width))
  chex.assert_shape(image.weights, (height, width, 12))
  chex.assert_shape(image.t_edges, (height, width, 13))
  chex.assert_trees_all_close(image,
                              jax.tree.map(lambda x: x.reshape((height, width) + x.shape[1:]),
                                           whole),
                              atol=1e-6)
  # The image has structure (not all rays alike), so a misplaced chunk would show.
  assert np.std(np.asarray(image.acc)) > 0.01


# conical_frustum_gaussians


def test_conical_frustum_gaussians_match_cone_moments():
  # Along a cone of radius radii * t, t has density ~ t^2 on [t0, t1]; cross-sections are discs.
  t0, t1, radii = np.array([1.0, 0.5, 2.0]), np.array([3.0, 0.6, 2.01]), 0.05
  direction = np.array([0.48, -0.6, 0.64])
  origin = np.array([0.3, 0.2, -0.1])
  rays = _rays(origin, np.broadcast_to(direction, (3, 3)), radii=radii)
  edges = jnp.asarray(np.stack([t0, t1], axis=-1), jnp.float32)  # One interval per ray.
  means, variances = render.conical_frustum_gaussians(rays, edges)
  chex.assert_shape([means, variances], (3, 1, 3))
  e_t = 0.75 * (t1**4 - t0**4) / (t1**3 - t0**3)
  e_t2 = 0.6 * (t1**5 - t0**5) / (t1**3 - t0**3)
  var_t = e_t2 - e_t**2
  var_r = radii**2 * e_t2 / 4.0
  np.testing.assert_allclose(means[:, 0], origin + e_t[:, None] * direction, rtol=1e-5, atol=1e-6)
  expected = var_t[:, None] * direction**2 + var_r[:, None] * (1.0 - direction**2)
  np.testing.assert_allclose(variances[:, 0], expected, rtol=2e-3, atol=1e-9)


def test_conical_frustum_gaussians_on_ray_and_radius_monotone():
  rng = np.random.default_rng(0)
  directions = rng.normal(size=(3, 3))
  edges = jnp.asarray(np.sort(rng.uniform(0.5, 4.0, (3, 10)), axis=-1), jnp.float32)
  fn = jit(render.conical_frustum_gaussians)
  small = _rays(rng.normal(size=(3, 3)), directions, radii=0.001)
  means, var_small = fn(small, edges)
  o, d = np.asarray(small.origins, np.float64), np.asarray(small.directions, np.float64)
  offset = np.asarray(means, np.float64) - o[:, None]
  t = np.sum(offset * d[:, None], axis=-1)
  np.testing.assert_allclose(offset, t[..., None] * d[:, None], atol=1e-5)  # On the ray.
  assert np.all(t >= np.asarray(edges)[:, :-1] - 1e-6) and np.all(t <= np.asarray(edges)[:, 1:] +
                                                                  1e-6)
  assert np.all(np.asarray(var_small) > 0.0)
  big = camera.Rays(origins=small.origins, directions=small.directions, radii=small.radii * 10.0)
  means_big, var_big = fn(big, edges)
  np.testing.assert_allclose(means_big, means)  # Only the spread depends on the radius.
  assert np.all(np.asarray(var_big) > np.asarray(var_small))
  # Only the spread across the ray grows: the growth is proportional to 1 - d_i^2 on each axis.
  growth = np.asarray(var_big, np.float64) - np.asarray(var_small, np.float64)
  across = 1.0 - d[:, None]**2
  ratio = growth / across
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape), rtol=1e-2)


def test_independent_chunks_keep_the_row_order_and_give_each_group_its_key():
  fn = lambda key, x: (x * 2.0, jnp.broadcast_to(jax.random.uniform(key), x.shape[:1]))
  x = jnp.arange(24.0).reshape(12, 2)
  doubled, draws = render.independent_chunks(fn, 3)(jax.random.key(0), x)
  np.testing.assert_array_equal(doubled, x * 2.0)
  # Rows c, c + 3, ... form group c and share its draw; the three groups' draws differ.
  np.testing.assert_array_equal(draws.reshape(4, 3), np.broadcast_to(draws[:3], (4, 3)))
  assert len(set(np.asarray(draws[:3]).tolist())) == 3
  with pytest.raises(ValueError, match='12 rays do not split into 5 chunks'):
    render.independent_chunks(fn, 5)(jax.random.key(0), x)
