"""hashgrid: Instant-NGP's hash encoding, its layout, the progressive band and the table's rate."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from configs import dreamfusion_hash
from configs import nerf_hash
from dreamfusion_jax import build
from dreamfusion_jax import config_checks
from dreamfusion_jax import hashgrid
from dreamfusion_jax import many_prompts
from dreamfusion_jax import nerf
from dreamfusion_jax import train
from dreamfusion_jax.testing import runs


def test_spatial_hash_against_hand_computed_indices():
  # (x * 1) ^ (y * 2654435761 mod 2^32) ^ (z * 805459861 mod 2^32), worked out on paper:
  # 2 * 2654435761 = 5308871522 = 1013904226 (mod 2^32); 3 * 805459861 = 2416379583;
  # 1 ^ 1013904226 ^ 2416379583 = 2892625372.
  coords = jnp.array([[1, 2, 3], [0, 1, 0], [0, 0, 1], [7, 0, 0]], jnp.uint32)
  np.testing.assert_array_equal(hashgrid.spatial_hash(coords),
                                [2892625372, 2654435761, 805459861, 7])


def test_levels_of_threestudios_grid():
  # threestudio's dreamfusion-sd grid: 16 levels, N_min 16, per_level_scale 1.4472692 (max 4096).
  grid = hashgrid.levels(16, 2, 19, 16, 4096)
  assert grid.resolutions == (16, 24, 34, 49, 71, 102, 148, 213, 308, 446, 646, 934, 1352, 1956,
                              2831, 4096)
  assert grid.hashed == (False,) * 5 + (True,) * 11  # Levels 0-4 dense (RECIPES.md).
  assert grid.sizes[:5] == (16**3, 24**3, 34**3, 49**3 + 7, 71**3 + 1)  # Rounded up to 8.
  assert grid.sizes[5:] == (2**19,) * 11
  assert grid.offsets[1] == 16**3 and grid.num_params == 2 * (sum(grid.sizes[:5]) + 11 * 2**19)


def test_table_index_is_direct_on_dense_levels_and_hashed_above():
  grid = hashgrid.levels(2, 1, 6, 4, 8)  # 4^3 = 64 fits 2^6 entries; 8^3 does not.
  assert grid.resolutions == (4, 8) and grid.hashed == (False, True) and grid.sizes == (64, 64)
  coords = jnp.array([[[1, 2, 3], [1, 2, 3]]], jnp.uint32)  # [1, L, 3]
  rows = hashgrid.table_index(coords, grid)
  assert rows.tolist() == [[1 + 2 * 4 + 3 * 16, 64 + 2892625372 % 64]]


def dense_grid():
  grid = hashgrid.levels(3, 2, 16, 4, 16)
  assert not any(grid.hashed)
  table = jax.random.normal(jax.random.key(0), (grid.rows, 2))
  return grid, table


def test_dense_levels_equal_a_dense_trilinear_grid():
  grid, table = dense_grid()
  points = jax.random.uniform(jax.random.key(1), (200, 3), minval=0.0, maxval=0.8)
  got = hashgrid.encode(table, points, grid).reshape(200, 3, 2)
  for level, res in enumerate(grid.resolutions):
    rows = table[grid.offsets[level]:grid.offsets[level] + res**3]
    # Row x + y res + z res^2 is vertex (x, y, z): as a [x, y, z, F] array for nerf.trilinear,
    # whose grid spans [0, 1] with res - 1 cells; vertex coordinates are x * s + 0.5.
    vertices = rows.reshape(res, res, res, 2).transpose(2, 1, 0, 3)
    coords = points * grid.scales[level] + 0.5
    assert float(coords.max()) < res - 1  # Inside the grid, away from the wrap at the far face.
    expected = nerf.trilinear(vertices, coords / (res - 1))
    np.testing.assert_allclose(got[:, level], expected, rtol=1e-5, atol=1e-5)


def test_encoding_is_continuous_across_cell_faces():
  grid = hashgrid.levels(4, 2, 10, 8, 64)
  table = jax.random.normal(jax.random.key(0), (grid.rows, 2))
  # Points on faces of the finest level's cells (x s + 0.5 an integer), approached from both sides.
  s = grid.scales[-1]
  rng = np.random.default_rng(0)
  face = (rng.integers(3, 60, (50, 1)) - 0.5) / s
  points = np.concatenate([face, rng.uniform(0.1, 0.9, (50, 2))], axis=1).astype(np.float32)
  step = np.array([1e-4, 0.0, 0.0], np.float32)
  below = hashgrid.encode(table, jnp.asarray(points - step), grid)
  above = hashgrid.encode(table, jnp.asarray(points + step), grid)
  # Each level is Lipschitz with constant about |table| * s * 2e-4 over the gap; no jump.
  assert float(jnp.max(jnp.abs(above - below))) < 0.2
  far = hashgrid.encode(table, jnp.asarray(points + 40 * step), grid)
  assert float(jnp.max(jnp.abs(far - below))) > 0.2  # The bound above is not vacuous.


def test_gradients_match_finite_differences():
  grid = hashgrid.levels(3, 2, 8, 4, 32)  # Dense and hashed levels.
  assert grid.hashed == (False, True, True)
  table = jax.random.normal(jax.random.key(0), (grid.rows, 2))
  # Cell interiors: a finite-difference step must not cross a face.
  points = jnp.array([[0.21, 0.43, 0.67], [0.52, 0.11, 0.38]])
  f = lambda t, p: jnp.sum(jnp.sin(hashgrid.encode(t, p, grid)))
  check_grads(f, (table, points), order=1, modes=['rev'], eps=1e-3, atol=2e-2, rtol=2e-2)


def test_nerf_parameter_count_follows_the_formula():
  config = nerf_hash.get_config()
  run = build.build(config)
  params = run.init_state().params['params']
  grid = run.model.hash_grid()
  table = params[hashgrid.TABLE_NAME]
  levels = config.nerf.hash_levels
  assert table.shape == (grid.rows, config.nerf.hash_features)
  width = config.nerf.width
  # input Dense, 1 residual block with its norm, the output norm, density, bottleneck-free albedo.
  mlp = (levels * config.nerf.hash_features * width + width) + (width * width + width) + (
      2 * width + 2 * width) + (width + 1) + (width * 3 + 3)
  assert sum(x.size for x in jax.tree.leaves(params)) == grid.num_params + mlp
  line = build.describe_params(run, {'params': params})
  assert f'{grid.num_params + mlp:,} parameters' in line
  assert f'2^{config.nerf.hash_log2_table} entries: {grid.num_params:,} in the table' in line
  assert float(jnp.max(jnp.abs(table))) <= hashgrid.INIT_RANGE  # Instant-NGP's U(-1e-4, 1e-4).
  assert float(jnp.std(table)) > 0.5 * hashgrid.INIT_RANGE / np.sqrt(3)


def test_active_levels_follow_threestudios_band():
  got = [int(hashgrid.active_levels(s, 16, 8, 2000, 500))
         for s in (0, 1999, 2000, 2499, 2500, 3000, 5999, 6000, 10_000)]
  assert got == [8, 8, 8, 8, 9, 10, 15, 16, 16]


def band_run(band, table_lr_scale=1.0):
  config = nerf_hash.get_config()
  config.nerf.update(hash_levels=4, hash_max_res=64, hash_log2_table=12, hash_band=band)
  config.optim.update(warmup_steps=0, table_lr_scale=table_lr_scale)
  return build.build(config)


def one_step(run, params, opt_state, key):
  """An optimiser step on a loss of the encoding at random points, with every row's gradient."""
  return _one_step(run.model, run.optimizer, params, opt_state, key)


@functools.partial(jax.jit, static_argnums=(0, 1))  # One compile, not op-by-op dispatch.
def _one_step(model, optimizer, params, opt_state, key):
  points = jax.random.uniform(key, (4096, 3), minval=-1.0, maxval=1.0)
  loss = lambda p: jnp.mean((model.apply(p, points, points)[1] - 0.3)**2)
  grads = jax.grad(loss)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, updates


def test_progressive_band_holds_finer_levels_at_zero_until_their_step():
  run = band_run((2, 3, 2))  # Levels 0-1 from the start, level 2 at step 3, level 3 at step 5.
  params = run.init_state().params
  grid = run.model.hash_grid()
  level_of = hashgrid.row_levels(grid)
  table = lambda p: np.asarray(p['params'][hashgrid.TABLE_NAME])
  assert not table(params)[level_of >= 2].any() and table(params)[level_of < 2].all()
  opt_state = run.optimizer.init(params)
  for step in range(7):
    before = table(params)
    params, opt_state, _ = one_step(run, params, opt_state, jax.random.key(step))
    moved = np.abs(table(params) - before).max(axis=1) > 0
    on = int(hashgrid.active_levels(step, 4, 2, 3, 2))
    for level in range(4):
      assert moved[level_of == level].any() == (level < on), (step, level)


def test_table_learns_at_its_own_rate():
  base, scaled = band_run(()), band_run((), table_lr_scale=10.0)
  params = base.init_state().params
  _, _, u1 = one_step(base, params, base.optimizer.init(params), jax.random.key(0))
  _, _, u10 = one_step(scaled, params, scaled.optimizer.init(params), jax.random.key(0))
  np.testing.assert_allclose(u10['params'][hashgrid.TABLE_NAME],
                             10 * u1['params'][hashgrid.TABLE_NAME], rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose(u10['params']['input']['kernel'], u1['params']['input']['kernel'])


@pytest.mark.parametrize('field, value, expected', [
    ('nerf.hash_log2_table', 40, 'config.nerf.hash_log2_table=40 must lie in [3, 26]'),
    ('nerf.hash_min_res', 4096, 'config.nerf.hash_min_res=4096 must be >= 2 and at most'),
    ('nerf.hash_band', (20, 0, 1), 'config.nerf.hash_band=(20, 0, 1) must be () (off)'),
    ('nerf.hash_band', (8, 2000), 'config.nerf.hash_band=(8, 2000) must be'),
    ('optim.table_lr_scale', 0.0, 'config.optim.table_lr_scale=0.0 must be > 0'),
])
def test_bad_hash_values(small_scene, tmp_path, field, value, expected):
  config = nerf_hash.get_config()
  config.data.path = str(small_scene)
  config.update_from_flattened_dict({field: value})
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate_config(config, tmp_path / 'run')
  assert expected in str(error.value) and '\n' not in str(error.value)


@pytest.mark.slow  # About 50 s; the default suite has the unit tests above.
def test_classic_fit_through_the_entry_point(small_scene, tmp_path, capsys):
  config = nerf_hash.get_config()
  config.data.path = str(small_scene)
  config.update(num_steps=100, batch_size=256, log_every=50)
  metrics = train.train_and_evaluate(config, tmp_path / 'run')
  assert metrics['test_psnr'] >= 22.0, metrics
  grid = build.make_nerf(config).hash_grid()
  assert f'{grid.num_params:,} in the table' in capsys.readouterr().out


@pytest.mark.slow  # About a minute: two prompts trained, exported and loaded.
def test_many_prompts_with_the_band_through_the_entry_point(tiny_model, tmp_path):
  """Two prompts vmapped, 4 steps (0 to 3), the band (1, 2, 1): level 0 trains from step 0,
  level 1 from step 3, level 2 would at step 4; each prompt's run exports and loads."""
  values = dict(prompts=('a red cube', 'a blue sphere'), num_steps=4, **{
      'nerf.encoding': 'hash', 'nerf.hash_levels': 3, 'nerf.hash_log2_table': 10,
      'nerf.hash_min_res': 4, 'nerf.hash_max_res': 16, 'nerf.hash_band': (1, 2, 1)})
  config = runs.tiny_config(tiny_model, **values)
  train.train_and_evaluate(config, tmp_path / 'run')
  grid = build.make_nerf(config).hash_grid()
  level_of = hashgrid.row_levels(grid)
  init = np.asarray(build.build(config).init_state().params['nerf']['params'][
      hashgrid.TABLE_NAME])
  for folder in many_prompts.prompt_dirs(tmp_path / 'run', list(config.prompts)):
    loaded = build.load_run(folder)
    assert loaded.step == 4 and (folder / 'mesh.glb').is_file()
    table = np.asarray(loaded.state.params['nerf']['params'][hashgrid.TABLE_NAME])
    moved = np.abs(table - init).max(axis=1) > 0
    assert moved[level_of == 0].any() and moved[level_of == 1].any()
    assert not table[level_of == 2].any()  # Never switched on: still 0.


@pytest.mark.slow  # About a minute: the 12.6 M-entry table and its Adam state.
def test_threestudio_recipe_trains_with_a_tiny_model(tiny_model, tmp_path, capsys):
  """configs/dreamfusion_hash.py as shipped (its full grid and band) for 3 steps of a tiny model."""
  config = dreamfusion_hash.get_config()
  # The blob's softplus(10 + raw) peaks near 10: the mesh at half of it.
  config.update_from_flattened_dict(runs.tiny_values(tiny_model, num_steps=3, **{
      'export.mesh_threshold': 5.0}))
  assert config.nerf.hash_band == (8, 2000, 500) and config.nerf.hash_log2_table == 19
  metrics = train.train_and_evaluate(config, tmp_path / 'run')
  assert metrics['steps'] == 3 and (tmp_path / 'run' / 'mesh.ply').is_file()
  assert '12,599,920 in the table' in capsys.readouterr().out  # 5 dense + 11 x 2^19, x 2.
