"""One way to build a run: `build(config)` gives its parts, `load_run(workdir)` a trained one.

Training (train.py, classic.py, many_prompts.py), evaluation, export, the benchmarks and the
tests all make their NeRF, background, optimiser, renderer and step here, so a run is the same
wherever it is built.

    run = build.build(config)
    state = run.init_state()            # steps.TrainState from config.seed
    step = run.make_step(mesh=mesh)     # jitted (state, diffusion, text, ...) -> (state, metrics)
    loaded = build.load_run(workdir)    # its config.json + newest readable checkpoint
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dreamfusion_jax import camera
from dreamfusion_jax import checkpoint
from dreamfusion_jax import clip as clip_lib
from dreamfusion_jax import config_checks
from dreamfusion_jax import guidance
from dreamfusion_jax import hashgrid
from dreamfusion_jax import memory
from dreamfusion_jax import models
from dreamfusion_jax import nerf
from dreamfusion_jax import parallel
from dreamfusion_jax import render
from dreamfusion_jax import schedules
from dreamfusion_jax import shading
from dreamfusion_jax import steps

ConfigError = config_checks.ConfigError

# The parameters are initialised from fold_in(key(seed), INIT_STREAM), a stream no step uses
# (steps fold in their step number, which stays far below it).
INIT_STREAM = 2**31 - 1

# On a CPU, render.parallel_chunks = 0 renders this many independent groups of rays.
CPU_PARALLEL_CHUNKS = 4


@dataclasses.dataclass(frozen=True)
class Run:
  """The parts of a run, built from its config by `build`.

  Attributes:
    config: the run's ml_collections.ConfigDict.
    model: the nerf.NeRF module.
    background_model: the nerf.Background module (None for classic NeRF).
    optimizer: the optax.GradientTransformation.
    render_fn: render.render_rays with the run's sampling settings bound.
    settings: steps.SDSSettings of a text-to-3D run (None for classic NeRF).
    renderer: render.Renderer of a text-to-3D run (None for classic NeRF).
  """
  config: ml_collections.ConfigDict
  model: nerf.NeRF
  background_model: Any
  optimizer: optax.GradientTransformation
  render_fn: Callable
  settings: Any
  renderer: Any

  def init_state(self):
    """A fresh steps.TrainState from config.seed, committed to the first local device.

    Text-to-3D params are {'nerf', 'background'}; classic NeRF's are the NeRF's alone.
    """
    key = jax.random.key(self.config.seed)
    if self.background_model is None:
      x = jnp.zeros((1, 3))
      params = self.model.init(jax.random.fold_in(key, INIT_STREAM), x, x, x)
      return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=self.optimizer.init(params), key=key)
    key_nerf, key_bg = jax.random.split(jax.random.fold_in(key, INIT_STREAM))

    @jax.jit  # One compile for the whole initialisation, not one per operation.
    def init(key_nerf, key_bg):
      x = jnp.zeros((1, 3))
      params = {'nerf': self.model.init(key_nerf, x, x),
                'background': self.background_model.init(key_bg, x)}
      return params, self.optimizer.init(params)
    params, opt_state = init(key_nerf, key_bg)
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                             key=key)
    # Committed to a device like the step's outputs, so the second call does not compile again.
    return jax.device_put(state, jax.local_devices()[0])

  def make_step(self, *, donate=True, mesh=None, vmapped=False):
    """The run's jitted step.

    Text-to-3D: steps.dreamfusion_step as (state, diffusion, text, clip_model, clip_text) ->
    (state, metrics). Classic NeRF: steps.photometric_step as (state, pixels) -> (state,
    metrics).

    Args:
      donate: donate the state's buffers.
      mesh: with more than one device, the step's views (or rays) are split over its `data`
        axis.
      vmapped: one state and text per prompt along a leading axis (many prompts at once); the
        views of a prompt are not split.
    """
    shard = None
    if mesh is not None and mesh.size > 1 and not vmapped:
      shard = parallel.constrain_fn(mesh)
    donate_argnums = 0 if donate else ()
    if self.settings is None:
      background = jnp.asarray(tuple(self.config.data.background), jnp.float32)
      return jax.jit(functools.partial(
          steps.photometric_step, model=self.model, optimizer=self.optimizer,
          render_fn=self.render_fn, batch_size=self.config.batch_size, background=background,
          coarse_weight=self.config.render.coarse_loss_weight, shard=shard),
          donate_argnums=donate_argnums)
    step = functools.partial(
        steps.dreamfusion_step, model=self.model, background_model=self.background_model,
        optimizer=self.optimizer, render_fn=self.render_fn, settings=self.settings, shard=shard)
    if vmapped:
      step = jax.vmap(step, in_axes=(0, None, 0, None, 0))
    return jax.jit(step, donate_argnums=donate_argnums,
                   compiler_options=step_compiler_options(self.config))


def build(config):
  """The Run of a config (checked by config_checks.validate_config, or read from a run folder)."""
  text_to_3d = config.method != 'nerf'
  model = make_nerf(config)
  render_fn = make_render_fn(config)
  background_model = make_background(config) if text_to_3d else None
  renderer = None
  if text_to_3d:
    renderer = render.Renderer(model, background_model, render_fn,
                               chunk_size=config.render.chunk_size,
                               light_color=config.shading.light_color,
                               ambient=config.shading.ambient)
  return Run(config=config, model=model, background_model=background_model,
             optimizer=make_optimizer(config), render_fn=render_fn,
             settings=make_sds_settings(config) if text_to_3d else None, renderer=renderer)


def make_nerf(config):
  """The NeRF module described by config.nerf."""
  fields = dict(config.nerf)
  fields['grid_resolutions'] = tuple(fields['grid_resolutions'])
  fields['hash_band'] = tuple(fields.get('hash_band', ()))  # Absent from older run folders.
  return nerf.NeRF(**fields)


def describe_params(run, params):
  """One line for the run's log: the NeRF's parameter count and, for a hash grid, its layout.

  Args:
    run: the Run.
    params: its params (text-to-3D {'nerf', 'background'}, classic NeRF the NeRF's own).
  """
  field = params.get('nerf', params)
  count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))
  line = f'NeRF: {count(field):,} parameters ({run.model.encoding} encoding'
  if run.model.encoding == 'hash':
    grid = run.model.hash_grid()
    dense = grid.hashed.count(False)
    line += (f', {len(grid.sizes)} levels x {grid.features} features at {grid.resolutions[0]} to '
             f'{grid.resolutions[-1]} vertices per axis, {dense} dense and '
             f'{len(grid.sizes) - dense} hashed into 2^{run.model.hash_log2_table} entries: '
             f'{grid.num_params:,} in the table')
  line += ')'
  if 'background' in params:
    line += f'; background {count(params["background"]):,}'
  return line


def make_background(config):
  """DreamFusion's background MLP described by config.background."""
  bg = config.background
  return nerf.Background(width=bg.width, max_deg=bg.max_deg, color=tuple(bg.color))


def make_optimizer(config):
  """Adam or Adan with mip-NeRF's log-linear learning rate and optional global-norm clipping.

  config.optim.name 'adan' (stable-dreamfusion's default optimiser) uses beta1..3, eps and
  weight_decay; 'adam' (absent in older run folders) beta1, beta2 and eps. A hash grid's table
  learns at config.optim.table_lr_scale times the rate of the rest (stable-dreamfusion: 10), the
  background at config.optim.background_lr_scale times it (threestudio: 0.1), and with
  config.nerf.hash_band the grid's finer levels are held at 0 until the band reaches them.
  """
  optim = config.optim
  chain = []
  if config.nerf.encoding == 'hash' and config.nerf.get('hash_band'):
    grid = make_nerf(config).hash_grid()
    chain.append(hashgrid.band_mask(grid, *config.nerf.hash_band))
  chain.append(_base_optimizer(config))
  if optim.get('table_lr_scale', 1.0) != 1.0:
    chain.append(optax.masked(optax.scale(optim.table_lr_scale), hashgrid.table_labels))
  if optim.get('background_lr_scale', 1.0) != 1.0:
    chain.append(optax.masked(optax.scale(optim.background_lr_scale), _background_labels))
  return optax.chain(*chain) if len(chain) > 1 else chain[0]


def _background_labels(params):
  """True at the leaves of params['background'] (text-to-3D params), for optax.masked."""
  return {k: jax.tree.map(lambda _: k == 'background', v) for k, v in params.items()}


def _base_optimizer(config):
  """Clipping, then Adam or Adan on the learning-rate schedule of config.optim."""
  optim = config.optim
  schedule = functools.partial(schedules.log_linear_warmup, init=optim.lr_init,
                               final=optim.lr_final, num_steps=config.num_steps,
                               warmup_steps=optim.warmup_steps,
                               warmup_multiplier=optim.get('warmup_multiplier', 0.01),
                               warmup_shape=optim.get('warmup_shape', 'sine'))
  chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
  if optim.get('name', 'adam') == 'adan':
    chain.append(optax.adan(schedule, b1=optim.beta1, b2=optim.beta2, b3=optim.beta3,
                            eps=optim.eps, weight_decay=optim.weight_decay))
  else:
    chain.append(optax.adam(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps))
  return optax.chain(*chain)


def make_render_fn(config):
  """render.render_rays with the sampling settings of config.render bound."""
  rend = config.render
  return functools.partial(render.render_rays, near=rend.near, far=rend.far,
                           num_samples=tuple(rend.num_samples),
                           scene_radius=rend.scene_radius or None)


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
      transmittance_schedule=loss.get('transmittance_schedule', 'linear'),
      opacity_target_scale=loss.get('opacity_target_scale', 1.0),
      clip_max_scale=config.clip.get('max_scale', 1.0),
      clip_background_after_crop=config.clip.get('background_after_crop', False),
      clip_blur_radius=config.clip.get('blur_radius', 0) or None,
      remat_chunks=config.render.get('remat_chunks', 0),  # Absent from older run folders.
      parallel_chunks=parallel_chunks(config),
      entropy_ramp_steps=loss.get('entropy_ramp_steps', 0), grad_clip=config.optim.grad_clip,
      perp_neg=perp_neg_scales(config))


def perp_neg_scales(config):
  """SDSSettings.perp_neg: () when config.perp_neg is off (or absent from an older run)."""
  if not config.get('perp_neg', False):
    return ()
  return tuple(tuple(float(v) for v in config[f'perp_neg_{name}'])
               for name in ('front_side', 'side_back', 'front_side_back'))


def fitted_step(run, mesh, args, vmapped=False):
  """(step, memory.Fit or None): run.make_step, or for render.remat_chunks = memory.AUTO the
  compiled step with the fewest remat chunks whose plan fits the device (memory.fit_step).

  Args:
    run: the Run.
    mesh: the device mesh of the step (see Run.make_step).
    args: the step's arguments as the loop will pass them (state, diffusion, text, clip_model,
      clip_text), for compiling it ahead of the first call.
    vmapped: one state and text per prompt (many prompts at once).
  """
  if run.config.render.get('remat_chunks', 0) != memory.AUTO:
    return run.make_step(mesh=mesh, vmapped=vmapped), None
  compile_step = lambda config: build(config).make_step(
      mesh=mesh, vmapped=vmapped).lower(*args).compile()
  fit = memory.fit_step(run.config, compile_step)
  return fit.step, fit


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
  rays = config_checks.step_rays(config) // max(config.render.get('remat_chunks', 0), 1)
  return max(n for n in range(1, CPU_PARALLEL_CHUNKS + 1) if rays % n == 0)


def step_compiler_options(config):
  """XLA options of the training step's jit: CPU scheduling for parallel_chunks (or None)."""
  if jax.default_backend() == 'cpu' and parallel_chunks(config) > 1:
    # Without it XLA:CPU orders the groups one after the other to save memory.
    return {'xla_cpu_enable_concurrency_optimized_scheduler': True}
  return None


def initial_state(run, state):
  """The state a fresh run starts from: `state`, or config.init_from's params in it.

  Args:
    run: the run's Run.
    state: a fresh TrainState (run.init_state()); its optimiser state starts afresh.
  """
  if not run.config.get('init_from'):
    return state
  params = jax.device_put(init_params_from(run.config), jax.local_devices()[0])
  return state.replace(params=params, opt_state=run.optimizer.init(params))


def init_params_from(config):
  """The trained params of the newest readable checkpoint of config.init_from (host arrays)."""
  other = config_checks.init_config(config)
  try:
    loaded = load_run(config.init_from, other)
  except ConfigError as e:
    raise ConfigError(f'config.init_from: {e}') from e
  if parallel.is_primary():
    print(f'starting from the NeRF of checkpoint {loaded.step} of {config.init_from}')
  return parallel.to_host(loaded.state.params)


def load_diffusion(config):
  """The frozen guidance.Diffusion named by config.model (errors name the field)."""
  try:
    return guidance.Diffusion.from_pretrained(
        config.model, dtype=jnp.dtype(config.model_dtype), from_pt=config.from_pt,
        allow_pickle=config.allow_pickle)
  except models.ModelError as e:
    raise ConfigError(f'config.model: {e}') from e


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


def encode_prompt(guides, config, prompt, where='config.prompt'):
  """(diffusion text embeddings or None, CLIP caption embeddings [4, D] or None).

  CLIP's four rows (one per camera.VIEW_NAMES) are the view-dependent captions with
  config.clip.view_prompts, else the plain caption four times (Dream Fields' '{query}').
  """
  diffusion, clip_model = guides
  try:
    text = None if diffusion is None else diffusion.encode_views(prompt, config.negative_prompt)
    captions = (guidance.view_prompts(prompt) if config.clip.get('view_prompts', True)
                else [prompt] * len(camera.VIEW_NAMES))
    clip_text = None if clip_model is None else clip_model.embed_text(captions)
  except ValueError as e:
    raise ConfigError(f'{where}: {e}') from e
  return text, clip_text


def open_checkpoints(config, folder, template):
  """The Checkpointer of `folder`/checkpoints and its newest good (state, step), or (None, None).

  Raises:
    ConfigError: the newest readable checkpoint belongs to another config.
  """
  ckpt = checkpoint.Checkpointer(pathlib.Path(folder) / 'checkpoints',
                                 max_to_keep=config.get('max_to_keep'),
                                 metadata=config_checks.run_metadata(config))
  try:
    state, step = ckpt.restore_latest(template)
  except checkpoint.CheckpointError as e:
    ckpt.close()
    raise ConfigError(str(e)) from e
  return ckpt, state, step


def read_config(workdir):
  """The ml_collections.ConfigDict saved in `workdir`/config.json; raises ConfigError."""
  config_file = pathlib.Path(workdir).expanduser() / 'config.json'
  if not config_file.is_file():
    raise ConfigError(f'{config_file} not found: pass the --workdir of a run')
  try:
    return ml_collections.ConfigDict(json.loads(config_file.read_text()))
  except ValueError as e:
    raise ConfigError(f'{config_file} is not a run config ({e})') from e


def check_checkpoints(workdir):
  """Raises ConfigError unless `workdir`/checkpoints holds at least one step folder."""
  folder = pathlib.Path(workdir).expanduser() / 'checkpoints'
  # Checked before opening them: the Checkpointer would create a missing folder.
  if not folder.is_dir() or not any(p.name.isdigit() for p in folder.iterdir()):
    raise ConfigError(f'{folder} holds no checkpoint: train the run first (python -m '
                      'dreamfusion_jax.main --config ... --workdir ...)')


@dataclasses.dataclass(frozen=True)
class LoadedRun:
  """A trained run: its Run, its newest readable state (on the first device) and that step."""
  run: Run
  state: steps.TrainState
  step: int


def load_run(workdir, config=None):
  """The Run of `workdir` (its config.json, or `config`) and its newest readable checkpoint.

  Raises:
    ConfigError: no config.json, no readable checkpoint, or one of another config.
  """
  workdir = pathlib.Path(workdir).expanduser()
  config = read_config(workdir) if config is None else config
  check_checkpoints(workdir)
  folder = workdir / 'checkpoints'
  run = build(config)
  ckpt, state, step = open_checkpoints(config, workdir, run.init_state())
  ckpt.close()
  if state is None:
    raise ConfigError(f'{folder} holds no readable checkpoint')
  return LoadedRun(run=run, state=state, step=int(step))
