"""Before and after each speed or memory choice of the step, measured in one run (NOTES.md).

  python benchmarks/variants.py                         # CPU-sized paper step, tiny latent model
  python benchmarks/variants.py --model sd21 --full --dtype bfloat16    # on a GPU

Each row is the jitted step with one choice undone, against the step as shipped:
  two UNet calls     cond and uncond as two UNet calls instead of one batched call
  no donation        the state's buffers are not donated to the step
  float32 UNet/VAE   (with --dtype bfloat16) the diffusion model in float32
  remat_chunks 16    the render in 16 chunks recomputed in the backward pass (memory option)
"""

import jax.numpy as jnp

import common
from dreamfusion_jax.testing import bench


def main():
  args, config, diffusion, text = common.parse(__doc__, [('--steps', dict(type=int, default=10))])
  print(f'device: {bench.device_name()}; model {args.model} ({args.dtype})')
  print('| variant | compile s | steps/s | vs shipped | planned GiB |')
  print('| --- | --- | --- | --- | --- |')
  shipped = None

  def report(name, config, model=diffusion, embeddings=text, **kwargs):
    nonlocal shipped
    result = bench.measure_step(config, model, embeddings, args.steps, **kwargs)
    shipped = shipped or result['steps_per_s']
    print(f'| {name} | {result["compile_s"]:.1f} | {result["steps_per_s"]:.2f} | '
          f'{result["steps_per_s"] / shipped:.2f}x | {result["planned_gib"]:.3f} |', flush=True)

  report('as shipped', config)
  with bench.two_unet_calls():
    report('two UNet calls', config)
  report('no donation', config, donate=False)
  if args.dtype == 'bfloat16':
    model32, width, tokens, _ = bench.load_model(args.model, jnp.float32)
    report('float32 UNet/VAE', config, model=model32,
           embeddings=bench.random_text(4, tokens, width, jnp.float32))
  report('remat_chunks 16', common.from_flags(args, **{'render.remat_chunks': 16})[0])


if __name__ == '__main__':
  main()
