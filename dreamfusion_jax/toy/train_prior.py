"""Trains the toy world's text-conditioned pixel-space diffusion prior (Imagen-like, 32x32).

  python -m dreamfusion_jax.toy.train_prior --out dreamfusion_jax/toy/weights/prior

A diffusers FlaxUNet2DConditionModel and a small CLIP text encoder are trained together on
renders of the TRAIN_PROMPTS (never the HELDOUT ones) with the v-prediction objective (Salimans &
Ho 2022) under a DDPM linear schedule, captions dropped 10 % of the time for classifier-free
guidance. v rather than epsilon: at high noise an epsilon error is amplified 1 / sqrt(abar) times
in the implied image, and the epsilon loss there hardly depends on the caption, so a small epsilon
model trained for 750 steps ignored its text (conditional and unconditional noise errors equal to
3 digits at every t); the v loss weighs the image's colour and shape where they are decided.
The EMA weights are saved in the diffusers layout (unet/, text_encoder/, tokenizer/, scheduler/),
so guidance.Diffusion.from_pretrained loads the folder like any hub model. Reproducible from
--seed; --schedule_steps makes a run stopped early equal to the start of a longer one.
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from dreamfusion_jax import host_memory
from dreamfusion_jax.toy import tokenizer as tokenizer_lib
from dreamfusion_jax.toy import ema_step
from dreamfusion_jax.toy import world

TOKEN_LENGTH = 16
TEXT_WIDTH = 64
SCHEDULER = {
    '_class_name': 'DDPMScheduler', 'num_train_timesteps': 1000, 'beta_start': 0.0001,
    'beta_end': 0.02, 'beta_schedule': 'linear', 'prediction_type': 'v_prediction',
    'clip_sample': True,
}


def unet_config(resolution):
  """The prior's UNet: three levels (32, 64, 64 channels), text cross-attention at the lowest.

  Attention only at 1/4 resolution (and the middle block) costs a third of attention at 1/2 too
  (1.6 vs 4.2 s per batch-32 training step on 2 CPU cores); colour and shape are global.
  """
  return dict(
      sample_size=resolution, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
      layers_per_block=1,
      down_block_types=('DownBlock2D', 'DownBlock2D', 'CrossAttnDownBlock2D'),
      up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'),
      cross_attention_dim=TEXT_WIDTH, attention_head_dim=8)


def text_config(vocab_size, bos_id, eos_id, width=TEXT_WIDTH, projection_dim=None):
  """A two-layer CLIP text transformer of width `width` over the toy vocabulary."""
  import transformers  # pylint: disable=g-import-not-at-top
  extra = {} if projection_dim is None else {'projection_dim': projection_dim}
  return transformers.CLIPTextConfig(
      vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
      num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TOKEN_LENGTH,
      bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id, **extra)


def build_models(folder, resolution, seed, init=None):
  """UNet, text encoder and tokenizer (the tokenizer is written to folder/tokenizer).

  Fresh from `seed`, or with the weights of the prior saved in the folder `init` (its
  architecture must be this module's: same channels, layers and vocabulary).
  """
  import diffusers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  diffusers.utils.logging.set_verbosity_error()
  transformers.utils.logging.set_verbosity_error()
  tokenizer = tokenizer_lib.save_tokenizer(folder / 'tokenizer', world.WORDS, TOKEN_LENGTH)
  vocab = tokenizer.get_vocab()
  text = transformers.FlaxCLIPTextModel(
      text_config(len(vocab), vocab[tokenizer_lib.BOS], vocab[tokenizer_lib.EOS]), seed=seed)
  unet = diffusers.FlaxUNet2DConditionModel.from_config(unet_config(resolution))
  unet_params = jax.jit(unet.init_weights)(jax.random.key_data(jax.random.key(seed + 1)))
  params = {'unet': unet_params, 'text': text.params}
  if init is not None:
    params = load_params(init, params)
  return unet, text, tokenizer, params


def load_params(folder, like):
  """The {'unet', 'text'} weights of the prior saved in `folder`, checked against `like`."""
  import diffusers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  if not (folder / 'unet').is_dir() or not (folder / 'text_encoder').is_dir():
    raise FileNotFoundError(f'--init {folder}: no unet/ and text_encoder/ there; give a folder '
                            'written by train_prior')
  _, unet_params = diffusers.FlaxUNet2DConditionModel.from_pretrained(str(folder / 'unet'))
  text_params = transformers.FlaxCLIPTextModel.from_pretrained(
      str(folder / 'text_encoder')).params
  params = {'unet': unet_params, 'text': text_params}
  if jax.tree.map(jnp.shape, params) != jax.tree.map(jnp.shape, like):
    raise ValueError(f'--init {folder}: its UNet or text encoder differs from the one this '
                     'script builds (channels, layers or vocabulary); train from scratch instead')
  return jax.tree.map(jnp.asarray, params)


def tokenize(tokenizer, texts):
  """int32 [N, TOKEN_LENGTH] padded token ids (as guidance.TextEncoder tokenizes)."""
  return np.asarray(tokenizer(list(texts), padding='max_length', truncation=True,
                              max_length=TOKEN_LENGTH, return_tensors='np').input_ids, np.int32)


def make_train_step(unet, text, optimizer, alphas_cumprod, ema_decay):
  """The jitted step (params, ema, opt_state, images, ids, key, step) -> (..., loss)."""

  def loss_fn(params, images, ids, key):
    key_t, key_noise = jax.random.split(key)
    b = images.shape[0]
    k = jax.random.randint(key_t, (b,), 0, alphas_cumprod.shape[0])
    noise = jax.random.normal(key_noise, images.shape)
    ab = alphas_cumprod[k][:, None, None, None]
    x = 2.0 * images - 1.0
    x_t = jnp.sqrt(ab) * x + jnp.sqrt(1.0 - ab) * noise
    hidden = text(ids, params=params['text']).last_hidden_state
    v = unet.apply({'params': params['unet']}, x_t.transpose(0, 3, 1, 2), k, hidden).sample
    target = jnp.sqrt(ab) * noise - jnp.sqrt(1.0 - ab) * x
    return jnp.mean((v.transpose(0, 2, 3, 1) - target)**2)

  return ema_step.make_ema_step(loss_fn, optimizer, ema_decay)


def save(folder, unet, text, params, info):
  """Writes the diffusers layout (tokenizer/ was written by build_models) and training.json."""
  unet.save_pretrained(str(folder / 'unet'), params=jax.device_get(params['unet']))
  text.save_pretrained(str(folder / 'text_encoder'), params=jax.device_get(params['text']))
  (folder / 'scheduler').mkdir(parents=True, exist_ok=True)
  (folder / 'scheduler' / 'scheduler_config.json').write_text(json.dumps(SCHEDULER, indent=2))
  index = {'_class_name': 'ToyPixelDiffusion',
           'unet': ['diffusers', 'FlaxUNet2DConditionModel'],
           'text_encoder': ['transformers', 'FlaxCLIPTextModel'],
           'tokenizer': ['transformers', 'CLIPTokenizer'],
           'scheduler': ['diffusers', 'DDPMScheduler']}
  (folder / 'model_index.json').write_text(json.dumps(index, indent=2))
  (folder / 'training.json').write_text(json.dumps(info, indent=2))


def train(out, *, steps, batch_size, views_per_prompt, resolution, lr, seed, save_every,
          schedule_steps=None, cfg_dropout=0.1, ema_decay=0.999, init=None):
  """Renders the training set, trains, and saves the EMA model to `out`; returns the info dict.

  `init` (a folder written by this function) continues from its saved EMA weights with a fresh
  optimiser and schedule; its training.json is kept in the new one's `init` entry.
  `schedule_steps` (default `steps`) is the length of the learning-rate schedule: a run stopped
  early equals the first `steps` steps of a longer one.
  """
  from dreamfusion_jax import models  # pylint: disable=g-import-not-at-top
  start = time.time()
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  key = jax.random.key(seed)
  key_data, key_train = jax.random.split(key)
  print(f'rendering {len(world.TRAIN_PROMPTS)} prompts x {views_per_prompt} views at '
        f'{resolution}px', file=sys.stderr)
  images, _, captions, _ = world.render_dataset(key_data, world.TRAIN_PROMPTS, views_per_prompt,
                                                resolution)
  previous = None
  if init is not None:
    init = pathlib.Path(init)
    previous = json.loads((init / 'training.json').read_text()) if (
        init / 'training.json').is_file() else None
  unet, text, tokenizer, params = build_models(out, resolution, seed, init)
  ids = tokenize(tokenizer, captions)
  empty = tokenize(tokenizer, [''])[0]
  schedule_steps = schedule_steps or steps
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(500, schedule_steps // 10 + 1),
                                                schedule_steps, lr * 0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b2=0.99,
                                                                     weight_decay=1e-4))
  opt_state = optimizer.init(params)
  ema = jax.tree.map(jnp.copy, params)
  abar = jnp.asarray(models.alphas_cumprod(SCHEDULER))
  step_fn = make_train_step(unet, text, optimizer, abar, ema_decay)
  rng = np.random.default_rng(seed)
  losses, info = [], {}
  bar = tqdm.tqdm(range(steps), desc='toy prior', dynamic_ncols=True, file=sys.stderr)
  for step in bar:
    idx = rng.integers(0, len(images), batch_size)
    batch_ids = np.where(rng.uniform(size=(batch_size, 1)) < cfg_dropout, empty, ids[idx])
    params, ema, opt_state, loss = step_fn(params, ema, opt_state, images[idx], batch_ids,
                                           jax.random.fold_in(key_train, step), step)
    losses.append(float(loss))
    if (step + 1) % 50 == 0:
      bar.set_postfix(loss=f'{np.mean(losses[-200:]):.4f}')
    if (step + 1) % save_every == 0 or step + 1 == steps:
      info = dict(steps=step + 1, final_loss=float(np.mean(losses[-200:])), seed=seed,
                  batch_size=batch_size, views_per_prompt=views_per_prompt,
                  resolution=resolution, lr=lr, schedule_steps=schedule_steps,
                  seconds=round(time.time() - start, 1),
                  train_prompts=list(world.TRAIN_PROMPTS), heldout=list(world.HELDOUT),
                  loss_every_100=[round(float(np.mean(losses[i:i + 100])), 5)
                                  for i in range(0, len(losses), 100)])
      if previous is not None:
        info['init'] = previous
      save(out, unet, text, ema, info)
  return info


def main(argv=None):
  host_memory.keep_freed_memory()  # Before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='output folder (diffusers layout)')
  parser.add_argument('--steps', type=int, default=2500)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--views_per_prompt', type=int, default=256)
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--save_every', type=int, default=250)
  parser.add_argument('--schedule_steps', type=int, default=None,
                      help='length of the learning-rate schedule (default: --steps)')
  parser.add_argument('--init', default=None,
                      help='continue from the prior saved in this folder (fresh optimiser)')
  args = parser.parse_args(argv)
  info = train(args.out, steps=args.steps, batch_size=args.batch_size,
               views_per_prompt=args.views_per_prompt, resolution=args.resolution, lr=args.lr,
               seed=args.seed, save_every=args.save_every, schedule_steps=args.schedule_steps,
               init=args.init)
  print(f'saved {args.out}: {info["steps"]} steps, final loss {info["final_loss"]:.4f}, '
        f'{info["seconds"]:.0f} s')


if __name__ == '__main__':
  main()
