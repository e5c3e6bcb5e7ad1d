"""What the benchmark scripts share: configs and models by name, timing, XLA cost and memory.

Models (random weights unless shipped, nothing downloaded):
  tiny-latent  tests/tiny_models.py's two-level latent UNet + VAE (16 px images, 8x8 latent)
  tiny-pixel   its pixel-space UNet (16 px)
  toy          the shipped toy prior (32 px pixel space), as configs/toy.py uses it
  sd21         UNet and VAE with Stable Diffusion 2.1-base's shapes (512 px, 64x64 latent)
"""

import argparse
import json
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
from configs import dreamfusion_pixel as pixel_config  # pylint: disable=wrong-import-position
from configs import toy as toy_config  # pylint: disable=wrong-import-position
from dreamfusion_jax import guidance  # pylint: disable=wrong-import-position
from dreamfusion_jax import host_memory  # pylint: disable=wrong-import-position
import tiny_models  # pylint: disable=wrong-import-position

MODELS = ('tiny-latent', 'tiny-pixel', 'toy', 'sd21')
# A CPU-sized DreamFusion step: the paper's losses, shading, hierarchical sampling and SDS
# through the VAE, at a render size, sample count and MLP that run in a fraction of a second.
CPU_SIZE = {'render.height': 32, 'render.width': 32, 'render.num_samples': (32, 32),
            'nerf.width': 64, 'nerf.num_blocks': 2, 'batch_size': 1}


def get_config(name, overrides=None):
  """configs/<dreamfusion|dreamfusion_pixel|toy>.py with dotted-key overrides."""
  module = {'dreamfusion': dreamfusion_config, 'pixel': pixel_config, 'toy': toy_config}[name]
  config = module.get_config()
  config.update_from_flattened_dict(dict(overrides or {}))
  return config


def add_flags(parser):
  """The flags every benchmark shares: --model, --config, --full, --batch_size, --dtype."""
  parser.add_argument('--model', default='tiny-latent', choices=MODELS)
  parser.add_argument('--config', default='dreamfusion', choices=('dreamfusion', 'pixel', 'toy'))
  parser.add_argument('--full', action='store_true',
                      help='the config as shipped (default: shrunk to common.CPU_SIZE)')
  parser.add_argument('--batch_size', type=int, default=None, help='views per step (paper: 4)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))


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
  overrides = {} if args.full or args.config == 'toy' else dict(CPU_SIZE)
  if args.batch_size:
    overrides['batch_size'] = args.batch_size
  overrides.update(extra)
  diffusion, width, tokens, _ = load_model(args.model, jnp.dtype(args.dtype))
  return (get_config(args.config, overrides), diffusion,
          random_text(4, tokens, width, diffusion.dtype))


def load_model(name, dtype):
  """(guidance.Diffusion, text width, text length, the diffusers configs (unet, vae or None))."""
  tiny_models.quiet()
  if name == 'sd21':
    import sds_grad  # pylint: disable=g-import-not-at-top
    diffusion, width, tokens = sds_grad.sd21_diffusion(dtype)
    return diffusion, width, tokens, (sds_grad.SD21_UNET, sds_grad.SD21_VAE)
  with on_host():  # Building and loading run many small eager ops (see on_host).
    diffusion, *rest = _load_saved_model(name, dtype)
  return (jax.device_put(diffusion, jax.local_devices()[0]), *rest)


def _load_saved_model(name, dtype):
  """load_model's work for the toy prior and the tiny models (saved, then loaded)."""
  if name == 'toy':
    from dreamfusion_jax import toy  # pylint: disable=g-import-not-at-top
    diffusion = guidance.Diffusion.from_pretrained(str(toy.PRIOR_DIR), dtype=dtype)
    width = diffusion.unet.cross_attention_dim
    tokens = diffusion.text.encoder.config.max_position_embeddings
    unet = json.loads((toy.PRIOR_DIR / 'unet' / 'config.json').read_text())
    unet = {k: v for k, v in unet.items() if not k.startswith('_') and k not in _FLAX_ONLY}
    return diffusion, width, tokens, (unet, None)
  pixel = name == 'tiny-pixel'
  with tempfile.TemporaryDirectory() as folder:
    tiny_models.save_flax_model(folder, pixel=pixel)
    diffusion = guidance.Diffusion.from_pretrained(folder, dtype=dtype)
  vae = None if pixel else tiny_models.vae_config()
  return (diffusion, tiny_models.TEXT_WIDTH, tiny_models.TOKEN_LENGTH,
          (tiny_models.unet_config(pixel), vae))


_FLAX_ONLY = ('use_memory_efficient_attention', 'split_head_dim')


def random_text(batch, tokens, width, dtype, seed=0):
  """TextEmbeddings [batch, tokens, width] of random values (the step only reads their shape)."""
  rng = np.random.default_rng(seed)
  draw = lambda: jax.device_put(rng.standard_normal((batch, tokens, width)).astype(dtype))
  return guidance.TextEmbeddings(cond=draw(), uncond=draw())  # No compile (jnp.asarray has one).


def time_calls(fn, args, repeats):
  """(first call seconds, seconds per later call) of fn(*args), waiting for every result."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return first, (time.perf_counter() - start) / repeats


_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, seconds, **_: _COMPILES.append(event)
    if event == '/jax/core/compile/backend_compile_duration' else None)


def time_steps(step, state, args, repeats):
  """(first call seconds, seconds per step) of a jitted step whose state is threaded through.

  Raises AssertionError if any step after the first compiled anything (shapes must be static).
  """
  start = time.perf_counter()
  state, metrics = step(state, *args)
  jax.block_until_ready(state)
  first = time.perf_counter() - start
  compiles = len(_COMPILES)
  start = time.perf_counter()
  for _ in range(repeats):
    state, metrics = step(state, *args)
  jax.block_until_ready((state, metrics))
  assert len(_COMPILES) == compiles, f'{len(_COMPILES) - compiles} compile(s) after the first step'
  assert np.isfinite(float(metrics['loss'])), metrics
  return first, (time.perf_counter() - start) / repeats


def compiled(fn, args):
  """The XLA executable of the jitted fn for these arguments (compiled, not run)."""
  return fn.lower(*args).compile()


def flops(executable):
  """XLA's cost-analysis FLOP count of one call (0.0 where the backend reports none)."""
  cost = executable.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def planned_bytes(executable):
  """XLA's buffer plan for one call: arguments + outputs + temporaries - donated aliases."""
  mem = executable.memory_analysis()
  if mem is None:
    return float('nan')
  return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes)


def on_host():
  """Context for small eager setup work: on the CPU, where XLA compiles each op in milliseconds.

  Every eager op is its own compiled program; on a GPU each such compile has a fixed cost (seconds
  on the lent H200 of benchmarks/NOTES.md), so a few dozen setup ops can outlast the step's own
  compile. Arrays made here are uncommitted: jitted code called outside runs on the default
  device and moves them there.
  """
  return jax.default_device(jax.devices('cpu')[0])


def device_name():
  device = jax.local_devices()[0]
  return f'{device.device_kind} ({jax.default_backend()}, {jax.device_count()} device(s))'
