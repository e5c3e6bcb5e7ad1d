"""Every benchmark in one run: step rates, the step's breakdown, JAX vs PyTorch, and memory.

  python benchmarks/run.py --quick     # the CPU-sized part, a few minutes on 2 CPU cores
  python benchmarks/run.py             # also the paper config with SD-2.1-base shapes (GPU/TPU)
  python benchmarks/run.py --sections vs_torch --vs_model sd21 --vs_full --vs_dtype bfloat16
                                       # JAX vs PyTorch on the paper step with SD-2.1 shapes

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

import common
import step as step_bench
from dreamfusion_jax import build
from dreamfusion_jax import host_memory
from dreamfusion_jax.testing import bench


def step_rows(cases, num_steps):
  """Prints the step table for (config name, overrides, model name, dtype) cases."""
  print('## step\n')
  print(step_bench.HEADER)
  for config_name, overrides, model, dtype in cases:
    config = bench.get_config(config_name, overrides)
    diffusion, width, tokens, _ = bench.load_model(model, jnp.dtype(dtype))
    text = bench.random_text(4, tokens, width, diffusion.dtype)
    result = bench.measure_step(config, diffusion, text, num_steps)
    print(step_bench.row(f'{model} ({config_name})', config, diffusion, dtype, result),
          flush=True)


def vs_torch(config_name, overrides, model, num_steps, rounds=3, dtype='float32'):
  """The JAX and the PyTorch step on the same config and model, timed in turns; prints a table.

  Each of `rounds` rounds times num_steps JAX steps, then num_steps PyTorch steps; the medians
  are reported, so a slow spell of a shared machine does not land on one side only.

  On a CPU, PyTorch runs with its default threads (every core) and with one thread (a per-core
  comparison), and JAX as shipped (render.parallel_chunks = 0 renders the rays as 4 independent
  groups that XLA runs concurrently) and with render.parallel_chunks = 1 (one batch of rays), so
  the table shows what the option gains. When JAX runs on a GPU and PyTorch sees one, PyTorch
  runs on that GPU (benchmarks/torch_step.py --device cuda) and each side once per round.

  Args:
    config_name, overrides: bench.get_config's arguments.
    model: 'tiny-latent', 'tiny-pixel' or 'sd21' (random weights of those shapes on both sides).
    num_steps: steps per round and side, after one untimed step.
    rounds: rounds of both sides.
    dtype: the UNet's and VAE's dtype on both sides (the NeRF is float32).

  Returns:
    The ratio of the median JAX rate (as shipped) to the median PyTorch rate (default threads).
  """
  import torch  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax.testing import torch_reference  # pylint: disable=g-import-not-at-top
  overrides = dict(overrides, **torch_reference.ADAM)  # Both sides: PyTorch has no Adan.
  config = bench.get_config(config_name, overrides)
  diffusion, width, tokens, _ = bench.load_model(model, jnp.dtype(dtype))
  text = bench.random_text(4, tokens, width, diffusion.dtype)
  on_gpu = jax.default_backend() == 'gpu' and torch.cuda.is_available()
  jax_variants = [('jax', None)] if on_gpu else [('jax', None), ('jax1', 1)]
  jax_steps = {}
  for key, groups in jax_variants:  # As shipped, and (on a CPU) one batch of rays.
    variant = bench.get_config(config_name, dict(
        overrides, **({} if groups is None else {'render.parallel_chunks': groups})))
    run = build.build(variant)
    jax_steps[key] = (run.make_step(donate=False), run.init_state())
  device = 'cuda' if on_gpu else 'cpu'
  torch_model = torch_reference.TorchDreamFusion(torch_reference.model_spec(config, model),
                                                 dtype=getattr(torch, dtype), device=device)
  threads = torch.get_num_threads()
  torch_variants = [('torch', threads)] if on_gpu else [('torch', threads), ('torch1', 1)]
  rates = {key: [] for key, _ in jax_variants + torch_variants}
  for _ in range(rounds):
    for key, (step, state) in jax_steps.items():
      rates[key].append(1.0 / bench.time_steps(step, state, (diffusion, text), num_steps)[1])
    for name, count in torch_variants:
      torch.set_num_threads(count)
      torch_model.step()
      torch_reference.synchronize(device)
      start = time.perf_counter()
      for _ in range(num_steps):
        torch_model.step()
      torch_reference.synchronize(device)
      rates[name].append(num_steps / (time.perf_counter() - start))
  torch.set_num_threads(threads)
  median = {key: float(np.median(values)) for key, values in rates.items()}
  print(f'\n## vs PyTorch ({model}, {dtype} UNet/VAE, float32 NeRF, same config and model '
        f'shapes, same machine; median of {rounds} rounds of {num_steps} steps)\n')
  print('| step | runs on | steps/s (rounds) | JAX / this |\n| --- | --- | --- | --- |')
  for key, count in torch_variants:
    where = torch.cuda.get_device_name() if on_gpu else f'{count} thread(s)'
    rounds_text = ', '.join(f'{r:.2f}' for r in rates[key])
    print(f'| PyTorch {torch.__version__} (eager) | {where} | {median[key]:.2f} ({rounds_text}) '
          f'| {median["jax"] / median[key]:.2f} |')
  backend = jax.default_backend().upper()
  for key, groups in jax_variants:
    label = f'parallel_chunks {build.parallel_chunks(config) if groups is None else groups}'
    print(f'| JAX {jax.__version__} (jit, {label}) | XLA:{backend} | {median[key]:.2f} '
          f'({", ".join(f"{r:.2f}" for r in rates[key])}) | {median[key] / median["torch"]:.2f} '
          f'vs PyTorch{"" if on_gpu else f" {threads} threads"} |')
  return median['jax'] / median['torch']


SECTIONS = ('step', 'breakdown', 'memory', 'vs_torch')


def main():
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='only the CPU-sized benchmarks')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--sections', default=','.join(SECTIONS),
                      help=f'comma-separated subset of {",".join(SECTIONS)}')
  parser.add_argument('--vs_model', default='tiny-latent', choices=common.MODELS[:2] + ('sd21',),
                      help='the models of the JAX vs PyTorch comparison')
  parser.add_argument('--vs_full', action='store_true',
                      help='compare on the config as shipped (default: common.CPU_SIZE)')
  parser.add_argument('--vs_dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--rounds', type=int, default=3, help='rounds of the comparison')
  args = parser.parse_args()
  sections = args.sections.split(',')
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    parser.error(f'unknown --sections {unknown}: choose from {",".join(SECTIONS)}')
  print(f'device: {bench.device_name()}\n')
  cpu = dict(common.CPU_SIZE)
  if 'step' in sections:
    cases = [('dreamfusion', cpu, 'tiny-latent', 'float32'),
             ('pixel', cpu, 'tiny-pixel', 'float32'),
             ('toy', {}, 'toy', 'float32')]
    if not args.quick:
      cases += [('dreamfusion', {'batch_size': 1}, 'sd21', 'bfloat16'),
                ('dreamfusion', {}, 'sd21', 'bfloat16')]
    step_rows(cases, args.steps)

  if 'breakdown' in sections:
    print('\n## breakdown (CPU-sized paper step, tiny latent model, float32)\n')
    config = bench.get_config('dreamfusion', cpu)
    diffusion, width, tokens, _ = bench.load_model('tiny-latent', jnp.float32)
    text = bench.random_text(4, tokens, width, diffusion.dtype)
    print(bench.breakdown_table(bench.breakdown(config, diffusion, text, args.steps)))
    if not args.quick:
      print('\n## breakdown (paper config, SD-2.1-base shapes, bfloat16)\n')
      config = bench.get_config('dreamfusion')
      diffusion, width, tokens, _ = bench.load_model('sd21', jnp.bfloat16)
      text = bench.random_text(4, tokens, width, diffusion.dtype)
      print(bench.breakdown_table(bench.breakdown(config, diffusion, text, args.steps)))

  if 'memory' in sections:
    print('\n## memory (XLA plan of the step)\n')
    print('| model | views/step | remat_chunks | planned GiB |\n| --- | --- | --- | --- |')
    sizes = [('tiny-latent', cpu, jnp.float32)]
    if not args.quick:
      sizes.append(('sd21', {}, jnp.bfloat16))
    for model, overrides, dtype in sizes:
      diffusion, width, tokens, _ = bench.load_model(model, dtype)
      text = bench.random_text(4, tokens, width, diffusion.dtype)
      for batch in (1, 4):
        for chunks in (0, 16):
          config = bench.get_config('dreamfusion', dict(overrides, batch_size=batch,
                                                         **{'render.remat_chunks': chunks}))
          planned, _ = bench.planned_gib(config, diffusion, text)
          print(f'| {model} | {batch} | {chunks} | {planned:.3f} |', flush=True)

  if 'vs_torch' in sections:
    ratio = vs_torch('dreamfusion', {} if args.vs_full else cpu, args.vs_model,
                     max(args.steps, 20), rounds=args.rounds, dtype=args.vs_dtype)
    print(f'jax_vs_torch_step_speedup={ratio:.2f}')


if __name__ == '__main__':
  main()
