"""What the benchmarks measure, importable by their tests: models by name, timing, XLA cost, memory.

benchmarks/*.py are the command lines around these functions; tests/benchmarks_test.py checks
on a tiny step that they measure what they say.

Models (random weights unless shipped, nothing downloaded):
  tiny-latent  tiny_models' two-level latent UNet + VAE (16 px images, 8x8 latent)
  tiny-pixel   its pixel-space UNet (16 px)
  toy          the shipped toy prior (32 px pixel space), as configs/toy.py uses it
  sd21         UNet and VAE with Stable Diffusion 2.1-base's shapes (512 px, 64x64 latent)
"""

import contextlib
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import dreamfusion as dreamfusion_config
from configs import dreamfusion_hash as hash_config
from configs import dreamfusion_pixel as pixel_config
from configs import toy as toy_config
from configs import toy_hash as toy_hash_config
from dreamfusion_jax import build
from dreamfusion_jax import camera
from dreamfusion_jax import config_checks
from dreamfusion_jax import guidance
from dreamfusion_jax import losses
from dreamfusion_jax import memory
from dreamfusion_jax import parallel
from dreamfusion_jax import shading
from dreamfusion_jax import steps
from dreamfusion_jax.testing import tiny_models

MODELS = ('tiny-latent', 'tiny-pixel', 'toy', 'sd21')
# A CPU-sized DreamFusion step: the paper's losses, shading, hierarchical sampling and SDS
# through the VAE, at a render size, sample count and MLP that run in a fraction of a second.
# The configs a benchmark's --config names.
CONFIGS = {'dreamfusion': dreamfusion_config, 'pixel': pixel_config, 'toy': toy_config,
           'hash': hash_config, 'toy_hash': toy_hash_config}

CPU_SIZE = {'render.height': 32, 'render.width': 32, 'render.num_samples': (32, 32),
            'nerf.width': 64, 'nerf.num_blocks': 2, 'batch_size': 1}

# Stable Diffusion 2.1-base's UNet and VAE (the `sd21` model: these shapes, random weights).
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024, use_linear_projection=True,
    down_block_types=('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',),
    up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
    layers_per_block=2, sample_size=512, scaling_factor=0.18215)
SD21_TEXT_WIDTH, SD21_TOKENS = 1024, 77


# Configs and models by name.


def get_config(name, overrides=None):
  """configs/<name>.py (CONFIGS) with dotted-key overrides."""
  module = CONFIGS[name]
  config = module.get_config()
  config.update_from_flattened_dict(dict(overrides or {}))
  return config


def sized_config(name='dreamfusion', full=False, batch_size=None, overrides=None):
  """get_config(name) shrunk to CPU_SIZE unless `full` (the toy configs always as shipped).

  Args:
    name: a key of CONFIGS.
    full: the config as shipped.
    batch_size: views per step (None: the size's own).
    overrides: further dotted-key overrides, applied last.
  """
  values = {} if full or name.startswith('toy') else dict(CPU_SIZE)
  if batch_size:
    values['batch_size'] = batch_size
  values.update(overrides or {})
  return get_config(name, values)


def load_model(name, dtype, saved=None):
  """(guidance.Diffusion, text width, text length, the diffusers configs (unet, vae or None)).

  Args:
    name: one of MODELS.
    dtype: the UNet's and VAE's dtype.
    saved: for a tiny model, a folder where tiny_models.save_flax_model(folder, pixel, seed=0)
      already saved it (a test's shared copy); None saves it afresh in a temporary folder.
  """
  tiny_models.quiet()
  if name == 'sd21':
    diffusion = sd21_diffusion(dtype)
    return diffusion, SD21_TEXT_WIDTH, SD21_TOKENS, (SD21_UNET, SD21_VAE)
  with on_host():  # Building and loading run many small eager ops (see on_host).
    diffusion, *rest = _load_saved_model(name, dtype, saved)
  return (jax.device_put(diffusion, jax.local_devices()[0]), *rest)


def _load_saved_model(name, dtype, saved):
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
  if saved is not None:
    diffusion = guidance.Diffusion.from_pretrained(str(saved), dtype=dtype)
  else:
    with tempfile.TemporaryDirectory() as folder:
      tiny_models.save_flax_model(folder, pixel=pixel)
      diffusion = guidance.Diffusion.from_pretrained(folder, dtype=dtype)
  vae = None if pixel else tiny_models.vae_config()
  return (diffusion, tiny_models.TEXT_WIDTH, tiny_models.TOKEN_LENGTH,
          (tiny_models.unet_config(pixel), vae))


_FLAX_ONLY = ('use_memory_efficient_attention', 'split_head_dim')


def random_params(module, dtype, seed):
  """Random normal parameters with the module's shapes, without running its initialisers.

  Drawn by numpy on the host: nothing is compiled. (As one jitted program, the ~700 draws of the
  SD-2.1 UNet took 2 min 11 s to compile on a lent H200; as eager ops, one compile per shape;
  jnp.asarray also compiles a program per shape, jax.device_put does not.)
  """
  shapes = jax.eval_shape(module.init_weights, jax.random.PRNGKey(0))
  leaves, treedef = jax.tree.flatten(shapes)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [
      jax.device_put((0.02 * rng.standard_normal(s.shape, np.float32)).astype(jnp.dtype(dtype)))
      for s in leaves])


def sd21_diffusion(dtype):
  """A guidance.Diffusion with SD-2.1-base's UNet and VAE shapes and random weights (no text)."""
  import diffusers  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax import models  # pylint: disable=g-import-not-at-top
  unet = diffusers.FlaxUNet2DConditionModel.from_config(SD21_UNET, dtype=dtype)
  vae = diffusers.FlaxAutoencoderKL.from_config(SD21_VAE, dtype=dtype)
  schedule = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule='scaled_linear')
  return guidance.Diffusion(
      unet_params=random_params(unet, dtype, 0), vae_params=random_params(vae, dtype, 1),
      alphas_cumprod=jax.device_put(models.alphas_cumprod(schedule)), unet=unet, vae=vae,
      text=None, scaling_factor=0.18215, resolution=512)


def random_text(batch, tokens, width, dtype, seed=0):
  """TextEmbeddings [batch, tokens, width] of random values (the step only reads their shape)."""
  rng = np.random.default_rng(seed)
  draw = lambda: jax.device_put(rng.standard_normal((batch, tokens, width)).astype(dtype))
  return guidance.TextEmbeddings(cond=draw(), uncond=draw())  # No compile (jnp.asarray has one).


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


# Timing, XLA's cost analysis and memory plan.


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


planned_bytes = memory.planned_bytes  # XLA's buffer plan of one call of an executable.


def peak_gib():
  """The first local device's peak memory in use, GiB (nan where the backend reports none)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use', float('nan')) / 2**30


# The step: its rate, its memory, and its variants (benchmarks/step.py, memory.py, variants.py).


def measure_step(config, diffusion, text, num_steps, donate=True):
  """dict(compile_s, steps_per_s, planned_gib, peak_gib, devices) of the jitted DreamFusion step.

  The views are split over the most devices they divide evenly (config.num_devices = 0), as a
  run does; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N host devices.
  """
  run = build.build(config)
  mesh = parallel.make_mesh(config_checks.num_devices(config))  # As a run: the views split evenly.
  state = parallel.replicate(run.init_state(), mesh)
  diffusion, text = parallel.replicate((diffusion, text), mesh)
  step = run.make_step(donate=donate, mesh=mesh)
  start = time.perf_counter()
  executable = compiled(step, (state, diffusion, text))
  compile_s = time.perf_counter() - start
  _, per_step = time_steps(step, state, (diffusion, text), num_steps)
  return dict(compile_s=compile_s, steps_per_s=1.0 / per_step,
              planned_gib=planned_bytes(executable) / 2**30, peak_gib=peak_gib(),
              devices=mesh.size)


def planned_gib(config, diffusion, text, run=False):
  """(planned GiB, peak GiB or nan) of the jitted step for config (compiled; run if asked)."""
  built = build.build(config)
  state = built.init_state()
  executable = compiled(built.make_step(), (state, diffusion, text))
  peak = float('nan')
  if run:
    jax.block_until_ready(executable(state, diffusion, text))
    peak = peak_gib()
  return planned_bytes(executable) / 2**30, peak


@contextlib.contextmanager
def two_unet_calls():
  """Diffusion.predict_noise with separate uncond and cond UNet calls (the unbatched path).

  Functions jitted inside the context and traced there use it; those traced before keep the
  batched call.
  """
  batched = guidance.Diffusion.predict_noise

  def predict_noise(self, z_t, timesteps, emb, guidance_scale):
    sample = z_t.transpose(0, 3, 1, 2).astype(self.dtype)
    call = lambda e: self.unet.apply({'params': self.unet_params}, sample, timesteps,
                                     e.astype(self.dtype)).sample
    eps_u, eps_c = (call(e).astype(jnp.float32).transpose(0, 2, 3, 1)
                    for e in (emb.uncond, emb.cond))
    scale = jnp.reshape(jnp.asarray(guidance_scale, jnp.float32), (-1, 1, 1, 1))
    return eps_u + scale * (eps_c - eps_u)

  guidance.Diffusion.predict_noise = predict_noise
  try:
    yield
  finally:
    guidance.Diffusion.predict_noise = batched


# The step's parts (benchmarks/breakdown.py).


def breakdown_parts(config, diffusion, text):
  """{name: (jitted function, args)} of the step's parts, inputs drawn as the step draws them."""
  run = build.build(config)
  state = run.init_state()
  settings = run.settings
  b = settings.batch_size
  with on_host():  # The inputs: a few dozen small eager ops.
    key = jax.random.key(1)
    k_cam, k_light, k_render, k_sds = jax.random.split(key, 4)
    cameras = camera.sample_cameras(k_cam, b, width=settings.width,
                                    **dict(settings.camera_ranges))
    lights = jax.vmap(shading.sample_light)(jax.random.split(k_light, b), cameras.c2w[:, :3, 3])
    modes = jnp.full((b,), shading.mode_index('lambertian'), jnp.int32)
    rgb_ct = jax.random.normal(k_sds, (b, settings.height, settings.width, 3))
    images = jax.random.uniform(k_sds, (b, settings.height, settings.width, 3))
    z_t = jax.random.normal(k_sds, diffusion.latent_shape(b))

  @jax.jit
  def render(params):
    def loss(p):
      rgb, out, rays = steps.render_views(k_render, p, cameras, modes, lights, model=run.model,
                                          background_model=run.background_model,
                                          render_fn=run.render_fn, settings=settings)
      return (jnp.sum(rgb * rgb_ct)
              + losses.orientation(out.weights, out.sample_normals, rays.directions)
              + 1e-3 * losses.opacity(out.acc))
    return jax.value_and_grad(loss)(params)

  @jax.jit
  def vae(d, x):
    def encode(x):
      if d.resolution != settings.height:
        x = guidance.resize_images(x, d.resolution)
      return d.to_model_space(x)
    z, pullback = jax.vjp(encode, x)
    return pullback(jnp.ones_like(z))[0]

  emb = text.select(jnp.zeros((b,), jnp.int32))
  unet = jax.jit(lambda d, z: d.predict_noise(z, jnp.full((b,), 500, jnp.int32), emb, 100.0))

  grads = jax.tree.map(lambda p: np.ones(p.shape, p.dtype), state.params)

  @jax.jit
  def optim(g, opt_state, params):
    updates, opt_state = run.optimizer.update(g, opt_state, params)
    return jax.tree.map(jnp.add, params, updates), opt_state

  return {
      'render': (render, (state.params,)),
      'vae': (vae, (diffusion, images)),
      'unet': (unet, (diffusion, z_t)),
      'optim': (optim, (grads, state.opt_state, state.params)),
      'step': (run.make_step(donate=False), (state, diffusion, text)),
  }


def breakdown(config, diffusion, text, repeats, flops_only=False):
  """Rows (name, compile s, ms per call, GFLOP, GFLOP/s) of every part and the whole step.

  With flops_only nothing runs: ms and GFLOP/s are None.
  """
  rows = []
  for name, (fn, args) in breakdown_parts(config, diffusion, text).items():
    start = time.perf_counter()
    executable = compiled(fn, args)  # jit's cache keeps it for the calls below.
    compile_s = time.perf_counter() - start
    gflop = flops(executable) / 1e9
    if flops_only:
      rows.append((name, compile_s, None, gflop, None))
      continue
    _, per_call = time_calls(fn, args, repeats)
    rows.append((name, compile_s, per_call * 1e3, gflop, gflop / per_call))
  return rows


def breakdown_table(rows):
  """Markdown table of breakdown()'s rows, with the parts' share of their sum."""
  if rows[0][2] is None:  # FLOPs only.
    total = sum(r[3] for r in rows if r[0] != 'step')
    lines = ['| part | compile s | GFLOP | share of parts |', '| --- | --- | --- | --- |']
    for name, compile_s, _, gflop, _ in rows:
      share = '' if name == 'step' else f'{100 * gflop / total:.1f}%'
      lines.append(f'| {name} | {compile_s:.1f} | {gflop:.1f} | {share} |')
    lines.append(f'| sum of parts | | {total:.1f} | 100% |')
    return '\n'.join(lines)
  total = sum(r[2] for r in rows if r[0] != 'step')
  lines = ['| part | compile s | ms | share of parts | GFLOP | achieved GFLOP/s |',
           '| --- | --- | --- | --- | --- | --- |']
  for name, compile_s, ms, gflop, rate in rows:
    share = '' if name == 'step' else f'{100 * ms / total:.0f}%'
    lines.append(f'| {name} | {compile_s:.1f} | {ms:.1f} | {share} | {gflop:.3f} | {rate:.1f} |')
  lines.append(f'| sum of parts | | {total:.1f} | 100% | | |')
  return '\n'.join(lines)


def implied(step_gflop, steps_per_s, peak_tflops):
  """Lines: the FLOP/s a measured step rate implies, and the rate a share of the peak allows."""
  achieved = step_gflop * steps_per_s / 1e3
  lines = [f'{steps_per_s:g} steps/s x {step_gflop:.1f} GFLOP = {achieved:.1f} TFLOP/s']
  if peak_tflops:
    lines[0] += f' = {100 * achieved / peak_tflops:.1f}% of a {peak_tflops:g} TFLOP/s peak'
    for share in (0.35, 1.0):
      lines.append(f'{share:.0%} of that peak: {share * peak_tflops * 1e3 / step_gflop:.1f} '
                   'steps/s')
  return lines
