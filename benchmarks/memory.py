"""Memory of the DreamFusion step per number of views, and the most views that fit a budget.

  python benchmarks/memory.py                                   # CPU-sized step, tiny latent
  python benchmarks/memory.py --model sd21 --full --dtype bfloat16 --budget_gib 16   # Colab T4

For each batch size (1, 2, 4, ... up to --max_batch) the step is compiled, not run, and XLA's
buffer plan is read (arguments + outputs + temporaries - donated buffers): on a GPU or TPU this is
what the step allocates; on CPU it is XLA's CPU plan, a guide only. With --run, each step also runs
once and the device's peak memory in use is printed where the backend reports it (GPU, TPU).
The last line names the largest batch whose planned memory fits --budget_gib.
"""

import argparse

import jax.numpy as jnp

import common
from dreamfusion_jax import host_memory
from dreamfusion_jax.testing import bench


def main():
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_flags(parser)  # --batch_size is ignored: the batch is swept.
  parser.add_argument('--max_batch', type=int, default=8)
  parser.add_argument('--budget_gib', type=float, default=16.0)
  parser.add_argument('--run', action='store_true', help='also run each step once')
  parser.add_argument('--remat_chunks', type=int, default=0,
                      help='config.render.remat_chunks (0: off)')
  args = parser.parse_args()
  diffusion, width, tokens, _ = bench.load_model(args.model, jnp.dtype(args.dtype))
  text = bench.random_text(4, tokens, width, diffusion.dtype)
  print(f'device: {bench.device_name()}; model {args.model} ({args.dtype}), config {args.config}'
        f'{" as shipped" if args.full else " at CPU size"}, remat_chunks {args.remat_chunks}'
        f'{", Perp-Neg" if args.perp_neg else ""}')
  print('| views/step | planned GiB | peak GiB |\n| --- | --- | --- |')
  fits, batch = 0, 1
  while batch <= args.max_batch:
    config = bench.sized_config(args.config, args.full, overrides={
        'batch_size': batch, 'render.remat_chunks': args.remat_chunks,
        **({'perp_neg': True} if args.perp_neg else {})})
    planned, peak = bench.planned_gib(config, diffusion, text, run=args.run)
    print(f'| {batch} | {planned:.2f} | {peak:.2f} |', flush=True)
    if planned <= args.budget_gib:
      fits = batch
    batch *= 2
  print(f'largest batch within {args.budget_gib:g} GiB: {fits or "none"} view(s) per step')


if __name__ == '__main__':
  main()
