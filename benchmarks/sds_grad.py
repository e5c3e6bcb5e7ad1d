"""Times one jitted `Diffusion.sds_grad` call (compile separately) on this machine's device.

  python benchmarks/sds_grad.py                 # tiny latent and pixel models
  python benchmarks/sds_grad.py --sd21          # also an SD-2.1-base-shaped UNet + VAE
  python benchmarks/sds_grad.py --sd21 --dtype bfloat16
  python benchmarks/sds_grad.py --sd21 --skip_tiny --compare_dtypes   # bfloat16 against float32

Random weights (no download): the SD-2.1-base-shaped UNet (block_out_channels 320/640/1280/1280,
cross-attention 1024, linear projections) and VAE (128/256/512/512) have the real models' shapes,
so the same FLOPs (built by dreamfusion_jax/testing/bench.py); images are 512x512 (a 64x64
latent), batch 1, guidance scale 100. --compare_dtypes computes the gradient with the same
weights in float32 and rounded to bfloat16 (the UNet and VAE; the guidance combination and the
SDS residual stay float32 in both) at several noise levels and prints their cosine similarity
and relative norms, in model space and on the image.
"""

import argparse
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from dreamfusion_jax import guidance
from dreamfusion_jax import host_memory
from dreamfusion_jax.testing import bench
from dreamfusion_jax.testing import tiny_models


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


def sds_inputs(diffusion, width, tokens, seed=0):
  """(images [1, H, W, 3], text embeddings, noise) drawn from seed, float32."""
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(0.1, 0.9, (1, diffusion.resolution, diffusion.resolution, 3)),
                       jnp.float32)
  emb = guidance.TextEmbeddings(cond=jnp.asarray(rng.standard_normal((1, tokens, width))),
                                uncond=jnp.asarray(rng.standard_normal((1, tokens, width))))
  return images, emb, jnp.asarray(rng.standard_normal(diffusion.latent_shape(1)), jnp.float32)


def compare_dtypes(name, make, width, tokens, ts=(0.1, 0.5, 0.9)):
  """Prints cosine similarity and relative norms of the bfloat16 SDS gradient against float32.

  Args:
    name: the model's name in the table.
    make: dtype -> guidance.Diffusion with the same weights (rounded) in that dtype.
    width, tokens: its text embedding width and length.
    ts: noise levels, one call each (batch 1, guidance 100).
  """
  print('| model | t | image: cosine | image: norm ratio | image: rel. error | latent: cosine | '
        'latent: rel. error |\n| --- | --- | --- | --- | --- | --- | --- |')
  grads = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    diffusion = make(dtype)
    images, emb, noise = sds_inputs(diffusion, width, tokens)
    run = jax.jit(lambda d, x, emb, t: d.sds_grad(x, emb, t, noise, 100.0))
    grads[dtype] = [jax.device_get(run(diffusion, images, emb, jnp.array([t]))) for t in ts]
    del diffusion
  cosine = lambda a, b: float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
  error = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
  for t, (g32, aux32), (g16, aux16) in zip(ts, grads[jnp.float32], grads[jnp.bfloat16]):
    l32, l16 = aux32['latent_grad'], aux16['latent_grad']
    print(f'| {name} | {t} | {cosine(g16, g32):.4f} | '
          f'{np.linalg.norm(g16) / np.linalg.norm(g32):.4f} | {error(g16, g32):.4f} | '
          f'{cosine(l16, l32):.4f} | {error(l16, l32):.4f} |', flush=True)


def main():
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sd21', action='store_true', help='also time the SD-2.1-base shape')
  parser.add_argument('--skip_tiny', action='store_true', help='only the SD-2.1-base shape')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--compare_dtypes', action='store_true',
                      help='bfloat16 against float32 gradients instead of timings')
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  tiny_models.quiet()
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'{jax.device_count()} device(s)')
  if args.compare_dtypes:
    with tempfile.TemporaryDirectory() as tmp:
      if not args.skip_tiny:
        tiny_models.save_flax_model(tmp, pixel=False)
        compare_dtypes('tiny latent', lambda d: guidance.Diffusion.from_pretrained(tmp, dtype=d),
                       tiny_models.TEXT_WIDTH, tiny_models.TOKEN_LENGTH)
    if args.sd21:
      compare_dtypes('SD-2.1-base shape', bench.sd21_diffusion, bench.SD21_TEXT_WIDTH,
                     bench.SD21_TOKENS)
    return
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
    diffusion = bench.sd21_diffusion(dtype)
    time_sds('SD-2.1-base shape (UNet + VAE)', diffusion, bench.SD21_TEXT_WIDTH,
             bench.SD21_TOKENS, max(1, args.repeats // 10))


if __name__ == '__main__':
  main()
