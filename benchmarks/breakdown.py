"""Where the time of one DreamFusion step goes: each part jitted and timed alone, with its FLOPs.

  python benchmarks/breakdown.py                        # CPU-sized paper step, tiny latent model
  python benchmarks/breakdown.py --model sd21 --full    # the paper config with SD-2.1-base shapes
  python benchmarks/breakdown.py --model toy --config toy
  python benchmarks/breakdown.py --model sd21 --full --dtype bfloat16 --flops_only  # any CPU

Parts, fed the same shapes the step sees:
  render   NeRF render of the B views (hierarchical samples, normals from the density gradient,
           shading, background) forward + backward, with the orientation and opacity losses
  vae      resize to the model's resolution + VAE encode, forward + VJP (pixel model: the resize)
  unet     the classifier-free-guided UNet call, cond and uncond in one batch (no gradient)
  optim    gradient clipping + Adam update of the NeRF and background
  step     the whole jitted train step, for comparison with the sum of the parts
FLOPs are XLA's cost analysis of each compiled part; achieved FLOP/s = FLOPs / time.
--flops_only compiles the parts without running them: the FLOPs of a step too large to time here
(the SD-2.1-shaped step on a CPU), and with --steps_per_s and --peak_tflops the FLOP/s and share
of a chip's peak that a step rate measured elsewhere implies.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from dreamfusion_jax import camera
from dreamfusion_jax import guidance
from dreamfusion_jax import losses
from dreamfusion_jax import shading
from dreamfusion_jax import steps
from dreamfusion_jax import train


def parts(config, diffusion, text):
  """{name: (jitted function, args)} of the step's parts, inputs drawn as the step draws them."""
  model, bg = train.make_nerf(config), train.make_background(config)
  optimizer = train.make_optimizer(config)
  state = train.init_dreamfusion_state(config, model, bg, optimizer)
  settings = train.make_sds_settings(config)
  render_fn = train.make_render_fn(config)
  b = settings.batch_size
  with common.on_host():  # The inputs: a few dozen small eager ops.
    key = jax.random.key(1)
    k_cam, k_light, k_render, k_sds = jax.random.split(key, 4)
    cameras = camera.sample_cameras(k_cam, b, width=settings.width,
                                    **dict(settings.camera_ranges))
    lights = jax.vmap(shading.sample_light)(jax.random.split(k_light, b), cameras.c2w[:, :3, 3])
    modes = jnp.full((b,), shading.mode_index('lambertian'), jnp.int32)
    rgb_ct = jax.random.normal(k_sds, (b, settings.height, settings.width, 3))
    images = jax.random.uniform(k_sds, (b, settings.height, settings.width, 3))
    z_t = jax.random.normal(k_sds, diffusion.latent_shape(b))

  @jax.jit
  def render(params):
    def loss(p):
      rgb, out, rays = steps.render_views(k_render, p, cameras, modes, lights, model=model,
                                          background_model=bg, render_fn=render_fn,
                                          settings=settings)
      return (jnp.sum(rgb * rgb_ct)
              + losses.orientation(out.weights, out.sample_normals, rays.directions)
              + 1e-3 * losses.opacity(out.acc))
    return jax.value_and_grad(loss)(params)

  @jax.jit
  def vae(d, x):
    def encode(x):
      if d.resolution != settings.height:
        x = guidance.resize_images(x, d.resolution)
      return d.to_model_space(x)
    z, pullback = jax.vjp(encode, x)
    return pullback(jnp.ones_like(z))[0]

  emb = text.select(jnp.zeros((b,), jnp.int32))
  unet = jax.jit(lambda d, z: d.predict_noise(z, jnp.full((b,), 500, jnp.int32), emb, 100.0))

  grads = jax.tree.map(lambda p: np.ones(p.shape, p.dtype), state.params)

  @jax.jit
  def optim(g, opt_state, params):
    updates, opt_state = optimizer.update(g, opt_state, params)
    return jax.tree.map(jnp.add, params, updates), opt_state

  step = train.make_dreamfusion_step(config, model, bg, optimizer, donate=False)
  return {
      'render': (render, (state.params,)),
      'vae': (vae, (diffusion, images)),
      'unet': (unet, (diffusion, z_t)),
      'optim': (optim, (grads, state.opt_state, state.params)),
      'step': (step, (state, diffusion, text)),
  }


def measure(config, diffusion, text, repeats, flops_only=False):
  """Rows (name, compile s, ms per call, GFLOP, GFLOP/s) of every part and the whole step.

  With flops_only nothing runs: ms and GFLOP/s are None.
  """
  rows = []
  for name, (fn, args) in parts(config, diffusion, text).items():
    start = time.perf_counter()
    executable = common.compiled(fn, args)  # jit's cache keeps it for the calls below.
    compile_s = time.perf_counter() - start
    gflop = common.flops(executable) / 1e9
    if flops_only:
      rows.append((name, compile_s, None, gflop, None))
      continue
    _, per_call = common.time_calls(fn, args, repeats)
    rows.append((name, compile_s, per_call * 1e3, gflop, gflop / per_call))
  return rows


def table(rows):
  """Markdown table of measure()'s rows, with the parts' share of their sum."""
  if rows[0][2] is None:  # FLOPs only.
    total = sum(r[3] for r in rows if r[0] != 'step')
    lines = ['| part | compile s | GFLOP | share of parts |', '| --- | --- | --- | --- |']
    for name, compile_s, _, gflop, _ in rows:
      share = '' if name == 'step' else f'{100 * gflop / total:.1f}%'
      lines.append(f'| {name} | {compile_s:.1f} | {gflop:.1f} | {share} |')
    lines.append(f'| sum of parts | | {total:.1f} | 100% |')
    return '\n'.join(lines)
  total = sum(r[2] for r in rows if r[0] != 'step')
  lines = ['| part | compile s | ms | share of parts | GFLOP | achieved GFLOP/s |',
           '| --- | --- | --- | --- | --- | --- |']
  for name, compile_s, ms, gflop, rate in rows:
    share = '' if name == 'step' else f'{100 * ms / total:.0f}%'
    lines.append(f'| {name} | {compile_s:.1f} | {ms:.1f} | {share} | {gflop:.3f} | {rate:.1f} |')
  lines.append(f'| sum of parts | | {total:.1f} | 100% | | |')
  return '\n'.join(lines)


def implied(step_gflop, steps_per_s, peak_tflops):
  """Lines: the FLOP/s a measured step rate implies, and the rate a share of the peak allows."""
  achieved = step_gflop * steps_per_s / 1e3
  lines = [f'{steps_per_s:g} steps/s x {step_gflop:.1f} GFLOP = {achieved:.1f} TFLOP/s']
  if peak_tflops:
    lines[0] += f' = {100 * achieved / peak_tflops:.1f}% of a {peak_tflops:g} TFLOP/s peak'
    for share in (0.35, 1.0):
      lines.append(f'{share:.0%} of that peak: {share * peak_tflops * 1e3 / step_gflop:.1f} '
                   'steps/s')
  return lines


def main():
  args, config, diffusion, text = common.parse(__doc__, [
      ('--repeats', dict(type=int, default=5)),
      ('--flops_only', dict(action='store_true', help='compile, count FLOPs, run nothing')),
      ('--steps_per_s', dict(type=float, default=0.0,
                             help='a step rate measured elsewhere, to turn into FLOP/s')),
      ('--peak_tflops', dict(type=float, default=0.0,
                             help="the chip's dense peak for --steps_per_s (H100/H200 bf16: 989)"))])
  print(f'device: {common.device_name()}; model {args.model} ({args.dtype}), config '
        f'{args.config}, {config.batch_size} view(s) of {config.render.height} px, samples '
        f'{tuple(config.render.num_samples)}, NeRF {config.nerf.width} x {config.nerf.num_blocks}')
  rows = measure(config, diffusion, text, args.repeats, args.flops_only)
  print(table(rows))
  if args.steps_per_s:
    print('\n'.join(implied(rows[-1][3], args.steps_per_s, args.peak_tflops)))


if __name__ == '__main__':
  main()
