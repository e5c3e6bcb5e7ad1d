"""Steps per second of DreamFusion's jitted train step (paper config), compile timed separately.

  python benchmarks/step.py                      # tiny random latent model (CPU-sized)
  python benchmarks/step.py --sd21               # SD-2.1-base-shaped UNet + VAE, random weights
  python benchmarks/step.py --sd21 --batch_size 1 --steps 100

The paper config (configs/dreamfusion.py: 64x64 renders resized to 512, 64+64 samples, batch 4,
bf16 UNet and VAE, float32 NeRF) with random weights of the real shapes: the same FLOPs as Stable
Diffusion 2.1-base, no download.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'benchmarks'), str(ROOT / 'tests')]

from configs import dreamfusion as dreamfusion_config  # pylint: disable=wrong-import-position
from dreamfusion_jax import guidance  # pylint: disable=wrong-import-position
from dreamfusion_jax import train  # pylint: disable=wrong-import-position
import sds_grad  # pylint: disable=wrong-import-position
import tiny_models  # pylint: disable=wrong-import-position


def time_steps(config, diffusion, width, tokens, num_steps):
  """(compile seconds, steps per second) of the jitted DreamFusion step."""
  rng = np.random.default_rng(0)
  text = guidance.TextEmbeddings(
      cond=jnp.asarray(rng.standard_normal((4, tokens, width)), diffusion.dtype),
      uncond=jnp.asarray(rng.standard_normal((4, tokens, width)), diffusion.dtype))
  net, bg = train.make_nerf(config), train.make_background(config)
  optimizer = train.make_optimizer(config)
  state = train.init_dreamfusion_state(config, net, bg, optimizer)
  step = train.make_dreamfusion_step(config, net, bg, optimizer)
  start = time.perf_counter()
  state, metrics = step(state, diffusion, text)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, diffusion, text)
  jax.block_until_ready((state, metrics))
  rate = num_steps / (time.perf_counter() - start)
  assert np.isfinite(float(metrics['loss']))
  return compile_s, rate


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sd21', action='store_true', help='SD-2.1-base-shaped model')
  parser.add_argument('--batch_size', type=int, default=None, help='views per step (paper: 4)')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--dtype', default='bfloat16', choices=['float32', 'bfloat16'])
  args = parser.parse_args()
  tiny_models.quiet()
  config = dreamfusion_config.get_config()
  if args.batch_size:
    config.batch_size = args.batch_size
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()})')
  with tempfile.TemporaryDirectory() as tmp:
    if args.sd21:
      diffusion, width, tokens = sds_grad.sd21_diffusion(jnp.dtype(args.dtype))
      name = 'SD-2.1-base shape'
    else:
      tiny_models.save_flax_model(tmp, pixel=False)
      diffusion = guidance.Diffusion.from_pretrained(tmp, dtype=jnp.dtype(args.dtype))
      width, tokens, name = tiny_models.TEXT_WIDTH, tiny_models.TOKEN_LENGTH, 'tiny latent'
    compile_s, rate = time_steps(config, diffusion, width, tokens, args.steps)
  print('| model | dtype | views/step | render | samples | compile s | steps/s |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  print(f'| {name} | {args.dtype} | {config.batch_size} | {config.render.height}px -> '
        f'{diffusion.resolution}px | {tuple(config.render.num_samples)} | {compile_s:.1f} | '
        f'{rate:.2f} |')


if __name__ == '__main__':
  main()
