"""Steps per second of DreamFusion's training step written plainly in PyTorch, for comparison.

  python benchmarks/torch_step.py                     # CPU-sized paper step, tiny latent model
  python benchmarks/torch_step.py --model tiny-pixel  # tiny random pixel-space model
  python benchmarks/torch_step.py --steps 10 --threads 2
  python benchmarks/torch_step.py --full              # as shipped: 64 px, 64+64, 4 views
  python benchmarks/torch_step.py --full --model sd21 --dtype bfloat16 --device cuda  # on a GPU

The step (dreamfusion_jax/testing/torch_reference.py) is the one of steps.dreamfusion_step (JAX,
jitted) as a PyTorch user would write it: an nn.Module NeRF whose normals come from
torch.autograd.grad(create_graph=True), diffusers' torch UNet2DConditionModel and AutoencoderKL
built from their configs with random weights, torch.optim.Adam after clip_grad_norm_; its render
equals the JAX render for the same weights (tests/torch_step_test.py). Without --full the config
is shrunk to common.CPU_SIZE, as benchmarks/step.py does: run it with the same flags on the same
machine for the JAX row. With --device cuda every tensor, the generator of the draws and the
modules live on the GPU.
"""

import argparse
import time

import torch

from dreamfusion_jax.testing import bench
from dreamfusion_jax.testing import torch_reference


def time_torch_step(spec, num_steps, seed=0, threads=None, dtype=torch.float32, device='cpu'):
  """Times torch_reference.TorchDreamFusion.step.

  Args:
    spec: torch_reference.make_spec's dict.
    num_steps: steps timed after the first.
    seed: int seed of the weights and the draws.
    threads: torch.set_num_threads(threads) when given.
    dtype: the UNet's and VAE's dtype.
    device: where the step runs ('cpu', 'cuda').

  Returns:
    dict(first_step_s=..., steps_per_s=..., loss=...): the first step timed on its own, then
    the rate over num_steps steps and the last loss.
  """
  if threads:
    torch.set_num_threads(threads)
  model = torch_reference.TorchDreamFusion(spec, seed=seed, dtype=dtype, device=device)
  start = time.perf_counter()
  loss = model.step()
  torch_reference.synchronize(model.device)
  first_step_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_steps):
    loss = model.step()
  torch_reference.synchronize(model.device)
  steps_per_s = num_steps / (time.perf_counter() - start) if num_steps else float('nan')
  return dict(first_step_s=first_step_s, steps_per_s=steps_per_s, loss=loss)


def get_config(full=False, batch_size=None):
  """configs/dreamfusion.py, shrunk to common.CPU_SIZE unless `full` (as step.py does).

  With Adam (torch_reference.ADAM) instead of the config's Adan, which PyTorch lacks: the
  optimiser is 0.0% of the step (benchmarks/breakdown.py).
  """
  return bench.sized_config('dreamfusion', full, batch_size, overrides=torch_reference.ADAM)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='tiny-latent',
                      choices=('tiny-latent', 'tiny-pixel', 'sd21'),
                      help='sd21: random weights with Stable Diffusion 2.1-base shapes')
  parser.add_argument('--full', action='store_true', help='the config as shipped (paper size)')
  parser.add_argument('--batch_size', type=int, default=None, help='views per step (paper: 4)')
  parser.add_argument('--steps', type=int, default=10, help='steps timed after the first')
  parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help='UNet and VAE dtype (the NeRF stays float32)')
  parser.add_argument('--device', default='cpu', help="torch device ('cpu', 'cuda')")
  args = parser.parse_args()
  config = get_config(args.full, args.batch_size)
  spec = torch_reference.model_spec(config, args.model)
  result = time_torch_step(spec, args.steps, threads=args.threads,
                           dtype=getattr(torch, args.dtype), device=args.device)
  rend, net = spec['render'], spec['nerf']
  where = (torch.cuda.get_device_name(args.device) if torch.device(args.device).type == 'cuda'
           else f'{torch.get_num_threads()} threads')
  print(f'torch {torch.__version__}, {where}')
  print('| model | dtype | views/step | render | samples | MLP | first step s | steps/s |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  print(f'| {args.model} (PyTorch) | {args.dtype} | {spec["batch_size"]} | {rend["height"]} px '
        f'-> {spec["resolution"]} px | {rend["num_samples"]} | {net["width"]} x '
        f'{net["num_blocks"]} | {result["first_step_s"]:.2f} | {result["steps_per_s"]:.2f} |')


if __name__ == '__main__':
  main()
