"""build: one builder of a run's parts and one loader of a trained run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import dreamfusion as dreamfusion_config
from configs import nerf_small
from dreamfusion_jax import build
from dreamfusion_jax import render
from dreamfusion_jax import steps


def test_build_gives_the_parts_of_each_method():
  run = build.build(dreamfusion_config.get_config())
  assert isinstance(run.settings, steps.SDSSettings) and isinstance(run.renderer, render.Renderer)
  assert run.settings.batch_size == 4 and run.model.width == run.config.nerf.width
  classic = build.build(nerf_small.get_config())
  assert classic.background_model is None and classic.settings is None
  state = classic.init_state()
  assert 'params' in state.params and int(state.step) == 0


def test_parallel_chunks_are_automatic_on_a_cpu_only(monkeypatch):
  config = dreamfusion_config.get_config()
  assert config.render.parallel_chunks == 0 and jax.default_backend() == 'cpu'
  assert build.parallel_chunks(config) == build.CPU_PARALLEL_CHUNKS
  assert build.make_sds_settings(config).parallel_chunks == build.CPU_PARALLEL_CHUNKS
  assert build.step_compiler_options(config) == {
      'xla_cpu_enable_concurrency_optimized_scheduler': True}
  config.batch_size, config.render.height, config.render.width = 1, 3, 3  # 9 rays: 3 groups.
  assert build.parallel_chunks(config) == 3
  config.render.parallel_chunks = 1
  assert build.parallel_chunks(config) == 1 and build.step_compiler_options(config) is None
  config.render.parallel_chunks = 0
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert build.parallel_chunks(config) == 1 and build.step_compiler_options(config) is None


def test_initial_state_is_one_program_equal_to_eager_init(compiles):
  config = dreamfusion_config.get_config()
  run = build.build(config)
  net, bg = run.model, run.background_model
  start = compiles()
  state = run.init_state()
  assert compiles() - start <= 12  # The init program and a few key ops (8 in a fresh process; 96 eagerly).
  key_nerf, key_bg = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), build.INIT_STREAM))
  x = jnp.zeros((1, 3))
  eager = {'nerf': net.init(key_nerf, x, x), 'background': bg.init(key_bg, x)}
  assert jax.tree.all(jax.tree.map(np.array_equal, state.params, eager))


def test_load_run_refuses_folders_without_a_trained_run(tmp_path):
  with pytest.raises(build.ConfigError, match='config.json not found'):
    build.load_run(tmp_path)
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(build.ConfigError, match='is not a run config'):
    build.load_run(tmp_path)
  (tmp_path / 'config.json').write_text(dreamfusion_config.get_config().to_json_best_effort())
  with pytest.raises(build.ConfigError, match='holds no checkpoint: train the run first'):
    build.load_run(tmp_path)
  assert not (tmp_path / 'checkpoints').exists()  # Nothing created by looking.


def test_optimizer_is_adan_or_adam_behind_the_clip():
  """configs/dreamfusion.py's Adan (stable-dreamfusion's) is optax.adan after the global clip."""
  config = dreamfusion_config.get_config()
  params = {'w': jnp.arange(6.0).reshape(2, 3)}
  grads = {'w': jnp.full((2, 3), 10.0)}  # Norm 24.5, clipped to 5.
  clipped = {'w': grads['w'] * 5.0 / jnp.sqrt(600.0)}
  optim = config.optim
  reference = optax.adan(optim.lr_init, b1=optim.beta1, b2=optim.beta2, b3=optim.beta3,
                         eps=optim.eps, weight_decay=optim.weight_decay)
  got, _ = build.make_optimizer(config).update(grads, build.make_optimizer(config).init(params),
                                               params)
  expected, _ = reference.update(clipped, reference.init(params), params)
  np.testing.assert_allclose(got['w'], expected['w'], rtol=1e-5)
  del config.optim['name']  # A config.json from before the field: Adam, as then.
  config.optim.weight_decay = 0.0
  adam = optax.adam(optim.lr_init, b1=optim.beta1, b2=optim.beta2, eps=optim.eps)
  got, _ = build.make_optimizer(config).update(grads, build.make_optimizer(config).init(params),
                                               params)
  expected, _ = adam.update(clipped, adam.init(params), params)
  np.testing.assert_allclose(got['w'], expected['w'], rtol=1e-5)


def test_background_learns_at_its_own_rate():
  """threestudio's recipe: the background at 0.1 x the NeRF's rate (Adam: updates scale alike)."""
  from configs import dreamfusion_hash  # pylint: disable=g-import-not-at-top
  config = dreamfusion_hash.get_config()
  config.nerf.update(hash_levels=2, hash_max_res=32, hash_log2_table=10, hash_band=())
  params = {'nerf': {'params': {'w': jnp.ones(3)}}, 'background': {'params': {'w': jnp.ones(3)}}}
  grads = jax.tree.map(lambda x: 0.5 * x, params)
  optimizer = build.make_optimizer(config)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  nerf_step = np.asarray(updates['nerf']['params']['w'])
  np.testing.assert_allclose(nerf_step, -config.optim.lr_init, rtol=1e-4)  # Adam's first step.
  np.testing.assert_allclose(updates['background']['params']['w'], 0.1 * nerf_step, rtol=1e-5)
