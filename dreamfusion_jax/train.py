"""Training: the train state, jitted steps and `train_and_evaluate(config, workdir)`.

Together with `main.py`, this is the only module that reads the config; everything it calls takes
explicit arguments.
"""

import functools
import json
import pathlib
import sys
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from tensorboardX import SummaryWriter

from dreamfusion_jax import camera
from dreamfusion_jax import checkpoint
from dreamfusion_jax import clip as clip_lib
from dreamfusion_jax import export
from dreamfusion_jax import guidance
from dreamfusion_jax import losses
from dreamfusion_jax import models
from dreamfusion_jax import nerf
from dreamfusion_jax import parallel
from dreamfusion_jax import render
from dreamfusion_jax import schedules
from dreamfusion_jax import shading
from dreamfusion_jax import steps
from dreamfusion_jax.data import blender

METHODS = ('nerf', 'dreamfusion', 'dreamfields')


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
  optim = config.optim
  for name in ('lr_init', 'lr_final'):
    _require(optim[name] > 0, f'config.optim.{name}={optim[name]} must be > 0')
  _require(optim.warmup_steps >= 0,
           f'config.optim.warmup_steps={optim.warmup_steps} must be >= 0')
  _require(optim.grad_clip >= 0, f'config.optim.grad_clip={optim.grad_clip} must be >= 0 '
           '(0 disables clipping)')
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
  _require(config.nerf.encoding in ('ipe', 'grid'),
           f'config.nerf.encoding={config.nerf.encoding!r} is unknown: choose ipe or grid')
  _require(config.nerf.density_activation in ('exp', 'softplus'),
           f'config.nerf.density_activation={config.nerf.density_activation!r} is unknown: '
           'choose exp or softplus')
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
    _require(0 < config.clip.min_scale <= 1,
             f'config.clip.min_scale={config.clip.min_scale} must be in (0, 1]')
    _require(config.clip.blur_sigma >= 0,
             f'config.clip.blur_sigma={config.clip.blur_sigma} must be >= 0')
  _require(config.loss.transmittance_weight >= 0,
           f'config.loss.transmittance_weight={config.loss.transmittance_weight} must be >= 0')
  _require(0 <= config.loss.transmittance_start <= 1 and 0 <= config.loss.transmittance_end <= 1
           and config.loss.transmittance_steps > 0,
           'config.loss.transmittance_start and _end must be in [0, 1] and '
           'config.loss.transmittance_steps > 0')
  _require(config.model_dtype in ('float32', 'bfloat16'),
           f'config.model_dtype={config.model_dtype!r}: choose float32 or bfloat16')
  for name in ('checkpoint_every', 'max_to_keep', 'preview_every', 'max_consecutive_skips'):
    _require(config[name] > 0, f'config.{name}={config[name]} must be > 0')
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
  _require(config.render.height > 0 and config.render.width > 0,
           'config.render.height and width must be > 0')
  chunks = config.render.remat_chunks
  rays = _step_rays(config)
  _require(chunks >= 0 and (chunks <= 1 or rays % chunks == 0),
           f'config.render.remat_chunks={chunks} must be 0 (off) or divide the {rays} rays of a '
           f'step (batch_size x height x width), e.g. {_divisor_near(rays, 16)}')
  groups = config.render.get('parallel_chunks', 1)
  per_chunk = rays // max(chunks, 1)
  _require(groups >= 0 and (groups <= 1 or per_chunk % groups == 0),
           f'config.render.parallel_chunks={groups} must be 0 (automatic), 1 (off) or divide '
           f'the {per_chunk} rays of a step{" remat chunk" if chunks > 1 else ""}, e.g. '
           f'{_divisor_near(per_chunk, 4)}')
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
  for name in ('opacity_weight', 'entropy_weight', 'smoothness_weight'):
    _require(config.loss[name] >= 0, f'config.loss.{name}={config.loss[name]} must be >= 0')
  _require(config.loss.smoothness_radius > 0,
           f'config.loss.smoothness_radius={config.loss.smoothness_radius} must be > 0')
  color = tuple(config.background.color)
  _require(color == () or (len(color) == 3 and all(0 <= c <= 1 for c in color)),
           f'config.background.color={color} must be () (learned background) or 3 values in '
           '[0, 1]')
  if config.init_from:
    _init_config(config)


def _init_config(config):
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


def init_params_from(config):
  """The trained params of the newest readable checkpoint of config.init_from (host arrays)."""
  other = _init_config(config)
  model, background_model = make_nerf(other), make_background(other)
  template = init_dreamfusion_state(other, model, background_model, make_optimizer(other))
  ckpt = checkpoint.Checkpointer(pathlib.Path(config.init_from).expanduser() / 'checkpoints',
                                 max_to_keep=None, metadata=run_metadata(other))
  try:
    state, step = ckpt.restore_latest(template)
  except checkpoint.CheckpointError as e:
    raise ConfigError(f'config.init_from: {e}') from e
  finally:
    ckpt.close()
  _require(state is not None, f'config.init_from={config.init_from} holds no readable checkpoint')
  _print(f'starting from the NeRF of checkpoint {step} of {config.init_from}')
  return parallel.to_host(state.params)


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


def make_nerf(config):
  """The NeRF module described by config.nerf."""
  fields = dict(config.nerf)
  fields['grid_resolutions'] = tuple(fields['grid_resolutions'])
  return nerf.NeRF(**fields)


def make_optimizer(config):
  """Adam with mip-NeRF's log-linear learning rate and optional gradient clipping."""
  optim = config.optim
  schedule = functools.partial(schedules.log_linear_warmup, init=optim.lr_init,
                               final=optim.lr_final, num_steps=config.num_steps,
                               warmup_steps=optim.warmup_steps)
  chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
  chain.append(optax.adam(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps))
  return optax.chain(*chain)


def make_render_fn(config):
  """render.render_rays with the sampling settings of config.render bound."""
  rend = config.render
  return functools.partial(render.render_rays, near=rend.near, far=rend.far,
                           num_samples=tuple(rend.num_samples),
                           scene_radius=rend.scene_radius or None)


def posed_pixels(views):
  """PosedPixels [N * H * W] of a blender.Views."""
  rays = camera.generate_rays(views.c2w, views.focal, views.height, views.width)
  return steps.PosedPixels(rays=rays.reshape(-1), rgb=jnp.asarray(views.images).reshape(-1, 3))


def render_views(params, model, render_fn, views, background, chunk_size):
  """Deterministic renders float32 [N, H, W, 3] of every view of a blender.Views."""

  @jax.jit
  def render_chunk(params, rays):
    field = nerf.field_fn(model, params, with_normals=False)
    bg = jnp.broadcast_to(background, rays.origins.shape)
    return render_fn(jax.random.key(0), field, rays, background=bg, randomized=False)[-1].rgb

  images = []
  for c2w in views.c2w:
    rays = camera.generate_rays(c2w, views.focal, views.height, views.width)
    images.append(render.render_image(functools.partial(render_chunk, params), rays, chunk_size))
  return jnp.stack(images)


def fit_nerf(config, workdir):
  """Classic NeRF: fits a Blender-format scene, then evaluates PSNR on its test split."""
  start = time.time()
  data = config.data
  background = tuple(data.background)
  max_views = data.max_train_views if data.max_train_views > 0 else None
  train_views = blender.load_split(data.path, 'train', background, data.downsample, max_views)
  test_views = blender.load_split(data.path, 'test', background, data.downsample,
                                  data.max_test_views if data.max_test_views > 0 else None)
  pixels = posed_pixels(train_views)
  model = make_nerf(config)
  optimizer = make_optimizer(config)
  render_fn = make_render_fn(config)
  key = jax.random.key(config.seed)
  params = model.init(jax.random.fold_in(key, 2**31 - 1), jnp.zeros((1, 3)), jnp.zeros((1, 3)),
                      jnp.zeros((1, 3)))
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=optimizer.init(params), key=key)
  mesh = parallel.make_mesh(num_devices(config))
  state, pixels = parallel.replicate((state, pixels), mesh)
  step_fn = jax.jit(functools.partial(
      steps.photometric_step, model=model, optimizer=optimizer, render_fn=render_fn,
      batch_size=config.batch_size, background=jnp.asarray(background, jnp.float32),
      coarse_weight=config.render.coarse_loss_weight,
      shard=parallel.constrain_fn(mesh) if mesh.size > 1 else None), donate_argnums=0)
  _print(f'{config.batch_size} rays per step over {mesh.size} of {jax.device_count()} devices '
         f'({jax.process_count()} processes)')
  writer = _writer(workdir / 'tensorboard')
  bar = tqdm.trange(config.num_steps, desc='nerf', dynamic_ncols=True, file=sys.stderr,
                    disable=not parallel.is_primary())
  for step in bar:
    state, metrics = step_fn(state, pixels)
    # Wait for the step, so the bar's speed and ETA are true rather than dispatch rates.
    jax.block_until_ready(state.step)
    if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
      metrics = parallel.to_host(metrics)
      bar.set_postfix(loss=f'{metrics["loss"]:.4f}', psnr=f'{metrics["psnr"]:.2f}')
      for name, value in metrics.items():
        writer.add_scalar(f'train/{name}', float(value), step + 1)
  train_seconds = time.time() - start
  renders = render_views(parallel.to_host(state.params), model, render_fn, test_views,
                         jnp.asarray(background, jnp.float32), config.render.chunk_size)
  mses = jnp.mean((renders - test_views.images)**2, axis=(1, 2, 3))
  test_psnrs = np.asarray(losses.psnr(mses))
  metrics = {'test_psnr': float(test_psnrs.mean()), 'test_psnr_per_view': test_psnrs.tolist(),
             'steps': int(state.step), 'seconds': time.time() - start,
             'train_seconds': train_seconds}
  writer.add_scalar('test/psnr', metrics['test_psnr'], int(state.step))
  writer.close()
  if not parallel.is_primary():
    return metrics
  render_dir = workdir / 'renders'
  render_dir.mkdir(exist_ok=True)
  for i in range(min(config.eval.save_images, len(renders))):
    side_by_side = np.concatenate([np.asarray(renders[i]), test_views.images[i]], axis=1)
    iio.imwrite(render_dir / f'test_{i:03d}.png',
                (np.clip(side_by_side, 0, 1) * 255).round().astype(np.uint8))
  (workdir / 'metrics.json').write_text(json.dumps(metrics, indent=2))
  print(f'test PSNR {metrics["test_psnr"]:.2f} dB after {metrics["steps"]} steps, '
        f'{metrics["seconds"]:.0f} s; wrote {workdir / "metrics.json"}')
  return metrics


def make_background(config):
  """DreamFusion's background MLP described by config.background."""
  bg = config.background
  return nerf.Background(width=bg.width, max_deg=bg.max_deg, color=tuple(bg.color))


def make_sds_settings(config):
  """steps.SDSSettings from the config."""
  cam, shade, loss = config.camera, config.shading, config.loss
  ranges = (('elevation_range_deg', tuple(cam.elevation_range_deg)),
            ('azimuth_range_deg', tuple(cam.azimuth_range_deg)),
            ('distance_range', tuple(cam.distance_range)),
            ('focal_range', tuple(cam.focal_range)),
            ('uniform_sphere_rate', float(cam.get('uniform_sphere_rate', 0.0))))
  return steps.SDSSettings(
      batch_size=config.batch_size, height=config.render.height, width=config.render.width,
      camera_ranges=ranges,
      shading_modes=tuple(shading.mode_index(m) for m in shade.modes),
      shading_probs=tuple(shade.probs), warmup_mode=shading.mode_index(shade.warmup_mode),
      warmup_steps=shade.warmup_steps, light_color=shade.light_color, ambient=shade.ambient,
      t_range=tuple(config.t_range), weighting=config.weighting,
      t_max_schedule=(config.t_range[1], config.t_max_end, config.t_anneal_steps),
      guidance_scale=(config.guidance_scale, config.guidance_scale_end, config.num_steps),
      orientation_weight=(loss.orientation_weight, loss.orientation_weight_end,
                          loss.orientation_anneal_steps),
      opacity_weight=loss.opacity_weight, entropy_weight=loss.entropy_weight,
      smoothness_weight=loss.smoothness_weight, smoothness_radius=loss.smoothness_radius,
      sds_weight=config.sds_weight, clip_weight=config.clip.weight,
      clip_augmentations=config.clip.augmentations, clip_min_scale=config.clip.min_scale,
      clip_blur_sigma=config.clip.blur_sigma, transmittance_weight=loss.transmittance_weight,
      transmittance_target=(loss.transmittance_start, loss.transmittance_end,
                            loss.transmittance_steps),
      remat_chunks=config.render.get('remat_chunks', 0),  # Absent from older run folders.
      parallel_chunks=parallel_chunks(config))


# On a CPU, render.parallel_chunks = 0 renders this many independent groups of rays.
CPU_PARALLEL_CHUNKS = 4


def parallel_chunks(config):
  """The independent ray groups of a training step (config.render.parallel_chunks resolved).

  0 (automatic) is CPU_PARALLEL_CHUNKS on a CPU backend, where the groups run concurrently on
  the cores, and 1 on GPUs and TPUs, where one large batch keeps the chip busier; if the rays
  do not split evenly, the largest smaller count that does.
  """
  groups = config.render.get('parallel_chunks', 1)  # Absent from older run folders.
  if groups:
    return groups
  if jax.default_backend() != 'cpu':
    return 1
  rays = _step_rays(config) // max(config.render.get('remat_chunks', 0), 1)
  return max(n for n in range(1, CPU_PARALLEL_CHUNKS + 1) if rays % n == 0)


def _step_rays(config):
  """Rays rendered by one training step: batch_size x height x width."""
  return config.batch_size * config.render.height * config.render.width


def step_compiler_options(config):
  """XLA options of the training step's jit: CPU scheduling for parallel_chunks (or None)."""
  if jax.default_backend() == 'cpu' and parallel_chunks(config) > 1:
    # Without it XLA:CPU orders the groups one after the other to save memory.
    return {'xla_cpu_enable_concurrency_optimized_scheduler': True}
  return None


def make_dreamfusion_step(config, model, background_model, optimizer, donate=True, mesh=None,
                          vmapped=False):
  """The jitted steps.dreamfusion_step (state, diffusion, text) -> (state, metrics).

  Args:
    config, model, background_model, optimizer: as the run's.
    donate: donate the state's buffers.
    mesh: with more than one device, the step's views are split over its `data` axis.
    vmapped: one state and text per prompt along a leading axis (many prompts at once); the
      views of a prompt are not split.
  """
  shard = None
  if mesh is not None and mesh.size > 1 and not vmapped:
    shard = parallel.constrain_fn(mesh)
  step = functools.partial(
      steps.dreamfusion_step, model=model, background_model=background_model,
      optimizer=optimizer, render_fn=make_render_fn(config), settings=make_sds_settings(config),
      shard=shard)
  if vmapped:
    step = jax.vmap(step, in_axes=(0, None, 0, None, 0))
  return jax.jit(step, donate_argnums=0 if donate else (),
                 compiler_options=step_compiler_options(config))


def run_metadata(config):
  """What a checkpoint must agree with to be resumed: the shapes of everything trained."""
  meta = {'method': config.method, 'optim.grad_clip_enabled': config.optim.grad_clip > 0}
  # normal_eps changes how normals are computed, not what is trained: runs from before it existed
  # resume, and either setting can continue the other's NeRF.
  meta.update({f'nerf.{k}': v for k, v in config.nerf.items() if k != 'normal_eps'})
  meta.update({f'background.{k}': v for k, v in config.background.items()})
  return json.loads(json.dumps(meta))  # Tuples become lists, as they come back from disk.


def init_dreamfusion_state(config, model, background_model, optimizer):
  """A fresh TrainState with params {'nerf', 'background'} from config.seed."""
  key = jax.random.key(config.seed)
  key_nerf, key_bg = jax.random.split(jax.random.fold_in(key, 2**31 - 1))

  @jax.jit  # One compile for the whole initialisation, not one per operation.
  def init(key_nerf, key_bg):
    x = jnp.zeros((1, 3))
    params = {'nerf': model.init(key_nerf, x, x),
              'background': background_model.init(key_bg, x)}
    return params, optimizer.init(params)
  params, opt_state = init(key_nerf, key_bg)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                           key=key)
  # Committed to a device like the step's outputs, so the second call does not compile again.
  return jax.device_put(state, jax.local_devices()[0])


def initial_state(config, state, optimizer):
  """The state a fresh run starts from: `state`, or config.init_from's params in it.

  Args:
    config: the run's config.
    state: a fresh TrainState (init_dreamfusion_state).
    optimizer: the run's optimizer (its state starts afresh).
  """
  if not config.get('init_from'):
    return state
  params = jax.device_put(init_params_from(config), jax.local_devices()[0])
  return state.replace(params=params, opt_state=optimizer.init(params))


def load_diffusion(config):
  """The frozen guidance.Diffusion named by config.model (errors name the field)."""
  try:
    return guidance.Diffusion.from_pretrained(
        config.model, dtype=jnp.dtype(config.model_dtype), from_pt=config.from_pt,
        allow_pickle=config.allow_pickle)
  except models.ModelError as e:
    raise ConfigError(f'config.model: {e}') from e


def make_chunk_renderer(config, model):
  """A jitted render of one chunk of rays of a trained scene, as previews, exports and eval see it.

  Deterministic, with the run's sampling settings (make_render_fn); the lit modes (LAMBERTIAN,
  TEXTURELESS) put a point light at the camera with the run's light colour and ambient.

  Returns:
    fn(nerf_params, rays [R], background float32 [R, 3], mode, with_normals) -> (rgb [R, 3],
    normals [R, 3] or None, acc [R]), with mode (a shading mode index) and with_normals static.
  """
  render_fn = make_render_fn(config)
  light = dict(light_color=config.shading.light_color, ambient=config.shading.ambient)

  @functools.partial(jax.jit, static_argnums=(3, 4))
  def chunk(nerf_params, rays, background, mode, with_normals):
    shade = render.albedo_colors
    if mode != shading.ALBEDO:
      shade = functools.partial(steps.shade_samples, modes=mode, lights=rays.origins[:, None],
                                **light)
    field = nerf.field_fn(model, nerf_params, with_normals=with_normals or mode != shading.ALBEDO)
    out = render_fn(jax.random.key(0), field, rays, background=background, shade=shade,
                    randomized=False)[-1]
    return out.rgb, out.normals, out.acc

  return chunk


class Renderer:
  """Deterministic chunked renders of a trained DreamFusion scene (previews and exports)."""

  def __init__(self, config, model, background_model):
    self.chunk_size = config.render.chunk_size
    self._chunk = make_chunk_renderer(config, model)
    self._background = jax.jit(background_model.apply)

  def _render(self, params, rays, mode, with_normals=False):
    return render.render_image(
        lambda r: self._chunk(params['nerf'], r, self._background(params['background'],
                                                                  r.directions),
                              mode, with_normals), rays, self.chunk_size)

  def __call__(self, params, c2w, focal, size):
    """Albedo, normal ((n + 1) / 2 over white), textureless and opacity images [size, size, 3]."""
    rays = camera.generate_rays(c2w, focal, size, size)
    albedo, normals, acc = self._render(params, rays, shading.ALBEDO, with_normals=True)
    textureless, _, _ = self._render(params, rays, shading.TEXTURELESS)
    unit = normals / jnp.maximum(jnp.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    normal_img = (0.5 * (unit + 1.0)) * acc[..., None] + (1.0 - acc[..., None])
    opacity = jnp.broadcast_to(acc[..., None], albedo.shape)
    return [np.asarray(jnp.clip(x, 0, 1)) for x in (albedo, normal_img, textureless, opacity)]


def export_assets(config, workdir, params):
  """Writes the turntable video (albedo | normals | textureless) and the mesh files.

  Args:
    config: the run's config.
    workdir: the folder that receives them.
    params: the trained {'nerf', 'background'} (host or single-device arrays).
  """
  ex = config.export
  model, background_model = make_nerf(config), make_background(config)
  renderer = Renderer(config, model, background_model)
  focal = float(camera.focal_from_fov(ex.video_fov_deg, ex.video_size))
  frames = export.turntable_frames(
      lambda c2w, f: renderer(params, c2w, f, ex.video_size)[:3], ex.video_frames,
      elevation_deg=ex.video_elevation_deg, distance=ex.video_distance, focal=focal,
      height=ex.video_size, width=ex.video_size)
  video = export.write_video(workdir / 'turntable.mp4', frames, fps=ex.video_fps)
  density = jax.jit(lambda p, x: model.apply(p, x, jnp.zeros_like(x))[0])
  albedo = jax.jit(lambda p, x: model.apply(p, x, jnp.zeros_like(x))[1])
  grid = export.density_grid(lambda x: density(params['nerf'], x), ex.mesh_resolution,
                             ex.mesh_bound)
  mesh = export.extract_mesh(grid, ex.mesh_bound, ex.mesh_threshold,
                             color_fn=lambda x: np.asarray(albedo(params['nerf'], x)))
  paths = export.write_mesh(mesh, workdir, 'mesh')
  print(f'wrote {video} and {", ".join(str(p) for p in paths.values())} '
        f'({len(mesh.faces)} faces)')
  return video, paths


def open_checkpoints(config, workdir, template):
  """The run's Checkpointer and its newest good (state, step), or (None, None) if none."""
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', max_to_keep=config.max_to_keep,
                                 metadata=run_metadata(config))
  try:
    state, step = ckpt.restore_latest(template)
  except checkpoint.CheckpointError as e:
    ckpt.close()
    raise ConfigError(str(e)) from e
  return ckpt, state, step


def export_from_checkpoint(config, workdir):
  """Exports the assets of the newest good checkpoint in `workdir` (a run's saved config)."""
  workdir = pathlib.Path(workdir)
  model, background_model = make_nerf(config), make_background(config)
  template = init_dreamfusion_state(config, model, background_model, make_optimizer(config))
  ckpt, state, step = open_checkpoints(config, workdir, template)
  ckpt.close()
  if state is None:
    raise ConfigError(f'{workdir / "checkpoints"} holds no readable checkpoint to export')
  print(f'exporting checkpoint {step} of {workdir}')
  return export_assets(config, workdir, state.params)


def _log_previews(writer, renderer, params, step, config):
  size = config.render.width
  c2w = camera.orbit_cameras(1, elevation_deg=15.0, distance=float(
      np.mean(config.camera.distance_range)), focal=float(size))
  images = renderer(params, c2w.c2w[0], c2w.focal[0], size)
  for name, image in zip(('rgb', 'normals', 'textureless', 'opacity'), images):
    writer.add_image(f'preview/{name}', image, step, dataformats='HWC')


class _NullWriter:
  """The summary writer of the processes other than 0: writes nothing."""

  def add_scalar(self, *args, **kwargs):
    pass

  def add_image(self, *args, **kwargs):
    pass

  def close(self):
    pass


def _writer(folder):
  return SummaryWriter(str(folder)) if parallel.is_primary() else _NullWriter()


def load_guidance(config):
  """(guidance.Diffusion or None, clip.Clip or None): the frozen models the weights ask for."""
  diffusion = load_diffusion(config) if config.sds_weight > 0 else None
  clip_model = None
  if config.clip.weight > 0:
    try:
      clip_model = clip_lib.Clip.from_pretrained(config.clip.model, from_pt=config.clip.from_pt,
                                                 allow_pickle=config.allow_pickle)
    except (models.ModelError, OSError, ValueError) as e:
      raise ConfigError(f'config.clip.model: {" ".join(str(e).split())}') from e
  return diffusion, clip_model


def _encode_prompt(guides, config, prompt, where='config.prompt'):
  """(diffusion text embeddings or None, CLIP view-prompt embeddings [4, D] or None)."""
  diffusion, clip_model = guides
  try:
    text = None if diffusion is None else diffusion.encode_views(prompt, config.negative_prompt)
    clip_text = None if clip_model is None else clip_model.embed_text(
        guidance.view_prompts(prompt))
  except ValueError as e:
    raise ConfigError(f'{where}: {e}') from e
  return text, clip_text


def fit_dreamfusion(config, workdir):
  """DreamFusion: optimises a NeRF with SDS from a frozen diffusion model, then exports it."""
  if many_prompts(config):
    return fit_many_prompts(config, workdir)
  start = time.time()
  guides = load_guidance(config)
  texts = _encode_prompt(guides, config, config.prompt)
  mesh = parallel.make_mesh(num_devices(config))
  model, background_model = make_nerf(config), make_background(config)
  optimizer = make_optimizer(config)
  fresh = init_dreamfusion_state(config, model, background_model, optimizer)
  # Replicated over the mesh; the restore template's sharding is where the checkpoint lands.
  ckpt, restored, restored_step = open_checkpoints(config, workdir,
                                                   parallel.replicate(fresh, mesh))
  if restored is not None:
    state = restored
    _print(f'resumed from checkpoint {restored_step} in {workdir / "checkpoints"}')
  else:  # Only a fresh run reads config.init_from; a resumed one has its own checkpoint.
    state = parallel.replicate(initial_state(config, fresh, optimizer), mesh)
  guides, texts = parallel.replicate((guides, texts), mesh)
  (diffusion, clip_model), (text, clip_text) = guides, texts
  _print(f'{config.batch_size} views per step over {mesh.size} of {jax.device_count()} devices '
         f'({jax.process_count()} processes)')
  step_fn = make_dreamfusion_step(config, model, background_model, optimizer, mesh=mesh)
  renderer = Renderer(config, model, background_model)
  writer = _writer(workdir / 'tensorboard')

  def preview(state):
    params = parallel.to_host(state.params)
    if parallel.is_primary():
      _log_previews(writer, renderer, params, int(state.step), config)

  state = _train_and_close(config, state,
                           lambda s: step_fn(s, diffusion, text, clip_model, clip_text), ckpt,
                           writer, preview)
  if state is None:
    return None  # Preempted: the checkpoint is written, the job can be restarted.
  train_seconds = time.time() - start
  params = parallel.to_host(state.params)
  metrics = {'steps': int(state.step), 'train_seconds': train_seconds}
  if parallel.is_primary():
    export_assets(config, workdir, params)
    seconds = time.time() - start
    metrics.update(seconds=seconds, export_seconds=seconds - train_seconds)
    (workdir / 'metrics.json').write_text(json.dumps(metrics, indent=2))
  parallel.sync('export')
  return metrics


def _print(*args, **kwargs):
  if parallel.is_primary():
    print(*args, **kwargs)


def _slug(prompt, limit=48):
  """A folder-name form of a prompt: lowercase words joined by '_'."""
  words = ''.join(c if c.isalnum() else ' ' for c in prompt.lower()).split()
  return '_'.join(words)[:limit] or 'prompt'


def prompt_dirs(workdir, prompts):
  """Each prompt's own folder of a many-prompt run: `<workdir>/prompts/<index>_<slug>`."""
  return [pathlib.Path(workdir) / 'prompts' / f'{i:03d}_{_slug(p)}' for i, p in enumerate(prompts)]


def _prompt_config(config, prompt):
  """The config of one prompt of a many-prompt run, as that prompt trained alone would have it."""
  single = config.copy_and_resolve_references()
  single.prompt = prompt
  single.prompts = ()
  single.prompts_file = ''
  return single


class _Checkpointers:
  """One Checkpointer per prompt, saving the slices of a stacked state together."""

  def __init__(self, checkpointers, take):
    self.checkpointers = checkpointers
    self._take = take  # (stacked state, index) -> that prompt's state, replicated.

  def save(self, step, state, force=False):
    return all([c.save(step, self._take(state, i), force=force)
                for i, c in enumerate(self.checkpointers)])

  def wait(self):
    for c in self.checkpointers:
      c.wait()

  def close(self):
    for c in self.checkpointers:
      c.close()


class _Writers:
  """Summary writers, one per prompt: a metric of shape [P] gives each writer its own value."""

  def __init__(self, writers):
    self.writers = writers

  def add_scalar(self, tag, value, step):
    values = np.broadcast_to(np.asarray(value), (len(self.writers),))
    for writer, v in zip(self.writers, values):
      writer.add_scalar(tag, float(v), step)

  def close(self):
    for writer in self.writers:
      writer.close()


def _restore_aligned(checkpointers, template):
  """Each prompt's newest readable checkpoint, all at the same step (the oldest of them).

  A run stopped between two prompts' saves leaves some prompts one checkpoint ahead; they go
  back to the common step so that the stacked state is one step.

  Returns:
    (list of states or None, step or None): None when some prompt has no checkpoint.
  """
  limit = None
  while True:
    found = [c.restore_latest(template, max_step=limit) for c in checkpointers]
    found_steps = [step for _, step in found]
    if any(step is None for step in found_steps):
      return None, None
    if len(set(found_steps)) == 1:
      return [state for state, _ in found], found_steps[0]
    limit = min(found_steps)


def fit_many_prompts(config, workdir):
  """One independent NeRF per prompt, vmapped over prompts and split over the devices.

  Each prompt trains exactly as it would alone with the same config and seed (up to float
  reduction order) and gets its own folder (prompt_dirs) with config.json, checkpoints,
  tensorboard, turntable and mesh, so `eval` and export work on it as on a single run.
  """
  start = time.time()
  prompts = prompt_list(config)
  guides = load_guidance(config)
  texts = [_encode_prompt(guides, config, p, f'prompt {i} ({p!r})')
           for i, p in enumerate(prompts)]
  mesh = parallel.make_mesh(num_devices(config))
  padded = len(prompts) + (-len(prompts)) % mesh.size  # Copies of the last prompt fill the mesh.
  texts = texts + [texts[-1]] * (padded - len(prompts))
  model, background_model = make_nerf(config), make_background(config)
  optimizer = make_optimizer(config)
  fresh = init_dreamfusion_state(config, model, background_model, optimizer)
  template = parallel.replicate(fresh, mesh)
  dirs = prompt_dirs(workdir, prompts)
  checkpointers = []
  for folder, prompt in zip(dirs, prompts):
    folder.mkdir(parents=True, exist_ok=True)
    if parallel.is_primary():
      (folder / 'config.json').write_text(
          _prompt_config(config, prompt).to_json_best_effort(indent=2))
    checkpointers.append(checkpoint.Checkpointer(folder / 'checkpoints',
                                                 max_to_keep=config.max_to_keep,
                                                 metadata=run_metadata(config)))
  try:
    states, restored_step = _restore_aligned(checkpointers, template)
  except checkpoint.CheckpointError as e:
    for c in checkpointers:
      c.close()
    raise ConfigError(str(e)) from e
  if states is None:
    states = [parallel.replicate(initial_state(config, fresh, optimizer), mesh)] * len(prompts)
  else:
    _print(f'resumed {len(prompts)} prompts from checkpoint {restored_step}')
  states = states + [states[-1]] * (padded - len(prompts))
  stack = jax.jit(lambda *xs: jax.tree.map(lambda *leaves: jnp.stack(leaves), *xs),
                  out_shardings=parallel.split(mesh))
  state = stack(*states)
  take = jax.jit(lambda s, i: jax.tree.map(lambda x: x[i], s),
                 out_shardings=parallel.replicated(mesh))
  text, clip_text = parallel.shard_leading(
      jax.tree.map(lambda *xs: np.stack(xs), *texts), mesh)
  diffusion, clip_model = parallel.replicate(guides, mesh)
  _print(f'{len(prompts)} prompts ({padded} with padding) over {mesh.size} of '
         f'{jax.device_count()} devices ({jax.process_count()} processes)')
  step_fn = make_dreamfusion_step(config, model, background_model, optimizer, mesh=mesh,
                                  vmapped=True)
  ckpt = _Checkpointers(checkpointers, take)
  writer = _Writers([_writer(folder / 'tensorboard') for folder in dirs]
                    + [_NullWriter()] * (padded - len(prompts)))
  renderer = Renderer(config, model, background_model)

  def preview(state):
    for i, w in enumerate(writer.writers[:len(prompts)]):
      params = parallel.to_host(take(state, i).params)
      if parallel.is_primary():
        _log_previews(w, renderer, params, int(state.step[0]), config)

  state = _train_and_close(config, state,
                           lambda s: step_fn(s, diffusion, text, clip_model, clip_text), ckpt,
                           writer, preview)
  if state is None:
    return None
  train_seconds = time.time() - start
  summary = {'prompts': prompts, 'steps': config.num_steps, 'train_seconds': train_seconds,
             'folders': [str(d) for d in dirs]}
  for i, folder in enumerate(dirs):
    params = parallel.to_host(take(state, i).params)
    if parallel.is_primary():
      export_assets(config, folder, params)
      (folder / 'metrics.json').write_text(json.dumps(
          {'prompt': prompts[i], 'steps': config.num_steps, 'train_seconds': train_seconds},
          indent=2))
  if parallel.is_primary():
    summary['seconds'] = time.time() - start
    (pathlib.Path(workdir) / 'metrics.json').write_text(json.dumps(summary, indent=2))
  parallel.sync('export')
  return summary


def _train_and_close(config, state, step_fn, ckpt, writer, preview_fn):
  """_train_loop, then closes the checkpointer(s) and writer(s); None if preempted."""
  state = _train_loop(config, state, step_fn, ckpt, writer, preview_fn)
  ckpt.close()
  writer.close()
  return state


def _train_loop(config, state, step_fn, ckpt, writer, preview_fn):
  """Runs steps to config.num_steps with logging and checkpoints; None if preempted.

  With many prompts the state and metrics carry a leading prompt axis; a step counts as skipped
  when any prompt's was, and the bar shows the mean over prompts.
  """
  step_of = lambda s: int(np.asarray(parallel.to_host(s.step)).reshape(-1)[0])
  first = step_of(state)
  bar = tqdm.tqdm(total=config.num_steps, initial=first, desc=config.method,
                  dynamic_ncols=True, file=sys.stderr, disable=not parallel.is_primary())
  consecutive, skipped, tick = 0, 0, time.time()
  with checkpoint.PreemptionGuard() as guard:
    step = first
    while step < config.num_steps:
      state, metrics = step_fn(state)
      step = step_of(state)  # Waits for the step: the bar's rate stays true.
      bar.update(1)
      if float(np.max(parallel.to_host(metrics['skipped']))):
        consecutive, skipped = consecutive + 1, skipped + 1
        print(f'step {step}: non-finite loss or gradient, step skipped ({skipped} so far)',
              file=sys.stderr)
        if consecutive >= config.max_consecutive_skips:
          ckpt.wait()
          raise FloatingPointError(
              f'{consecutive} steps in a row had a non-finite loss or gradient; the last good '
              'checkpoint is kept. Lower config.optim.lr_init or config.guidance_scale.')
      else:
        consecutive = 0
      if step % config.log_every == 0 or step == config.num_steps:
        metrics = dict(parallel.to_host(metrics))
        metrics.update(skipped_total=skipped,
                       steps_per_second=config.log_every / max(time.time() - tick, 1e-9))
        tick = time.time()
        postfix = {'loss': f'{np.mean(metrics["loss"]):.4g}'}
        for name in ('t', 'clip'):
          if name in metrics:
            postfix[name] = f'{np.mean(metrics[name]):.3f}'
        bar.set_postfix(**postfix)
        for name, value in metrics.items():
          writer.add_scalar(f'train/{name}', value if np.ndim(value) else float(value), step)
      if step % config.preview_every == 0 and preview_fn is not None:
        preview_fn(state)
      saved = step % config.checkpoint_every == 0 or step == config.num_steps
      if saved:
        ckpt.save(step, state)
      if parallel.any_process(guard.requested):  # All processes stop at the same step.
        if not saved:
          ckpt.save(step, state, force=True)
        ckpt.wait()
        print(f'preempted ({guard.signal_name or "a signal to another process"}): saved checkpoint {step}; run the same command '
              'to resume', file=sys.stderr)
        return None
    ckpt.wait()  # Guarded too: a signal now must not cut the last checkpoint's commit short.
    bar.close()
    if parallel.any_process(guard.requested):
      print(f'preempted ({guard.signal_name or "a signal to another process"}) after the last step: checkpoint {step} '
            'is complete; run the same command to export', file=sys.stderr)
      return None
  return state


def train_and_evaluate(config, workdir):
  """Runs the method named by config.method, writing everything into `workdir`.

  Args:
    config: an ml_collections.ConfigDict (see configs/).
    workdir: path of the folder that holds everything the run writes.

  Returns:
    The final metrics dict.
  """
  validate_config(config, workdir)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if parallel.is_primary():
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
    (workdir / 'command.txt').write_text(' '.join(sys.argv) + '\n')
  if config.method in ('dreamfusion', 'dreamfields'):
    return fit_dreamfusion(config, workdir)
  return fit_nerf(config, workdir)
