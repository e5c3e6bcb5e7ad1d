"""Config checks: every impossible value gets one line naming the field, before anything compiles.

`validate_config(config, workdir)` is what `train.train_and_evaluate` (and so `main`) calls first;
tests call it directly. The helpers that resolve a config value the checks also need (the prompt
list, the device count, the rays of a step, what a checkpoint must agree with) live here too, so
that the builder (build.py) and the checks agree.
"""

import json
import pathlib

import jax
import ml_collections

from dreamfusion_jax import guidance
from dreamfusion_jax import nerf as nerf_lib
from dreamfusion_jax import parallel
from dreamfusion_jax import schedules
from dreamfusion_jax import shading
from dreamfusion_jax.toy import tokenizer as tokenizer_lib

METHODS = ('nerf', 'dreamfusion', 'dreamfields')
OPTIMIZERS = ('adam', 'adan')
ENCODINGS = ('ipe', 'grid', 'hash')
MAX_LOG2_TABLE = 26  # 2^26 entries of F features per level is already gigabytes.


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and what to change."""


def _require(ok, message):
  if not ok:
    raise ConfigError(message)


def validate_config(config, workdir):
  """Checks a config and workdir before anything is compiled; raises ConfigError."""
  _require(config.method in METHODS,
           f'config.method={config.method!r} is unknown: choose one of {", ".join(METHODS)}')
  _require(not pathlib.Path(workdir).is_file(),
           f'--workdir {workdir} is a file: give a folder (it is created if missing)')
  _require(config.num_steps > 0, f'config.num_steps={config.num_steps} must be > 0')
  _require(config.batch_size > 0, f'config.batch_size={config.batch_size} must be > 0')
  _require(config.log_every > 0, f'config.log_every={config.log_every} must be > 0')
  _validate_optim(config.optim)
  rend = config.render
  _require(rend.near >= 0, f'config.render.near={rend.near} must be >= 0')
  _require(rend.near < rend.far, f'config.render.near={rend.near} must be less than '
           f'config.render.far={rend.far}: change one of them')
  _require(len(rend.num_samples) > 0 and all(n >= 2 for n in rend.num_samples),
           f'config.render.num_samples={tuple(rend.num_samples)} needs one or more levels of '
           '>= 2 samples each')
  _require(rend.chunk_size > 0, f'config.render.chunk_size={rend.chunk_size} must be > 0')
  _require(rend.scene_radius >= 0, f'config.render.scene_radius={rend.scene_radius} must be '
           '>= 0 (0 disables the bound)')
  _require(config.nerf.encoding in ENCODINGS,
           f'config.nerf.encoding={config.nerf.encoding!r} is unknown: choose one of '
           f'{", ".join(ENCODINGS)}')
  if config.nerf.encoding == 'hash':
    _validate_hash(config)
  _require(config.nerf.density_activation in ('exp', 'softplus'),
           f'config.nerf.density_activation={config.nerf.density_activation!r} is unknown: '
           'choose exp or softplus')
  _require(config.nerf.get('blob_shape', 'gaussian') in nerf_lib.BLOB_SHAPES,
           f'config.nerf.blob_shape={config.nerf.get("blob_shape")!r} is unknown: choose one of '
           f'{", ".join(nerf_lib.BLOB_SHAPES)}')
  _require(config.nerf.width > 0 and config.nerf.num_blocks >= 0,
           f'config.nerf.width={config.nerf.width} must be > 0 and config.nerf.num_blocks='
           f'{config.nerf.num_blocks} >= 0')
  _require(config.nerf.get('normal_eps', 0.0) >= 0,
           f'config.nerf.normal_eps={config.nerf.get("normal_eps")} must be >= 0 (0: the analytic '
           'density gradient)')
  if config.method == 'nerf':
    _validate_data(config.data)
    num_devices(config)
  else:
    _validate_dreamfusion(config)


def _validate_hash(config):
  """config.nerf.hash_* (encoding='hash')."""
  n = config.nerf
  _require(n.hash_levels >= 1 and n.hash_features >= 1,
           f'config.nerf.hash_levels={n.hash_levels} and config.nerf.hash_features='
           f'{n.hash_features} must be >= 1')
  _require(3 <= n.hash_log2_table <= MAX_LOG2_TABLE,
           f'config.nerf.hash_log2_table={n.hash_log2_table} must lie in [3, {MAX_LOG2_TABLE}] '
           '(Instant-NGP: 14 to 24, 19 by default)')
  _require(2 <= n.hash_min_res <= n.hash_max_res,
           f'config.nerf.hash_min_res={n.hash_min_res} must be >= 2 and at most '
           f'config.nerf.hash_max_res={n.hash_max_res}')
  band = tuple(n.get('hash_band', ()))
  _require(not band or (len(band) == 3 and 1 <= band[0] <= n.hash_levels and band[1] >= 0
                        and band[2] >= 1),
           f'config.nerf.hash_band={band} must be () (off) or (start_level, start_step, '
           f'update_steps) with 1 <= start_level <= hash_levels={n.hash_levels}, start_step >= 0 '
           'and update_steps >= 1 (threestudio: (8, 2000, 500))')


def _validate_optim(optim):
  """config.optim: the optimiser, its learning rates, betas, weight decay and clipping."""
  for name in ('lr_init', 'lr_final'):
    _require(optim[name] > 0, f'config.optim.{name}={optim[name]} must be > 0')
  _require(optim.warmup_steps >= 0,
           f'config.optim.warmup_steps={optim.warmup_steps} must be >= 0')
  _require(optim.grad_clip >= 0, f'config.optim.grad_clip={optim.grad_clip} must be >= 0 '
           '(0 disables clipping)')
  name = optim.get('name', 'adam')
  _require(name in OPTIMIZERS,
           f'config.optim.name={name!r} is unknown: choose one of {", ".join(OPTIMIZERS)}')
  for beta in ('beta1', 'beta2', 'beta3'):
    _require(0 <= optim.get(beta, 0.0) < 1, f'config.optim.{beta}={optim.get(beta)} must lie '
             'in [0, 1)')
  _require(optim.get('warmup_shape', 'sine') in schedules.WARMUP_SHAPES,
           f'config.optim.warmup_shape={optim.get("warmup_shape")!r} is unknown: choose one of '
           f'{", ".join(schedules.WARMUP_SHAPES)}')
  _require(0 < optim.get('warmup_multiplier', 0.01) <= 1,
           f'config.optim.warmup_multiplier={optim.get("warmup_multiplier")} must lie in (0, 1]')
  for part in ('table', 'background'):
    scale = optim.get(f'{part}_lr_scale', 1.0)
    _require(scale > 0, f'config.optim.{part}_lr_scale={scale} must be > 0 (1: the {part} '
             'learns at the learning rate of the rest)')
  decay = optim.get('weight_decay', 0.0)
  _require(decay >= 0, f'config.optim.weight_decay={decay} must be >= 0')
  _require(name == 'adan' or decay == 0, f'config.optim.weight_decay={decay} needs '
           "config.optim.name='adan' (Adam here has no weight decay): set it to 0")


def _require_folder_or_id(value, field, what, example):
  looks_local = value.startswith(('/', '.', '~')) or value.count('/') != 1
  _require(not looks_local or pathlib.Path(value).expanduser().is_dir(),
           f'{field}={value} is not a folder: pass {what} or a hub id like {example}')


def _ordered(config, name, low=None, high=None):
  """Checks that config.<name> is a (low, high) pair in order and inside [low, high]."""
  node = config
  for part in name.split('.'):
    node = node[part]
  ok = len(node) == 2 and node[0] <= node[1]
  ok = ok and (low is None or node[0] >= low) and (high is None or node[1] <= high)
  bounds = f' inside [{low}, {high}]' if low is not None else ''
  _require(ok, f'config.{name}={tuple(node)} must be an ordered (low, high) pair{bounds}')


def prompt_list(config):
  """The run's prompts: config.prompts, else the lines of config.prompts_file, else [prompt].

  Raises:
    ConfigError: the prompt file is missing, or a prompt is empty.
  """
  if config.prompts:
    prompts = [str(p) for p in config.prompts]
    for i, p in enumerate(prompts):
      _require(bool(p.strip()), f'config.prompts[{i}] is empty: every prompt needs text')
    return prompts
  if config.prompts_file:
    path = pathlib.Path(config.prompts_file).expanduser()
    _require(path.is_file(), f'config.prompts_file={config.prompts_file} is not a file: pass a '
             'text file with one prompt per line')
    prompts = [line.strip() for line in path.read_text().splitlines()]
    prompts = [p for p in prompts if p and not p.startswith('#')]
    _require(bool(prompts), f'config.prompts_file={config.prompts_file} holds no prompt (one per '
             'line; lines starting with # are comments)')
    return prompts
  return [config.prompt]


def many_prompts(config):
  """Whether the run trains one NeRF per prompt of a list (config.prompts or prompts_file)."""
  return bool(config.get('prompts')) or bool(config.get('prompts_file'))


def num_devices(config):
  """Devices the run's step is spread over (parallel.mesh_size; ConfigError if impossible)."""
  try:
    if many_prompts(config):  # The prompt axis is split (and padded), not the views.
      n = config.num_devices or jax.device_count()
      return parallel.mesh_size(n, config.num_devices, jax.device_count(), jax.process_count())
    return parallel.mesh_size(config.batch_size, config.num_devices, jax.device_count(),
                              jax.process_count())
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _divisor_near(count, target):
  """The divisor of count nearest to target (for error messages)."""
  return min((d for d in range(1, count + 1) if count % d == 0), key=lambda d: abs(d - target))


def _validate_dreamfusion(config):
  if many_prompts(config):
    prompt_list(config)
  else:
    _require(bool(config.prompt.strip()), 'config.prompt is empty: pass the text to generate, '
             'e.g. --config.prompt="a DSLR photo of a peacock on a surfboard"')
  num_devices(config)
  _validate_guidance(config)
  for name in ('checkpoint_every', 'max_to_keep', 'preview_every', 'max_consecutive_skips'):
    _require(config[name] > 0, f'config.{name}={config[name]} must be > 0')
  _validate_sds_schedules(config)
  _validate_step_render(config)
  _validate_views(config)
  _validate_export(config.export)
  if config.init_from:
    init_config(config)


def _validate_export(ex):
  """The mesh grid and the texture, checked before training so the export cannot fail on them."""
  _require(ex.mesh_resolution >= 2, f'config.export.mesh_resolution={ex.mesh_resolution} must '
           'be >= 2')
  _require(ex.get('texture_size', 2048) >= 16, f'config.export.texture_size='
           f'{ex.get("texture_size")} must be >= 16 texels')
  _require(ex.get('max_faces', 0) == 0 or ex.get('max_faces', 0) >= 4,
           f'config.export.max_faces={ex.get("max_faces")} must be 0 (no decimation) or >= 4')
  _require(ex.get('texture_padding', 4) >= 0, f'config.export.texture_padding='
           f'{ex.get("texture_padding")} must be >= 0')


def _validate_guidance(config):
  """The guidance weights and the frozen models they need."""
  _require(config.sds_weight >= 0 and config.clip.weight >= 0,
           f'config.sds_weight={config.sds_weight} and config.clip.weight={config.clip.weight} '
           'must be >= 0')
  _require(config.sds_weight > 0 or config.clip.weight > 0,
           'config.sds_weight and config.clip.weight are both 0: nothing guides the NeRF')
  _require(config.method != 'dreamfields' or config.clip.weight > 0,
           'config.method=dreamfields needs config.clip.weight > 0 and a config.clip.model')
  if config.sds_weight > 0:
    _require(bool(config.model), 'config.model is empty: pass a diffusers model folder or hub '
             'id (or set config.sds_weight=0 for CLIP guidance only)')
    _require_folder_or_id(config.model, 'config.model', 'a diffusers model folder',
                          'stabilityai/stable-diffusion-2-1-base')
  if config.clip.weight > 0:
    _require(bool(config.clip.model), 'config.clip.model is empty: pass a transformers CLIP '
             'folder or hub id (e.g. openai/clip-vit-base-patch16)')
    _require_folder_or_id(config.clip.model, 'config.clip.model', 'a transformers CLIP folder',
                          'openai/clip-vit-base-patch16')
    _require(config.clip.augmentations >= 1,
             f'config.clip.augmentations={config.clip.augmentations} must be >= 1')
    _require(0 < config.clip.min_scale <= config.clip.get('max_scale', 1.0) <= 1,
             f'config.clip.min_scale={config.clip.min_scale} and max_scale='
             f'{config.clip.get("max_scale", 1.0)} must satisfy 0 < min_scale <= max_scale <= 1')
    _require(config.clip.get('blur_radius', 0) >= 0,
             f'config.clip.blur_radius={config.clip.get("blur_radius")} must be >= 0 (0: a third '
             'of the background\'s side)')
    _require(config.clip.blur_sigma >= 0,
             f'config.clip.blur_sigma={config.clip.blur_sigma} must be >= 0')
  _require(config.model_dtype in ('float32', 'bfloat16'),
           f'config.model_dtype={config.model_dtype!r}: choose float32 or bfloat16')
  if config.get('perp_neg', False):
    _require(config.sds_weight > 0, 'config.perp_neg=True needs a diffusion model: set '
             'config.sds_weight > 0 and config.model (Perp-Neg shapes its noise prediction)')
    for name in ('front_side', 'side_back', 'front_side_back'):
      value = config[f'perp_neg_{name}']
      _require(len(value) == 3, f'config.perp_neg_{name}={value} must be (a, b, c) of '
               'f(r) = a exp(-b r) + c')
  if config.sds_weight > 0:
    _validate_words(config, 'config.model', pathlib.Path(config.model).expanduser() / 'tokenizer')
  if config.clip.weight > 0:
    _validate_words(config, 'config.clip.model', config.clip.model)


def _validate_words(config, field, tokenizer_folder):
  """Prompts of a model whose tokenizer knows whole words only (the toy world's) use only them."""
  words = tokenizer_lib.known_words(tokenizer_folder)
  if words is None:
    return
  texts = prompt_list(config) + ([config.negative_prompt] if config.negative_prompt else [])
  for text in texts:
    unknown = tokenizer_lib.unknown_words(text, words)
    _require(not unknown, f'{text!r} has words the model of {field} never saw: '
             f'{", ".join(unknown)}; it knows only {", ".join(words)}')


def _validate_sds_schedules(config):
  """Guidance scale, noise levels, weighting and the regularisers' weights and schedules."""
  loss = config.loss
  _require(loss.transmittance_weight >= 0,
           f'config.loss.transmittance_weight={loss.transmittance_weight} must be >= 0')
  _require(0 <= loss.transmittance_start <= 1 and 0 <= loss.transmittance_end <= 1
           and loss.transmittance_steps > 0,
           'config.loss.transmittance_start and _end must be in [0, 1] and '
           'config.loss.transmittance_steps > 0')
  shape = loss.get('transmittance_schedule', 'linear')
  _require(shape in ('linear', 'exponential'), f'config.loss.transmittance_schedule={shape!r} '
           "is unknown: choose 'linear' or 'exponential'")
  _require(shape == 'linear' or max(loss.transmittance_start, loss.transmittance_end) < 1,
           'config.loss.transmittance_schedule=exponential anneals the opacity 1 - start -> '
           '1 - end, so config.loss.transmittance_start and _end must be < 1')
  _require(loss.get('opacity_target_scale', 1.0) > 0,
           f'config.loss.opacity_target_scale={loss.get("opacity_target_scale")} must be > 0')
  _require(config.guidance_scale > 0 and config.guidance_scale_end > 0,
           'config.guidance_scale and config.guidance_scale_end must be > 0')
  _ordered(config, 't_range', 0.0, 1.0)
  _require(0 < config.t_range[0] and config.t_range[1] < 1,
           f'config.t_range={tuple(config.t_range)} must lie strictly inside (0, 1)')
  _require(config.t_range[0] < config.t_max_end < 1,
           f'config.t_max_end={config.t_max_end} must lie in (t_range[0], 1) = '
           f'({config.t_range[0]}, 1); set it to t_range[1] for a constant range')
  _require(config.t_anneal_steps > 0, f'config.t_anneal_steps={config.t_anneal_steps} must be > 0')
  _require(config.weighting in guidance.WEIGHTINGS, f'config.weighting={config.weighting!r} is '
           f'unknown: choose one of {", ".join(guidance.WEIGHTINGS)}')
  for name in ('opacity_weight', 'entropy_weight', 'smoothness_weight'):
    _require(loss[name] >= 0, f'config.loss.{name}={loss[name]} must be >= 0')
  _require(loss.get('entropy_ramp_steps', 0) >= 0,
           f'config.loss.entropy_ramp_steps={loss.get("entropy_ramp_steps")} must be >= 0 '
           '(0: a constant weight)')
  _require(loss.smoothness_radius > 0,
           f'config.loss.smoothness_radius={loss.smoothness_radius} must be > 0')


def _validate_step_render(config):
  """The render size of a step and how its rays are chunked."""
  _require(config.render.height > 0 and config.render.width > 0,
           'config.render.height and width must be > 0')
  chunks = config.render.remat_chunks
  rays = step_rays(config)
  _require(chunks >= -1 and (chunks <= 1 or rays % chunks == 0),
           f'config.render.remat_chunks={chunks} must be -1 (automatic: the fewest that fit), 0 '
           f'(off) or divide the {rays} rays of a step (batch_size x height x width), e.g. '
           f'{_divisor_near(rays, 16)}')
  _require(config.get('memory_limit_gib', 0.0) >= 0,
           f'config.memory_limit_gib={config.get("memory_limit_gib")} must be >= 0 (0: what the '
           'device has)')
  groups = config.render.get('parallel_chunks', 1)
  per_chunk = rays // max(chunks, 1)
  _require(groups >= 0 and (groups <= 1 or per_chunk % groups == 0),
           f'config.render.parallel_chunks={groups} must be 0 (automatic), 1 (off) or divide '
           f'the {per_chunk} rays of a step{" remat chunk" if chunks > 1 else ""}, e.g. '
           f'{_divisor_near(per_chunk, 4)}')


def _validate_views(config):
  """The camera distribution, shading modes and background."""
  _ordered(config, 'camera.elevation_range_deg', -90.0, 90.0)
  _ordered(config, 'camera.azimuth_range_deg')
  _ordered(config, 'camera.distance_range', 0.0)
  _ordered(config, 'camera.focal_range', 0.0)
  _require(0.0 <= config.camera.get('uniform_sphere_rate', 0.0) <= 1.0,
           f'config.camera.uniform_sphere_rate={config.camera.get("uniform_sphere_rate")} must '
           'lie in [0, 1] (the share of cameras whose elevation is uniform in area)')
  shade = config.shading
  for mode in tuple(shade.modes) + (shade.warmup_mode,):
    _require(mode in shading.MODES, f'unknown shading mode {mode!r} in config.shading: choose '
             f'from {", ".join(shading.MODES)}')
  _require(len(shade.probs) == len(shade.modes) and all(p >= 0 for p in shade.probs)
           and abs(sum(shade.probs) - 1.0) < 1e-6,
           f'config.shading.probs={tuple(shade.probs)} must be one probability per mode '
           f'{tuple(shade.modes)}, summing to 1')
  _require(shade.warmup_steps >= 0, 'config.shading.warmup_steps must be >= 0')
  color = tuple(config.background.color)
  _require(color == () or (len(color) == 3 and all(0 <= c <= 1 for c in color)),
           f'config.background.color={color} must be () (learned background) or 3 values in '
           '[0, 1]')


def init_config(config):
  """The saved config of the run named by config.init_from, checked against this one."""
  folder = pathlib.Path(config.init_from).expanduser()
  _require((folder / 'config.json').is_file() and (folder / 'checkpoints').is_dir(),
           f'config.init_from={config.init_from} is not a run folder (it needs config.json and '
           'checkpoints/): pass the --workdir of an earlier DreamFusion or Dream Fields run')
  try:
    other = ml_collections.ConfigDict(json.loads((folder / 'config.json').read_text()))
  except ValueError as e:
    raise ConfigError(f'config.init_from={config.init_from}: its config.json is unreadable '
                      f'({e})') from e
  shape = lambda c: {k: v for k, v in run_metadata(c).items()
                     if k.startswith(('nerf.', 'background.'))}
  mine, theirs = shape(config), shape(other)
  differing = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
  _require(not differing, f'config.init_from={config.init_from} has another NeRF: '
           + ', '.join(f'{k}={theirs.get(k)!r} there, {mine.get(k)!r} here' for k in differing)
           + '; use the same nerf and background fields')
  return other


def _validate_data(data):
  path = pathlib.Path(data.path) if data.path else None
  _require(path is not None, 'config.data.path is empty: pass --config.data.path=DIR, a folder '
           'in the Blender nerf_synthetic layout (make one with python -m '
           'dreamfusion_jax.data.synthetic --out DIR)')
  _require(path.is_dir(), f'config.data.path={data.path} is not a folder: pass a folder in the '
           'Blender nerf_synthetic layout')
  for split in ('train', 'test'):
    _require((path / f'transforms_{split}.json').is_file(),
             f'config.data.path={data.path} has no transforms_{split}.json: it must be a '
             'Blender nerf_synthetic scene folder')
  _require(data.downsample >= 1, f'config.data.downsample={data.downsample} must be >= 1')
  _require(len(data.background) == 3 and all(0 <= c <= 1 for c in data.background),
           f'config.data.background={tuple(data.background)} must be 3 values in [0, 1]')


def step_rays(config):
  """Rays rendered by one training step: batch_size x height x width."""
  return config.batch_size * config.render.height * config.render.width


def run_metadata(config):
  """What a checkpoint must agree with to be resumed: the shapes of everything trained."""
  meta = {'method': config.method, 'optim.grad_clip_enabled': config.optim.grad_clip > 0}
  if config.optim.get('name', 'adam') != 'adam':  # Adam runs from before the field resume.
    meta['optim.name'] = config.optim.name
  # normal_eps changes how normals are computed, not what is trained: runs from before it existed
  # resume, and either setting can continue the other's NeRF.
  # The hash fields shape only a hash grid: runs of the other encodings from before them resume.
  hashed = config.nerf.encoding == 'hash'
  # A Gaussian blob (the only one before blob_shape) is left out for the same reason.
  meta.update({f'nerf.{k}': v for k, v in config.nerf.items()
               if k != 'normal_eps' and (hashed or not k.startswith('hash_'))
               and not (k == 'blob_shape' and v == 'gaussian')})
  if hashed:  # A separate table rate adds to the optimiser's state.
    meta['optim.table_lr_scaled'] = config.optim.get('table_lr_scale', 1.0) != 1.0
  if config.optim.get('background_lr_scale', 1.0) != 1.0:
    meta['optim.background_lr_scaled'] = True
  meta.update({f'background.{k}': v for k, v in config.background.items()})
  return json.loads(json.dumps(meta))  # Tuples become lists, as they come back from disk.
