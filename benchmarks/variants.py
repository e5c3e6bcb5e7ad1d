"""Before and after each speed or memory choice of the step, measured in one run (NOTES.md).

  python benchmarks/variants.py                         # CPU-sized paper step, tiny latent model
  python benchmarks/variants.py --model sd21 --full --dtype bfloat16    # on a GPU

Each row is the jitted step with one choice undone, against the step as shipped:
  two UNet calls     cond and uncond as two UNet calls instead of one batched call
  no donation        the state's buffers are not donated to the step
  float32 UNet/VAE   (with --dtype bfloat16) the diffusion model in float32
  remat_chunks 16    the render in 16 chunks recomputed in the backward pass (memory option)
"""

import contextlib

import jax.numpy as jnp

import common
from dreamfusion_jax import guidance
import step as step_bench


@contextlib.contextmanager
def two_unet_calls():
  """Diffusion.predict_noise with separate uncond and cond UNet calls (the unbatched path)."""
  batched = guidance.Diffusion.predict_noise

  def predict_noise(self, z_t, timesteps, emb, guidance_scale):
    sample = z_t.transpose(0, 3, 1, 2).astype(self.dtype)
    call = lambda e: self.unet.apply({'params': self.unet_params}, sample, timesteps,
                                     e.astype(self.dtype)).sample
    eps_u, eps_c = (call(e).astype(jnp.float32).transpose(0, 2, 3, 1)
                    for e in (emb.uncond, emb.cond))
    scale = jnp.reshape(jnp.asarray(guidance_scale, jnp.float32), (-1, 1, 1, 1))
    return eps_u + scale * (eps_c - eps_u)

  guidance.Diffusion.predict_noise = predict_noise
  try:
    yield
  finally:
    guidance.Diffusion.predict_noise = batched


def main():
  args, config, diffusion, text = common.parse(__doc__, [('--steps', dict(type=int, default=10))])
  print(f'device: {common.device_name()}; model {args.model} ({args.dtype})')
  print('| variant | compile s | steps/s | vs shipped | planned GiB |')
  print('| --- | --- | --- | --- | --- |')
  shipped = None

  def report(name, config, model=diffusion, embeddings=text, **kwargs):
    nonlocal shipped
    result = step_bench.measure_step(config, model, embeddings, args.steps, **kwargs)
    shipped = shipped or result['steps_per_s']
    print(f'| {name} | {result["compile_s"]:.1f} | {result["steps_per_s"]:.2f} | '
          f'{result["steps_per_s"] / shipped:.2f}x | {result["planned_gib"]:.3f} |', flush=True)

  report('as shipped', config)
  with two_unet_calls():
    report('two UNet calls', config)
  report('no donation', config, donate=False)
  if args.dtype == 'bfloat16':
    model32, width, tokens, _ = common.load_model(args.model, jnp.float32)
    report('float32 UNet/VAE', config, model=model32,
           embeddings=common.random_text(4, tokens, width, jnp.float32))
  report('remat_chunks 16', common.from_flags(args, **{'render.remat_chunks': 16})[0])


if __name__ == '__main__':
  main()
