"""Times one jitted `Diffusion.sds_grad` call (compile separately) on this machine's device.

  python benchmarks/sds_grad.py                 # tiny latent and pixel models
  python benchmarks/sds_grad.py --sd21          # also an SD-2.1-base-shaped UNet + VAE
  python benchmarks/sds_grad.py --sd21 --dtype bfloat16

Random weights (no download): the SD-2.1-base-shaped UNet (block_out_channels 320/640/1280/1280,
cross-attention 1024, linear projections) and VAE (128/256/512/512) have the real models' shapes,
so the same FLOPs; images are 512x512 (a 64x64 latent), batch 1, guidance scale 100.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tests'))

from dreamfusion_jax import guidance  # pylint: disable=g-import-not-at-top,wrong-import-position
from dreamfusion_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position
import tiny_models  # pylint: disable=g-import-not-at-top,wrong-import-position

SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024, use_linear_projection=True,
    down_block_types=('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',),
    up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
    layers_per_block=2, sample_size=512, scaling_factor=0.18215)


def random_params(module, dtype, seed):
  """Random normal parameters with the module's shapes, without running its initialisers.

  Drawn by numpy on the host: nothing is compiled. (As one jitted program, the ~700 draws of the
  SD-2.1 UNet took 2 min 11 s to compile on a lent H200; as eager ops, one compile per shape;
  jnp.asarray also compiles a program per shape, jax.device_put does not.)
  """
  shapes = jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))
  leaves, treedef = jax.tree.flatten(shapes)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [
      jax.device_put((0.02 * rng.standard_normal(s.shape, np.float32)).astype(jnp.dtype(dtype)))
      for s in leaves])


def sd21_diffusion(dtype):
  import diffusers  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax import models  # pylint: disable=g-import-not-at-top
  unet = diffusers.FlaxUNet2DConditionModel.from_config(SD21_UNET, dtype=dtype)
  vae = diffusers.FlaxAutoencoderKL.from_config(SD21_VAE, dtype=dtype)
  schedule = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule='scaled_linear')
  return guidance.Diffusion(
      unet_params=random_params(unet, dtype, 0), vae_params=random_params(vae, dtype, 1),
      alphas_cumprod=jax.device_put(models.alphas_cumprod(schedule)), unet=unet, vae=vae,
      text=None, scaling_factor=0.18215, resolution=512), 1024, 77


def time_sds(name, diffusion, width, tokens, repeats):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0.1, 0.9, (1, diffusion.resolution, diffusion.resolution, 3)),
                       jnp.float32)
  emb = guidance.TextEmbeddings(
      cond=jnp.asarray(rng.standard_normal((1, tokens, width)), diffusion.dtype),
      uncond=jnp.asarray(rng.standard_normal((1, tokens, width)), diffusion.dtype))
  noise = jnp.asarray(rng.standard_normal(diffusion.latent_shape(1)), jnp.float32)
  t = jnp.array([0.5])
  run = jax.jit(lambda d, x: d.sds_grad(x, emb, t, noise, 100.0)[0])
  start = time.perf_counter()
  jax.block_until_ready(run(diffusion, images))
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(run(diffusion, images))
  per_call = (time.perf_counter() - start) / repeats
  print(f'| {name} | {jnp.dtype(diffusion.dtype).name} | {diffusion.resolution} | '
        f'{first - per_call:.1f} | {per_call * 1000:.1f} |', flush=True)


def main():
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sd21', action='store_true', help='also time the SD-2.1-base shape')
  parser.add_argument('--skip_tiny', action='store_true', help='only the SD-2.1-base shape')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  tiny_models.quiet()
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'{jax.device_count()} device(s)')
  print('| model | dtype | image px | compile s | sds_grad ms |')
  print('| --- | --- | --- | --- | --- |')
  with tempfile.TemporaryDirectory() as tmp:
    for pixel in () if args.skip_tiny else (False, True):
      folder = pathlib.Path(tmp) / ('pixel' if pixel else 'latent')
      tiny_models.save_flax_model(folder, pixel=pixel)
      diffusion = guidance.Diffusion.from_pretrained(folder, dtype=dtype)
      time_sds('tiny pixel' if pixel else 'tiny latent', diffusion, tiny_models.TEXT_WIDTH,
               tiny_models.TOKEN_LENGTH, args.repeats)
  if args.sd21:
    diffusion, width, tokens = sd21_diffusion(dtype)
    time_sds('SD-2.1-base shape (UNet + VAE)', diffusion, width, tokens,
             max(1, args.repeats // 10))


if __name__ == '__main__':
  main()
