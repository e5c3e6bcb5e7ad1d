"""Training: the train state, jitted steps and `train_and_evaluate(config, workdir)`.

Together with `main.py`, this is the only module that reads the config; everything it calls takes
explicit arguments.
"""

import functools
import json
import pathlib
import sys
import time

import flax
import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from tensorboardX import SummaryWriter

from dreamfusion_jax import camera
from dreamfusion_jax import nerf
from dreamfusion_jax import render
from dreamfusion_jax import schedules
from dreamfusion_jax.data import blender

METHODS = ('nerf',)


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and what to change."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree.

  Attributes:
    step: int32 scalar, steps taken.
    params: the NeRF's variables.
    opt_state: the Optax state.
    key: the run's base PRNG key; step keys are fold_in(key, step).
  """
  step: jax.Array
  params: flax.core.FrozenDict
  opt_state: optax.OptState
  key: jax.Array


@flax.struct.dataclass
class PosedPixels:
  """Every training pixel as a ray with its colour.

  Attributes:
    rays: camera.Rays [N].
    rgb: float32 [N, 3] target colours.
  """
  rays: camera.Rays
  rgb: jax.Array


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
  _validate_data(config.data)


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


def psnr(mse):
  """Peak signal-to-noise ratio in dB of a mean squared error of colours in [0, 1]."""
  return -10.0 * jnp.log10(mse)


def photometric_step(state, pixels, *, model, optimizer, render_fn, batch_size, background,
                     coarse_weight):
  """One classic-NeRF step: a random batch of pixels, render, MSE, Adam.

  Args:
    state: TrainState.
    pixels: PosedPixels [N], all training pixels.
    model: the NeRF module.
    optimizer: an optax.GradientTransformation.
    render_fn: render.render_rays with its sampling settings bound.
    batch_size: int rays per step.
    background: float32 [3] background colour of the images.
    coarse_weight: weight of every level but the last in the loss (mip-NeRF: 0.1).

  Returns:
    The new TrainState and a dict of float32 scalar metrics (loss, psnr of the last level).
  """
  key = jax.random.fold_in(state.key, state.step)
  key_batch, key_render = jax.random.split(key)
  index = jax.random.randint(key_batch, (batch_size,), 0, pixels.rgb.shape[0])
  batch = jax.tree.map(lambda x: x[index], pixels)
  bg = jnp.broadcast_to(background, batch.rgb.shape)

  def loss_fn(params):
    field = nerf.field_fn(model, params, with_normals=False)
    outputs = render_fn(key_render, field, batch.rays, background=bg, randomized=True)
    mses = [jnp.mean((out.rgb - batch.rgb)**2) for out in outputs]
    loss = mses[-1] + coarse_weight * sum(mses[:-1])
    return loss, mses[-1]

  (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, {'loss': loss, 'psnr': psnr(mse)}


def posed_pixels(views):
  """PosedPixels [N * H * W] of a blender.Views."""
  rays = camera.generate_rays(views.c2w, views.focal, views.height, views.width)
  return PosedPixels(rays=rays.reshape(-1), rgb=jnp.asarray(views.images).reshape(-1, 3))


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
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=optimizer.init(params), key=key)
  step_fn = jax.jit(functools.partial(
      photometric_step, model=model, optimizer=optimizer, render_fn=render_fn,
      batch_size=config.batch_size, background=jnp.asarray(background, jnp.float32),
      coarse_weight=config.render.coarse_loss_weight), donate_argnums=0)
  writer = SummaryWriter(str(workdir / 'tensorboard'))
  bar = tqdm.trange(config.num_steps, desc='nerf', dynamic_ncols=True, file=sys.stderr)
  for step in bar:
    state, metrics = step_fn(state, pixels)
    # Wait for the step, so the bar's speed and ETA are true rather than dispatch rates.
    jax.block_until_ready(state.step)
    if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
      metrics = jax.device_get(metrics)
      bar.set_postfix(loss=f'{metrics["loss"]:.4f}', psnr=f'{metrics["psnr"]:.2f}')
      for name, value in metrics.items():
        writer.add_scalar(f'train/{name}', float(value), step + 1)
  train_seconds = time.time() - start
  renders = render_views(state.params, model, render_fn, test_views,
                         jnp.asarray(background, jnp.float32), config.render.chunk_size)
  mses = jnp.mean((renders - test_views.images)**2, axis=(1, 2, 3))
  test_psnrs = np.asarray(psnr(mses))
  render_dir = workdir / 'renders'
  render_dir.mkdir(exist_ok=True)
  for i in range(min(config.eval.save_images, len(renders))):
    side_by_side = np.concatenate([np.asarray(renders[i]), test_views.images[i]], axis=1)
    iio.imwrite(render_dir / f'test_{i:03d}.png',
                (np.clip(side_by_side, 0, 1) * 255).round().astype(np.uint8))
  metrics = {'test_psnr': float(test_psnrs.mean()), 'test_psnr_per_view': test_psnrs.tolist(),
             'steps': int(state.step), 'seconds': time.time() - start,
             'train_seconds': train_seconds}
  writer.add_scalar('test/psnr', metrics['test_psnr'], int(state.step))
  writer.close()
  (workdir / 'metrics.json').write_text(json.dumps(metrics, indent=2))
  print(f'test PSNR {metrics["test_psnr"]:.2f} dB after {metrics["steps"]} steps, '
        f'{metrics["seconds"]:.0f} s; wrote {workdir / "metrics.json"}')
  return metrics


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
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  (workdir / 'command.txt').write_text(' '.join(sys.argv) + '\n')
  return fit_nerf(config, workdir)
