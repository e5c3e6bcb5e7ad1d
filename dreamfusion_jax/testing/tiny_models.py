"""Tiny random diffusers models saved in the diffusers layout, for loading and parity tests.

Nothing is downloaded: the tests build the models (PyTorch or Flax), a CLIP tokenizer whose
vocabulary is written here, and the scheduler config, then save them like a hub model.
"""

import json
import pathlib

import numpy as np

from dreamfusion_jax.toy import tokenizer as tokenizer_lib

TOKEN_LENGTH = 16
TEXT_WIDTH = 32
SCHEDULER = {
    '_class_name': 'DDPMScheduler', 'num_train_timesteps': 1000, 'beta_start': 0.00085,
    'beta_end': 0.012, 'beta_schedule': 'scaled_linear', 'prediction_type': 'epsilon',
}
WORDS = ('a', 'red', 'blue', 'cube', 'sphere', 'front', 'side', 'back', 'overhead', 'view')


def unet_config(pixel):
  """A two-level UNet config: pixel space (3 channels, 16x16) or latent (4 channels, 8x8)."""
  return dict(
      sample_size=16 if pixel else 8, in_channels=3 if pixel else 4,
      out_channels=3 if pixel else 4, block_out_channels=(32, 64), layers_per_block=1,
      down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
      up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=TEXT_WIDTH,
      attention_head_dim=8)


def vae_config():
  """A two-level VAE (downsampling factor 2, 4 latent channels, 16x16 images)."""
  return dict(
      in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
      down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
      layers_per_block=1, sample_size=16, norm_num_groups=32)


def text_config():
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.CLIPTextConfig(
      vocab_size=len(vocabulary()), hidden_size=TEXT_WIDTH, intermediate_size=37,
      num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TOKEN_LENGTH,
      bos_token_id=vocabulary()['<|startoftext|>'], eos_token_id=vocabulary()['<|endoftext|>'],
      pad_token_id=vocabulary()['<|endoftext|>'])


def vocabulary():
  return tokenizer_lib.vocabulary(WORDS)


def save_tokenizer(folder):
  return tokenizer_lib.save_tokenizer(folder, WORDS, TOKEN_LENGTH)


def save_common(folder, pixel):
  folder = pathlib.Path(folder)
  (folder / 'scheduler').mkdir(parents=True, exist_ok=True)
  (folder / 'scheduler' / 'scheduler_config.json').write_text(json.dumps(SCHEDULER))
  index = {'_class_name': 'StableDiffusionPipeline', 'unet': ['diffusers', 'UNet2DConditionModel'],
           'text_encoder': ['transformers', 'CLIPTextModel'],
           'tokenizer': ['transformers', 'CLIPTokenizer'],
           'scheduler': ['diffusers', 'DDPMScheduler']}
  if not pixel:
    index['vae'] = ['diffusers', 'AutoencoderKL']
  (folder / 'model_index.json').write_text(json.dumps(index))
  save_tokenizer(folder / 'tokenizer')


def quiet():
  """diffusers and transformers log a deprecation line for every Flax module they build."""
  import diffusers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  diffusers.utils.logging.set_verbosity_error()
  transformers.utils.logging.set_verbosity_error()


def save_torch_model(folder, pixel, seed=0, unet_overrides=None, safe=True):
  """Builds random PyTorch UNet (+VAE) + CLIP text encoder and saves them in diffusers layout.

  Returns:
    dict of the torch modules: unet, vae (None for pixel), text_encoder, tokenizer.
  """
  import diffusers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  torch.manual_seed(seed)
  unet = diffusers.UNet2DConditionModel(**{**unet_config(pixel), **(unet_overrides or {})})
  _perturb_zero_init(unet, seed)
  unet.save_pretrained(str(folder / 'unet'), safe_serialization=safe)
  vae = None
  if not pixel:
    vae = diffusers.AutoencoderKL(**vae_config())
    vae.save_pretrained(str(folder / 'vae'), safe_serialization=safe)
  text_encoder = transformers.CLIPTextModel(text_config())
  text_encoder.save_pretrained(str(folder / 'text_encoder'), safe_serialization=safe)
  save_common(folder, pixel)
  tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder / 'tokenizer'))
  return dict(unet=unet.eval(), vae=vae.eval() if vae is not None else None,
              text_encoder=text_encoder.eval(), tokenizer=tokenizer)


def _perturb_zero_init(module, seed):
  """diffusers zero-initialises some output layers; give every weight random values instead,
  so parity tests exercise every path of the network."""
  import torch  # pylint: disable=g-import-not-at-top
  generator = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for param in module.parameters():
      if torch.count_nonzero(param) == 0:
        param.copy_(0.02 * torch.randn(param.shape, generator=generator))


def save_flax_model(folder, pixel, seed=0):
  """Builds random Flax UNet (+VAE) + CLIP text encoder and saves them in diffusers layout.

  Returns:
    dict of (module, params) pairs: unet, vae (None for pixel), and the text encoder model.
  """
  import diffusers  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  quiet()
  folder = pathlib.Path(folder)
  unet = diffusers.FlaxUNet2DConditionModel.from_config(unet_config(pixel))
  unet_params = jax.jit(unet.init_weights)(jax.random.PRNGKey(seed))
  unet.save_pretrained(str(folder / 'unet'), params=unet_params)
  vae = vae_params = None
  if not pixel:
    vae = diffusers.FlaxAutoencoderKL.from_config(vae_config())
    vae_params = jax.jit(vae.init_weights)(jax.random.PRNGKey(seed + 1))
    vae.save_pretrained(str(folder / 'vae'), params=vae_params)
  text_encoder = transformers.FlaxCLIPTextModel(text_config(), seed=seed + 2)
  text_encoder.save_pretrained(str(folder / 'text_encoder'))
  save_common(folder, pixel)
  return dict(unet=(unet, unet_params), vae=(vae, vae_params), text_encoder=text_encoder)


def random_images(rng, batch, size):
  """Float32 [B, size, size, 3] images in (0, 1)."""
  return rng.uniform(0.05, 0.95, (batch, size, size, 3)).astype(np.float32)
