"""config_checks: every impossible value gets one line naming the field, before any compile.

Checked in-process through validate_config, the function train_and_evaluate (and so main) calls
first; main_test checks that the entry point turns these errors into one `error:` line.
"""

import ml_collections
import pytest

from configs import dreamfields_toy
from configs import dreamfusion as dreamfusion_config
from configs import dreamfusion_pixel
from configs import nerf_small
from configs import toy as toy_config
from dreamfusion_jax import config_checks
from dreamfusion_jax.testing import runs


@pytest.mark.parametrize('extra, expected', [
    (dict(prompt=' '), 'config.prompt is empty'),
    ({'shading.modes': ('albedo', 'metallic'), 'shading.probs': (0.5, 0.5)},
     "unknown shading mode 'metallic'"),
    (dict(model='/nonexistent/model'), 'config.model=/nonexistent/model is not a folder'),
    ({'t_range': (0.0, 0.98)}, 'config.t_range=(0.0, 0.98) must lie strictly inside'),
    (dict(t_max_end=1.0), 'config.t_max_end=1.0 must lie in (t_range[0], 1)'),
    ({'loss.entropy_weight': -1.0}, 'config.loss.entropy_weight=-1.0 must be >= 0'),
    ({'loss.smoothness_radius': 0.0}, 'config.loss.smoothness_radius=0.0 must be > 0'),
    ({'render.remat_chunks': 7}, 'config.render.remat_chunks=7 must be -1 (automatic: the fewest '
     'that fit), 0 (off) or divide the 64 rays'),
    ({'render.remat_chunks': -2}, 'config.render.remat_chunks=-2 must be -1'),
    (dict(memory_limit_gib=-1.0), 'config.memory_limit_gib=-1.0 must be >= 0'),
    ({'render.parallel_chunks': 3},
     'config.render.parallel_chunks=3 must be 0 (automatic), 1 (off) or divide the 64 rays'),
    ({'nerf.normal_eps': -0.01}, 'config.nerf.normal_eps=-0.01 must be >= 0'),
    ({'camera.uniform_sphere_rate': 1.5},
     'config.camera.uniform_sphere_rate=1.5 must lie in [0, 1]'),
    ({'init_from': '/nonexistent/run'}, 'is not a run folder'),
    ({'optim.name': 'sgd'}, "config.optim.name='sgd' is unknown: choose one of adam, adan"),
    ({'optim.name': 'adam', 'optim.weight_decay': 0.1},
     "config.optim.weight_decay=0.1 needs config.optim.name='adan'"),
    ({'optim.beta3': 1.0}, 'config.optim.beta3=1.0 must lie in [0, 1)'),
    ({'loss.entropy_ramp_steps': -1}, 'config.loss.entropy_ramp_steps=-1 must be >= 0'),
    # The tiny model's whole-word tokenizer (dreamfusion_jax/testing/tiny_models.WORDS).
    (dict(prompt='a pink elephant'), "'a pink elephant' has words the model of config.model "
     'never saw: pink, elephant; it knows only a, red, blue, cube, sphere'),
    (dict(prompts=('a red cube', 'a green cube')), "'a green cube' has words"),
    (dict(negative_prompt='blurry'), "'blurry' has words the model of config.model never saw"),
])
def test_bad_dreamfusion_values(tiny_model, tmp_path, extra, expected):
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate_config(runs.tiny_config(tiny_model, **extra), tmp_path / 'run')
  assert expected in str(error.value)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('extra, expected', [
    ({'optim.lr_init': -0.1}, ['config.optim.lr_init=-0.1 must be > 0']),
    ({'render.near': 6.0}, ['config.render.near=6.0 must be less than', 'config.render.far=6.0']),
    ({'data.path': '/nonexistent/scene'}, ['config.data.path=/nonexistent/scene',
                                           'not a folder']),
    ({'data.path': ''}, ['config.data.path is empty']),
    ({'nerf.encoding': 'triplane'}, ["config.nerf.encoding='triplane'", 'ipe, grid, hash']),
    ({'method': 'gan'}, ["config.method='gan' is unknown"]),
])
def test_bad_nerf_values(small_scene, tmp_path, extra, expected):
  config = nerf_small.get_config()
  config.data.path = str(small_scene)
  config.update_from_flattened_dict(extra)
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate_config(config, tmp_path / 'run')
  for text in expected:
    assert text in str(error.value)


def test_workdir_that_is_a_file(tiny_model, tmp_path):
  afile = tmp_path / 'afile'
  afile.write_text('x')
  with pytest.raises(config_checks.ConfigError, match='is a file'):
    config_checks.validate_config(runs.tiny_config(tiny_model), afile)


def test_pixel_config_requires_a_model(tmp_path):
  with pytest.raises(config_checks.ConfigError, match='config.model is empty'):
    config_checks.validate_config(dreamfusion_pixel.get_config(), tmp_path / 'run')


def test_dreamfields_needs_a_clip(tmp_path):
  config = dreamfields_toy.get_config()
  config.clip.model = ''
  with pytest.raises(config_checks.ConfigError, match='config.clip.model is empty'):
    config_checks.validate_config(config, tmp_path / 'w')
  config = dreamfields_toy.get_config()
  config.clip.weight = 0.0
  with pytest.raises(config_checks.ConfigError, match='nothing guides the NeRF'):
    config_checks.validate_config(config, tmp_path / 'w')


def test_toy_configs_refuse_words_their_models_never_saw(tmp_path):
  config = toy_config.get_config()
  config.prompt = 'a pink elephant'
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.validate_config(config, tmp_path / 'w')
  assert str(error.value).startswith("'a pink elephant' has words the model of config.model "
                                     'never saw: pink, elephant; it knows only a, view, red')
  config = dreamfields_toy.get_config()
  config.prompt = 'a Red Cube, front view'  # Case and punctuation are the tokenizer's concern.
  config_checks.validate_config(config, tmp_path / 'w')
  config.prompt = 'a red box'
  with pytest.raises(config_checks.ConfigError, match='config.clip.model never saw: box;'):
    config_checks.validate_config(config, tmp_path / 'w')


def ml_config(**fields):
  config = dreamfusion_config.get_config()
  for k, v in fields.items():
    config[k] = v
  return config


def test_prompts_file_and_its_errors(tmp_path):
  file = tmp_path / 'prompts.txt'
  file.write_text('# the set\na red cube\n\na blue sphere\n')
  config = ml_config(prompts_file=str(file))
  assert config_checks.prompt_list(config) == ['a red cube', 'a blue sphere']
  assert config_checks.many_prompts(config) and not config_checks.many_prompts(ml_config())
  file.write_text('# nothing\n\n')
  with pytest.raises(config_checks.ConfigError, match='holds no prompt'):
    config_checks.prompt_list(config)
  with pytest.raises(config_checks.ConfigError, match='is not a file'):
    config_checks.prompt_list(ml_config(prompts_file=str(tmp_path / 'missing.txt')))
  with pytest.raises(config_checks.ConfigError, match=r'config.prompts\[1\] is empty'):
    config_checks.prompt_list(ml_config(prompts=('a red cube', ' ')))


def test_normal_eps_is_not_part_of_what_a_checkpoint_must_match():
  config = dreamfusion_config.get_config()
  smooth = dreamfusion_config.get_config()
  smooth.nerf.normal_eps = 0.02
  assert config_checks.run_metadata(smooth) == config_checks.run_metadata(config)
  smooth.nerf.width = 64
  assert config_checks.run_metadata(smooth) != config_checks.run_metadata(config)


def test_step_rays():
  config = ml_collections.ConfigDict(dict(batch_size=4, render=dict(height=8, width=16)))
  assert config_checks.step_rays(config) == 512
