"""The command line every benchmark shares: --model, --config, --full, --batch_size, --dtype,
--perp_neg.

What the benchmarks measure with (models by name, timing, XLA cost and memory) lives in
dreamfusion_jax/testing/bench.py, where tests/benchmarks_test.py checks it. Models (random
weights unless shipped, nothing downloaded):
  tiny-latent  dreamfusion_jax/testing/tiny_models.py's two-level latent UNet + VAE (16 px
               images, 8x8 latent)
  tiny-pixel   its pixel-space UNet (16 px)
  toy          the shipped toy prior (32 px pixel space), as configs/toy.py uses it
  sd21         UNet and VAE with Stable Diffusion 2.1-base's shapes (512 px, 64x64 latent)
"""

import argparse

import jax.numpy as jnp

from dreamfusion_jax import host_memory
from dreamfusion_jax.testing import bench

# The model names and the CPU size the flags choose from (as the flags' help names them).
MODELS, CPU_SIZE = bench.MODELS, bench.CPU_SIZE


def add_flags(parser):
  """The flags every benchmark shares: --model, --config, --full, --batch_size, --dtype."""
  parser.add_argument('--model', default='tiny-latent', choices=MODELS)
  parser.add_argument('--config', default='dreamfusion', choices=tuple(bench.CONFIGS),
                      help='configs/dreamfusion.py, dreamfusion_pixel.py, toy.py, '
                      'dreamfusion_hash.py (hash) or toy_hash.py')
  parser.add_argument('--full', action='store_true',
                      help='the config as shipped (default: shrunk to common.CPU_SIZE)')
  parser.add_argument('--batch_size', type=int, default=None, help='views per step (paper: 4)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--perp_neg', action='store_true',
                      help='Perp-Neg guidance (config.perp_neg=True): 4 prompts per view')


def parse(doc, more_flags=()):
  """(args, config, diffusion, text) of a benchmark's command line.

  Args:
    doc: the script's docstring (its first line describes it).
    more_flags: (name, keyword arguments of add_argument) of the script's own flags.
  """
  host_memory.keep_freed_memory()  # As main does, before JAX's first computation.
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  add_flags(parser)
  for name, kwargs in more_flags:
    parser.add_argument(name, **kwargs)
  args = parser.parse_args()
  return (args, *from_flags(args))


def from_flags(args, **extra):
  """(config, diffusion, text embeddings) that add_flags' flags name; extra: config overrides."""
  diffusion, width, tokens, _ = bench.load_model(args.model, jnp.dtype(args.dtype))
  if getattr(args, 'perp_neg', False):
    extra = dict(extra, perp_neg=True)
  config = bench.sized_config(args.config, args.full, args.batch_size, overrides=extra)
  return config, diffusion, bench.random_text(4, tokens, width, diffusion.dtype)
