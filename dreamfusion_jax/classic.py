"""Classic NeRF: fits the posed images of a Blender-format scene, then scores its test split.

`fit_nerf(config, workdir)` is what train.train_and_evaluate runs for config.method = 'nerf'.
"""

import functools
import json
import sys
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from dreamfusion_jax import build
from dreamfusion_jax import camera
from dreamfusion_jax import config_checks
from dreamfusion_jax import losses
from dreamfusion_jax import loop
from dreamfusion_jax import nerf
from dreamfusion_jax import parallel
from dreamfusion_jax import render
from dreamfusion_jax import steps
from dreamfusion_jax.data import blender


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


def _load_views(data):
  """The train and test blender.Views of config.data."""
  background = tuple(data.background)
  max_views = data.max_train_views if data.max_train_views > 0 else None
  train_views = blender.load_split(data.path, 'train', background, data.downsample, max_views)
  test_views = blender.load_split(data.path, 'test', background, data.downsample,
                                  data.max_test_views if data.max_test_views > 0 else None)
  return train_views, test_views


def _fit(config, step_fn, state, pixels, summary):
  """Runs the photometric steps to config.num_steps; returns the last state."""
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
        summary.add_scalar(f'train/{name}', float(value), step + 1)
  return state


def fit_nerf(config, workdir):
  """Fits config.data's train views, renders its test views, writes metrics.json and renders/.

  Returns:
    dict of metrics: test_psnr (dB, mean over test views), test_psnr_per_view, steps, seconds,
    train_seconds.
  """
  start = time.time()
  train_views, test_views = _load_views(config.data)
  background = jnp.asarray(tuple(config.data.background), jnp.float32)
  run = build.build(config)
  mesh = parallel.make_mesh(config_checks.num_devices(config))
  fresh = run.init_state()
  loop.log(build.describe_params(run, fresh.params))
  state, pixels = parallel.replicate((fresh, posed_pixels(train_views)), mesh)
  loop.log(f'{config.batch_size} rays per step over {mesh.size} of {jax.device_count()} '
           f'devices ({jax.process_count()} processes)')
  summary = loop.writer(workdir / 'tensorboard')
  state = _fit(config, run.make_step(mesh=mesh), state, pixels, summary)
  train_seconds = time.time() - start
  renders = render_views(parallel.to_host(state.params), run.model, run.render_fn, test_views,
                         background, config.render.chunk_size)
  mses = jnp.mean((renders - test_views.images)**2, axis=(1, 2, 3))
  test_psnrs = np.asarray(losses.psnr(mses))
  metrics = {'test_psnr': float(test_psnrs.mean()), 'test_psnr_per_view': test_psnrs.tolist(),
             'steps': int(state.step), 'seconds': time.time() - start,
             'train_seconds': train_seconds}
  summary.add_scalar('test/psnr', metrics['test_psnr'], int(state.step))
  summary.close()
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
