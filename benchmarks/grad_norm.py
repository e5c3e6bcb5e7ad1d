"""The global gradient norm of the DreamFusion step before clipping, per step, against the clip.

  python benchmarks/grad_norm.py                                 # CPU-sized paper step, tiny latent
  python benchmarks/grad_norm.py --model sd21 --full --dtype bfloat16 --batch_size 1 \
      --remat_chunks 16 --steps 3                                # SD-2.1 shapes, one view

Runs --steps steps of the jitted train step (random weights of the model's shapes, random text)
and prints each step's gradient norm, t and SDS loss, then the median and the share of steps above
config.optim.grad_clip: what the clip does to the step. A run prints the same for its own steps at
its end and writes them to metrics.json.
"""

import numpy as np

import common
from dreamfusion_jax import build


def main():
  args, config, diffusion, text = common.parse(__doc__, [
      ('--steps', dict(type=int, default=5)),
      ('--remat_chunks', dict(type=int, default=0, help='config.render.remat_chunks'))])
  config.render.remat_chunks = args.remat_chunks
  run = build.build(config)
  step, state = run.make_step(), run.init_state()
  print(f'model {args.model} ({args.dtype}), config {args.config}'
        f'{" as shipped" if args.full else " at CPU size"}, {config.batch_size} view(s) per step, '
        f'guidance {config.guidance_scale}, optimiser {config.optim.get("name", "adam")}, '
        f'grad_clip {config.optim.grad_clip}')
  print('| step | grad norm | t | sds |\n| --- | --- | --- | --- |')
  norms = []
  for i in range(args.steps):
    state, metrics = step(state, diffusion, text)
    norms.append(float(metrics['grad_norm']))
    print(f'| {i + 1} | {norms[-1]:.4g} | {float(metrics["t"]):.3f} | '
          f'{float(metrics["sds"]):.4g} |', flush=True)
  clip = config.optim.grad_clip
  share = np.mean([n > clip for n in norms]) if clip > 0 else 0.0
  print(f'median grad norm {np.median(norms):.4g}; {100 * share:.0f}% of {len(norms)} steps above '
        f'grad_clip {clip}')


if __name__ == '__main__':
  main()
