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

import common
from dreamfusion_jax.testing import bench


def main():
  args, config, diffusion, text = common.parse(__doc__, [
      ('--repeats', dict(type=int, default=5)),
      ('--flops_only', dict(action='store_true', help='compile, count FLOPs, run nothing')),
      ('--steps_per_s', dict(type=float, default=0.0,
                             help='a step rate measured elsewhere, to turn into FLOP/s')),
      ('--peak_tflops', dict(type=float, default=0.0,
                             help="the chip's dense peak for --steps_per_s (H100/H200 bf16: 989)"))])
  print(f'device: {bench.device_name()}; model {args.model} ({args.dtype}), config '
        f'{args.config}, {config.batch_size} view(s) of {config.render.height} px, samples '
        f'{tuple(config.render.num_samples)}, NeRF {config.nerf.width} x {config.nerf.num_blocks}')
  rows = bench.breakdown(config, diffusion, text, args.repeats, args.flops_only)
  print(bench.breakdown_table(rows))
  if args.steps_per_s:
    print('\n'.join(bench.implied(rows[-1][3], args.steps_per_s, args.peak_tflops)))


if __name__ == '__main__':
  main()
