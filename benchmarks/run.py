"""Every benchmark in one run: step rates, the step's breakdown, JAX vs PyTorch, and memory.

  python benchmarks/run.py --quick     # the CPU-sized part, a few minutes on 2 CPU cores
  python benchmarks/run.py             # also the paper config with SD-2.1-base shapes (GPU/TPU)

Prints markdown tables, then as its last line `jax_vs_torch_step_speedup=<ratio>`: the JAX step's
rate over the PyTorch step's (benchmarks/torch_step.py: the same step written plainly in PyTorch
with diffusers' torch UNet and VAE) on identical configs and tiny models, timed in this run on
this machine.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import breakdown
import common
import memory
import step as step_bench
from dreamfusion_jax import host_memory
from dreamfusion_jax import train


def step_rows(cases, num_steps):
  """Prints the step table for (config name, overrides, model name, dtype) cases."""
  print('## step\n')
  print(step_bench.HEADER)
  for config_name, overrides, model, dtype in cases:
    config = common.get_config(config_name, overrides)
    diffusion, width, tokens, _ = common.load_model(model, jnp.dtype(dtype))
    text = common.random_text(4, tokens, width, diffusion.dtype)
    result = step_bench.measure_step(config, diffusion, text, num_steps)
    print(step_bench.row(f'{model} ({config_name})', config, diffusion, dtype, result),
          flush=True)


def vs_torch(config_name, overrides, model, num_steps, rounds=3):
  """The JAX and the PyTorch step on the same config and model, timed in turns; prints a table.

  Each of `rounds` rounds times num_steps JAX steps, then num_steps PyTorch steps with its
  default threads (every core), then with one thread (a per-core comparison); the medians are
  reported, so a slow spell of a shared machine does not land on one side only.

  JAX runs as shipped (on a CPU, render.parallel_chunks = 0 renders the rays as 4 independent
  groups that XLA runs concurrently) and with render.parallel_chunks = 1 (one batch of rays, as
  before that option), so the table shows what the option gains.

  Returns:
    The ratio of the median JAX rate (as shipped) to the median PyTorch rate (default threads).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch_step  # pylint: disable=g-import-not-at-top
  config = common.get_config(config_name, overrides)
  diffusion, width, tokens, (unet, vae) = common.load_model(model, jnp.float32)
  text = common.random_text(4, tokens, width, diffusion.dtype)
  jax_steps = {}
  for key, groups in (('jax', None), ('jax1', 1)):  # As shipped, and one batch of rays.
    variant = common.get_config(config_name, dict(
        overrides, **({} if groups is None else {'render.parallel_chunks': groups})))
    net, bg = train.make_nerf(variant), train.make_background(variant)
    optimizer = train.make_optimizer(variant)
    jax_steps[key] = (train.make_dreamfusion_step(variant, net, bg, optimizer, donate=False),
                      train.init_dreamfusion_state(variant, net, bg, optimizer))
  torch_model = torch_step.TorchDreamFusion(torch_step.make_spec(config, unet, vae, width, tokens))
  threads = torch.get_num_threads()
  rates = {'jax': [], 'jax1': [], 'torch': [], 'torch1': []}
  for _ in range(rounds):
    for key, (step, state) in jax_steps.items():
      rates[key].append(1.0 / common.time_steps(step, state, (diffusion, text), num_steps)[1])
    for name, count in (('torch', threads), ('torch1', 1)):
      torch.set_num_threads(count)
      torch_model.step()
      start = time.perf_counter()
      for _ in range(num_steps):
        torch_model.step()
      rates[name].append(num_steps / (time.perf_counter() - start))
  torch.set_num_threads(threads)
  jax_rate, one_batch_rate, torch_rate, single_rate = (float(np.median(rates[k])) for k in rates)
  print(f'\n## vs PyTorch (float32, same config, same tiny UNet/VAE configs, same machine; '
        f'median of {rounds} rounds of {num_steps} steps)\n')
  print('| step | threads | steps/s (rounds) | JAX / this |\n| --- | --- | --- | --- |')
  for label, count, key, rate in ((f'PyTorch {torch.__version__}', threads, 'torch', torch_rate),
                                   (f'PyTorch {torch.__version__}', 1, 'torch1', single_rate)):
    rounds_text = ', '.join(f'{r:.2f}' for r in rates[key])
    print(f'| {label} | {count} | {rate:.2f} ({rounds_text}) | {jax_rate / rate:.2f} |')
  backend = jax.default_backend().upper()
  for label, key, rate in ((f'parallel_chunks {train.parallel_chunks(config)}', 'jax', jax_rate),
                           ('parallel_chunks 1', 'jax1', one_batch_rate)):
    print(f'| JAX {jax.__version__} (jit, {label}) | XLA:{backend} | {rate:.2f} '
          f'({", ".join(f"{r:.2f}" for r in rates[key])}) | {rate / torch_rate:.2f} vs '
          f'{threads} threads |')
  return jax_rate / torch_rate


def main():
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='only the CPU-sized benchmarks')
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()
  print(f'device: {common.device_name()}\n')
  cpu = dict(common.CPU_SIZE)
  cases = [('dreamfusion', cpu, 'tiny-latent', 'float32'),
           ('pixel', cpu, 'tiny-pixel', 'float32'),
           ('toy', {}, 'toy', 'float32')]
  if not args.quick:
    cases += [('dreamfusion', {'batch_size': 1}, 'sd21', 'bfloat16'),
              ('dreamfusion', {}, 'sd21', 'bfloat16')]
  step_rows(cases, args.steps)

  print('\n## breakdown (CPU-sized paper step, tiny latent model, float32)\n')
  config = common.get_config('dreamfusion', cpu)
  diffusion, width, tokens, _ = common.load_model('tiny-latent', jnp.float32)
  text = common.random_text(4, tokens, width, diffusion.dtype)
  print(breakdown.table(breakdown.measure(config, diffusion, text, args.steps)))
  if not args.quick:
    print('\n## breakdown (paper config, SD-2.1-base shapes, bfloat16)\n')
    config = common.get_config('dreamfusion')
    diffusion, width, tokens, _ = common.load_model('sd21', jnp.bfloat16)
    text = common.random_text(4, tokens, width, diffusion.dtype)
    print(breakdown.table(breakdown.measure(config, diffusion, text, args.steps)))

  print('\n## memory (XLA plan of the step)\n')
  print('| model | views/step | remat_chunks | planned GiB |\n| --- | --- | --- | --- |')
  sizes = [('tiny-latent', cpu, jnp.float32)]
  if not args.quick:
    sizes.append(('sd21', {}, jnp.bfloat16))
  for model, overrides, dtype in sizes:
    diffusion, width, tokens, _ = common.load_model(model, dtype)
    text = common.random_text(4, tokens, width, diffusion.dtype)
    for batch in (1, 4):
      for chunks in (0, 16):
        config = common.get_config('dreamfusion', dict(overrides, batch_size=batch,
                                                       **{'render.remat_chunks': chunks}))
        planned, _ = memory.planned_gib(config, diffusion, text)
        print(f'| {model} | {batch} | {chunks} | {planned:.3f} |', flush=True)

  ratio = vs_torch('dreamfusion', cpu, 'tiny-latent', max(args.steps, 20))
  print(f'jax_vs_torch_step_speedup={ratio:.2f}')


if __name__ == '__main__':
  main()
