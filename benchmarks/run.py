"""Every benchmark in one run: step rates, the step's breakdown, JAX vs PyTorch, and memory.

  python benchmarks/run.py --quick     # the CPU-sized part, a few minutes on 2 CPU cores
  python benchmarks/run.py             # also the paper config with SD-2.1-base shapes (GPU/TPU)

Prints markdown tables, then as its last line `jax_vs_torch_step_speedup=<ratio>`: the JAX step's
rate over the PyTorch step's (benchmarks/torch_step.py: the same step written plainly in PyTorch
with diffusers' torch UNet and VAE) on identical configs and tiny models, timed in this run on
this machine.
"""

import argparse

import jax.numpy as jnp

import breakdown
import common
import memory
import step as step_bench


def step_rows(cases, num_steps):
  """The step table for (config name, overrides, model name, dtype) cases; returns the rates."""
  print('## step\n')
  print(step_bench.HEADER)
  rates = {}
  for config_name, overrides, model, dtype in cases:
    config = common.get_config(config_name, overrides)
    diffusion, width, tokens, _ = common.load_model(model, jnp.dtype(dtype))
    text = common.random_text(4, tokens, width, diffusion.dtype)
    result = step_bench.measure_step(config, diffusion, text, num_steps)
    print(step_bench.row(f'{model} ({config_name})', config, diffusion, dtype, result),
          flush=True)
    rates[(config_name, model)] = result['steps_per_s']
  return rates


def vs_torch(config_name, overrides, model, jax_rate, num_steps):
  """Times the PyTorch step on the same config and model; prints a table; returns the ratio."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch_step  # pylint: disable=g-import-not-at-top
  config = common.get_config(config_name, overrides)
  _, width, tokens, (unet, vae) = common.load_model(model, jnp.float32)
  spec = torch_step.make_spec(config, unet, vae, width, tokens)
  result = torch_step.time_torch_step(spec, num_steps)
  ratio = jax_rate / result['steps_per_s']
  print('\n## vs PyTorch (float32, same config, same tiny UNet/VAE configs, same machine)\n')
  print('| step | first step s | steps/s |\n| --- | --- | --- |')
  print(f'| PyTorch {torch.__version__} | {result["first_step_s"]:.1f} | '
        f'{result["steps_per_s"]:.2f} |')
  print(f'| JAX (jit) | | {jax_rate:.2f} |')
  print(f'\nJAX / PyTorch: {ratio:.2f}x')
  return ratio


def main():
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
  rates = step_rows(cases, args.steps)

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

  ratio = vs_torch('dreamfusion', cpu, 'tiny-latent', rates[('dreamfusion', 'tiny-latent')],
                   args.steps)
  print(f'jax_vs_torch_step_speedup={ratio:.2f}')


if __name__ == '__main__':
  main()
