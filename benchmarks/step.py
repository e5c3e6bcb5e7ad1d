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

import common
from dreamfusion_jax.testing import bench


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
  print(f'device: {bench.device_name()}')
  result = bench.measure_step(config, diffusion, text, args.steps, donate=not args.no_donate)
  print(HEADER)
  print(row(args.model, config, diffusion, args.dtype, result))


if __name__ == '__main__':
  main()
