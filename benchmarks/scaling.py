"""Steps per second of the data-parallel DreamFusion step on 1, 2, 4, 8 devices, and its all-reduce.

  python benchmarks/scaling.py                  # 8 simulated CPU devices, toy config
  python benchmarks/scaling.py --devices 1,2,4  # on a GPU/TPU host: its real devices

Two ways of spreading work, each with a fixed global size: one asset whose `--views` views per
step are split over the devices, and `--prompts` assets trained at once (one view each) with the
prompts split over the devices. On simulated CPU devices all "devices" share the host's cores,
so the figures are a sanity check of the sharded program, not a speed-up. The last table gives
the bytes of the gradient all-reduce (the NeRF and background parameters, float32) of the toy
and paper configs, for the argument on paper about real chips.
"""

import argparse
import os
import sys

if '--real_devices' not in sys.argv:  # Before JAX starts: 8 CPU devices unless told otherwise.
  os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')


import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import dreamfusion as dreamfusion_config  # pylint: disable=wrong-import-position
from configs import toy as toy_config  # pylint: disable=wrong-import-position
from dreamfusion_jax import build  # pylint: disable=wrong-import-position
from dreamfusion_jax import host_memory  # pylint: disable=wrong-import-position
from dreamfusion_jax import parallel  # pylint: disable=wrong-import-position
from dreamfusion_jax.testing import bench  # pylint: disable=wrong-import-position
from dreamfusion_jax.testing import tiny_models  # pylint: disable=wrong-import-position


def time_step(step, state, args, num_steps):
  """(compile seconds, steps per second) of a jitted step."""
  first, per_step = bench.time_steps(step, state, args, num_steps)
  return first, 1.0 / per_step


def one_asset(config, diffusion, text, n, num_steps):
  mesh = parallel.make_mesh(n)
  run = build.build(config)
  state = parallel.replicate(run.init_state(), mesh)
  step = run.make_step(mesh=mesh)
  return time_step(step, state, parallel.replicate((diffusion, text), mesh), num_steps)


def many_assets(config, diffusion, text, n, num_prompts, num_steps):
  mesh = parallel.make_mesh(n)
  run = build.build(config)
  single = run.init_state()
  stack = lambda x: np.stack([np.asarray(x)] * num_prompts)
  state = single.replace(
      step=parallel.shard_leading(stack(single.step), mesh),
      params=parallel.shard_leading(jax.tree.map(stack, single.params), mesh),
      opt_state=parallel.shard_leading(jax.tree.map(stack, single.opt_state), mesh),
      key=parallel.shard_leading(jax.random.split(single.key, num_prompts), mesh))
  texts = parallel.shard_leading(jax.tree.map(stack, text), mesh)
  step = run.make_step(mesh=mesh, vmapped=True)
  return time_step(step, state, (parallel.replicate(diffusion, mesh), texts), num_steps)


def gradient_bytes(config):
  """Parameters and bytes of the gradient every step all-reduces (float32)."""
  run = build.build(config)
  shapes = jax.eval_shape(lambda: run.init_state().params)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  return count, 4 * count


def main():
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--views', type=int, default=8, help='global views per step')
  parser.add_argument('--prompts', type=int, default=8, help='assets trained at once')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--real_devices', action='store_true',
                      help='use the host\'s devices as they are (no simulated CPU devices)')
  args = parser.parse_args()
  tiny_models.quiet()
  counts = [int(n) for n in args.devices.split(',')]
  config = toy_config.get_config()
  diffusion = build.load_diffusion(config)
  text = diffusion.encode_views(config.prompt)
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}), host cores: {os.cpu_count()}')
  print(f'\n| devices | one asset, {args.views} views/step: steps/s | compile s | '
        f'{args.prompts} assets at once: steps/s | compile s |')
  print('| --- | --- | --- | --- | --- |')
  config.batch_size = args.views
  for n in counts:
    c1, r1 = one_asset(config, diffusion, text, n, args.steps)
    many = config.copy_and_resolve_references()
    many.batch_size = 1
    c2, r2 = many_assets(many, diffusion, text, n, args.prompts, args.steps)
    print(f'| {n} | {r1:.3f} | {c1:.1f} | {r2:.3f} | {c2:.1f} |', flush=True)
  print('\n| config | trained parameters | gradient all-reduce per step |')
  print('| --- | --- | --- |')
  for name, cfg in (('toy', toy_config.get_config()),
                    ('dreamfusion (paper)', dreamfusion_config.get_config())):
    count, size = gradient_bytes(cfg)
    print(f'| {name} | {count:,} | {size / 2**20:.2f} MiB |')


if __name__ == '__main__':
  main()
