"""Steps per second of DreamFusion's jitted train step, first-call compile timed separately.

  python benchmarks/step.py                                  # CPU-sized paper step, tiny latent
  python benchmarks/step.py --model sd21 --full --dtype bfloat16   # paper config, SD-2.1 shapes
  python benchmarks/step.py --config toy --model toy         # configs/toy.py as shipped
  python benchmarks/step.py --config pixel --model tiny-pixel

`--full` keeps the config as shipped (configs/dreamfusion.py: 64x64 renders resized to the model's
resolution, 64+64 samples, 4 views, the 128 x 5 MLP); without it the paper step is shrunk to
common.CPU_SIZE. The model is random weights with the named shapes (sd21: the FLOPs of Stable
Diffusion 2.1-base) or the shipped toy prior. Also printed: XLA's planned memory of the step
and, on an accelerator, the device's peak memory in use.
"""

import time

import jax

import common
from dreamfusion_jax import parallel
from dreamfusion_jax import train


def measure_step(config, diffusion, text, num_steps, donate=True):
  """dict(compile_s, steps_per_s, planned_gib, peak_gib, devices) of the jitted DreamFusion step.

  The views are split over the most devices they divide evenly (config.num_devices = 0), as a
  run does; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N host devices.
  """
  net, bg = train.make_nerf(config), train.make_background(config)
  optimizer = train.make_optimizer(config)
  mesh = parallel.make_mesh(train.num_devices(config))  # As train.py: the views split evenly.
  state = parallel.replicate(train.init_dreamfusion_state(config, net, bg, optimizer), mesh)
  diffusion, text = parallel.replicate((diffusion, text), mesh)
  step = train.make_dreamfusion_step(config, net, bg, optimizer, donate=donate, mesh=mesh)
  start = time.perf_counter()
  executable = common.compiled(step, (state, diffusion, text))
  compile_s = time.perf_counter() - start
  _, per_step = common.time_steps(step, state, (diffusion, text), num_steps)
  stats = jax.local_devices()[0].memory_stats() or {}
  return dict(compile_s=compile_s, steps_per_s=1.0 / per_step,
              planned_gib=common.planned_bytes(executable) / 2**30,
              peak_gib=stats.get('peak_bytes_in_use', float('nan')) / 2**30, devices=mesh.size)


def row(name, config, diffusion, dtype, result):
  return (f'| {name} | {dtype} | {config.batch_size} | {config.render.height} px -> '
          f'{diffusion.resolution} px | {tuple(config.render.num_samples)} | '
          f'{config.nerf.width} x {config.nerf.num_blocks} | {result["compile_s"]:.1f} | '
          f'{result["steps_per_s"]:.2f} | {result["planned_gib"]:.2f} | '
          f'{result["peak_gib"]:.2f} |')


HEADER = ('| model | dtype | views/step | render | samples | MLP | compile s | steps/s | '
          'planned GiB | peak GiB |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')


def main():
  args, config, diffusion, text = common.parse(__doc__, [
      ('--steps', dict(type=int, default=10)),
      ('--no_donate', dict(action='store_true', help='do not donate the state'))])
  print(f'device: {common.device_name()}')
  result = measure_step(config, diffusion, text, args.steps, donate=not args.no_donate)
  print(HEADER)
  print(row(args.model, config, diffusion, args.dtype, result))


if __name__ == '__main__':
  main()
