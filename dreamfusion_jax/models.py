"""Loading frozen diffusers-format models: UNet, VAE, CLIP text encoder, tokenizer, schedule.

A model is a hub id or a local folder in the diffusers layout (`unet/`, optional `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`). Weights are Flax msgpack files or PyTorch
`.safetensors` converted here with diffusers' own key/shape conversion; pickled PyTorch `.bin`
files can run code when unpickled, so they are refused unless the caller opts in.

The Flax ports cannot express every PyTorch config: a field whose value the Flax class would
silently ignore (e.g. the UNet's `norm_num_groups`, always 32 in Flax) is refused by name.
"""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# Fields only the PyTorch classes have, with the value the Flax ports implicitly use. A saved
# config with any other value describes a network the Flax class would not compute.
UNET_TORCH_ONLY = {
    'center_input_sample': False, 'downsample_padding': 1, 'mid_block_scale_factor': 1,
    'act_fn': 'silu', 'norm_num_groups': 32, 'norm_eps': 1e-5,
    'reverse_transformer_layers_per_block': None, 'encoder_hid_dim': None,
    'encoder_hid_dim_type': None, 'dual_cross_attention': False, 'class_embed_type': None,
    'num_class_embeds': None, 'resnet_time_scale_shift': 'default',
    'resnet_skip_time_act': False, 'resnet_out_scale_factor': 1.0,
    'time_embedding_type': 'positional', 'time_embedding_dim': None,
    'time_embedding_act_fn': None, 'timestep_post_act': None, 'time_cond_proj_dim': None,
    'conv_in_kernel': 3, 'conv_out_kernel': 3, 'attention_type': 'default',
    'class_embeddings_concat': False, 'mid_block_only_cross_attention': None,
    'cross_attention_norm': None,
}
UNET_BLOCKS = {
    'down_block_types': ('CrossAttnDownBlock2D', 'DownBlock2D'),
    'up_block_types': ('CrossAttnUpBlock2D', 'UpBlock2D'),
}
VAE_TORCH_ONLY = {
    'shift_factor': None, 'latents_mean': None, 'latents_std': None, 'use_quant_conv': True,
    'use_post_quant_conv': True, 'mid_block_add_attention': True,
}
VAE_BLOCKS = {
    'down_block_types': ('DownEncoderBlock2D',),
    'up_block_types': ('UpDecoderBlock2D',),
}
# Precision hints only (PyTorch upcasts attention or the VAE to float32 under float16): the Flax
# port computes the same function in its configured dtype, so these are accepted.
PRECISION_ONLY = ('upcast_attention', 'force_upcast')

FLAX_WEIGHTS = 'diffusion_flax_model.msgpack'
SAFETENSORS_WEIGHTS = 'diffusion_pytorch_model.safetensors'
PICKLE_WEIGHTS = 'diffusion_pytorch_model.bin'


# Files of a hub repository that a load reads (exact paths, so neither fp16 copies such as
# unet/diffusion_pytorch_model.fp16.safetensors nor single-file checkpoints such as
# v2-1_512-ema-pruned.safetensors at the top level are fetched).
_TOKENIZER = ('vocab.json', 'merges.txt', 'tokenizer.json', 'tokenizer_config.json',
              'special_tokens_map.json')


def diffusers_files(from_pt, allow_pickle=False):
  """The files of a diffusers text-to-image repository that Diffusion.from_pretrained reads."""
  unet_vae = [SAFETENSORS_WEIGHTS] if from_pt else [FLAX_WEIGHTS]
  text = ['model.safetensors'] if from_pt else ['flax_model.msgpack']
  if allow_pickle:
    unet_vae.append(PICKLE_WEIGHTS)
    text.append('pytorch_model.bin')
  return ['model_index.json', 'scheduler/scheduler_config.json',
          *(f'{c}/{f}' for c in ('unet', 'vae') for f in ('config.json', *unet_vae)),
          *(f'text_encoder/{f}' for f in ('config.json', *text)),
          *(f'tokenizer/{f}' for f in _TOKENIZER)]


def clip_files(from_pt, allow_pickle=False):
  """The files of a transformers CLIP repository that clip.Clip.from_pretrained reads."""
  weights = ['model.safetensors'] if from_pt else ['flax_model.msgpack']
  if allow_pickle:
    weights.append('pytorch_model.bin')
  return ['config.json', 'preprocessor_config.json', *_TOKENIZER, *weights]


class ModelError(ValueError):
  """A model folder or hub id that cannot be loaded; the message says what to change."""


def resolve(path_or_id, files):
  """A local folder for a folder path or a hub id (downloaded through huggingface_hub).

  Args:
    path_or_id: str, a local folder or a hub repository id such as
      'stabilityai/stable-diffusion-2-1-base'.
    files: the repository paths to fetch for a hub id (diffusers_files or clip_files); any the
      repository lacks are skipped.

  Returns:
    pathlib.Path of the folder.
  """
  path = pathlib.Path(os.path.expanduser(str(path_or_id)))
  if path.is_dir():
    return path
  looks_local = str(path_or_id).startswith(('/', '.', '~')) or path.exists()
  if looks_local or str(path_or_id).count('/') != 1:
    raise ModelError(f'model {path_or_id!r} is not a folder: pass a diffusers model folder or '
                     'a hub id like "stabilityai/stable-diffusion-2-1-base"')
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(
        str(path_or_id), allow_patterns=list(files)))
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError(f'could not fetch hub model {path_or_id!r} ({type(e).__name__}); offline? '
                     'pass a local diffusers folder instead') from e


def read_config(folder, component):
  """The parsed `<folder>/<component>/config.json` (or scheduler_config.json), or None."""
  for name in ('config.json', 'scheduler_config.json'):
    file = folder / component / name
    if file.is_file():
      try:
        return json.loads(file.read_text())
      except json.JSONDecodeError as e:
        raise ModelError(f'{file} is not valid JSON ({e.msg}): re-save the model') from e
  return None


def check_flax_compatible(config, torch_only, blocks, where):
  """Refuses a saved config the Flax port would not compute faithfully.

  Args:
    config: dict, a saved diffusers config.
    torch_only: {field: value the Flax port implicitly uses}.
    blocks: {field: allowed block type names}.
    where: str naming the component in messages, e.g. '/m/unet/config.json'.
  """
  for field, implied in torch_only.items():
    if field in config and config[field] != implied and field not in PRECISION_ONLY:
      raise ModelError(f'{where}: {field}={config[field]!r} is not supported by the Flax port '
                       f'(it always computes {field}={implied!r}); use a model with that value')
  for field, allowed in blocks.items():
    for block in config.get(field, ()):
      if block not in allowed:
        raise ModelError(f'{where}: {field} contains {block!r}, which the Flax port does not '
                         f'implement (supported: {", ".join(allowed)})')
  mid = config.get('mid_block_type', 'UNetMidBlock2DCrossAttn')
  if 'mid_block_type' in config and mid not in ('UNetMidBlock2DCrossAttn', None):
    raise ModelError(f'{where}: mid_block_type={mid!r} is not supported by the Flax port')


def load_safetensors_as_flax(file, module, key=0):
  """Converts a PyTorch safetensors state dict to Flax params for `module`, without torch.

  Uses diffusers' key renaming and kernel reshaping; the module's parameter shapes come from
  `jax.eval_shape`, so no random initialisation is computed.

  Args:
    file: path of a diffusers `.safetensors` weights file.
    module: a diffusers Flax module (FlaxUNet2DConditionModel or FlaxAutoencoderKL).
    key: int seed of the (abstract) reference initialisation.

  Returns:
    A nested params dict of float32 numpy-backed jax arrays.
  """
  from diffusers.models import modeling_flax_pytorch_utils as convert  # pylint: disable=g-import-not-at-top
  from safetensors import flax as safetensors_flax  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(module.init_weights, jax.random.PRNGKey(key))
  reference = traverse_util.flatten_dict(shapes)
  flat = {}
  for pt_key, tensor in safetensors_flax.load_file(str(file)).items():
    array = np.asarray(tensor.astype(jnp.float32))
    tuple_key = tuple(convert.rename_key(pt_key).split('.'))
    flax_key, array = convert.rename_key_and_reshape_tensor(tuple_key, array, reference)
    if flax_key not in reference:
      raise ModelError(f'{file}: weight {pt_key} has no place in the Flax model: the config and '
                       'the weights do not match')
    if array.shape != reference[flax_key].shape:
      raise ModelError(f'{file}: weight {pt_key} has shape {array.shape}, the config implies '
                       f'{reference[flax_key].shape}')
    flat[flax_key] = jnp.asarray(array)
  missing = sorted('.'.join(k) for k in reference if k not in flat)
  if missing:
    raise ModelError(f'{file}: {len(missing)} weights missing, e.g. {missing[0]}')
  return traverse_util.unflatten_dict(flat)


def cast_floats(params, dtype):
  """params with every floating-point leaf cast to `dtype`, on this process's first device.

  diffusers' Flax loader commits its arrays to the CPU; jit refuses arguments committed to
  different devices, so on a GPU or TPU the frozen weights must be moved next to the NeRF's.
  """
  device = jax.local_devices()[0]

  def cast(x):
    return jax.device_put(x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, device)

  return jax.tree.map(cast, params)


def load_diffusers_component(folder, component, cls, torch_only, blocks, *, dtype, from_pt,
                             allow_pickle):
  """Loads a diffusers Flax module (UNet or VAE) and its frozen params from a model folder.

  Args:
    folder: pathlib.Path of the model folder.
    component: 'unet' or 'vae'.
    cls: FlaxUNet2DConditionModel or FlaxAutoencoderKL.
    torch_only, blocks: the compatibility table of check_flax_compatible.
    dtype: computation and parameter dtype (jnp.float32 or jnp.bfloat16).
    from_pt: read PyTorch weights instead of Flax weights.
    allow_pickle: allow pickled PyTorch `.bin` weights (they can run code when loaded).

  Returns:
    (module, params).
  """
  sub = folder / component
  config = read_config(folder, component)
  check_flax_compatible(config, torch_only, blocks, str(sub / 'config.json'))
  have_flax = (sub / FLAX_WEIGHTS).is_file()
  have_st = (sub / SAFETENSORS_WEIGHTS).is_file()
  have_bin = (sub / PICKLE_WEIGHTS).is_file()
  if not from_pt and have_flax:
    module, params = cls.from_pretrained(str(folder), subfolder=component, dtype=dtype)
    return module, cast_floats(params, dtype)
  if not from_pt and (have_st or have_bin):
    raise ModelError(f'{sub} has PyTorch weights but no {FLAX_WEIGHTS}: pass from_pt=True')
  module = cls.from_config(config, dtype=dtype)
  if have_st:
    return module, cast_floats(load_safetensors_as_flax(sub / SAFETENSORS_WEIGHTS, module), dtype)
  if have_bin:
    if not allow_pickle:
      raise ModelError(f'{sub} has only pickled {PICKLE_WEIGHTS}, which can run code when '
                       'loaded: convert it to safetensors, or pass allow_pickle=True if you '
                       'trust it')
    module, params = cls.from_pretrained(str(folder), subfolder=component, dtype=dtype,
                                         from_pt=True)
    return module, cast_floats(params, dtype)
  raise ModelError(f'{sub} has no weights ({FLAX_WEIGHTS} or {SAFETENSORS_WEIGHTS})')


def load_text_encoder(folder, *, from_pt, allow_pickle):
  """The CLIP tokenizer and Flax text encoder (float32) of a model folder."""
  import transformers  # pylint: disable=g-import-not-at-top
  transformers.utils.logging.set_verbosity_error()  # One deprecation line per Flax model built.
  for component in ('text_encoder', 'tokenizer'):
    if not (folder / component).is_dir():
      raise ModelError(f'{folder} has no {component}/ folder: not a text-conditioned diffusers '
                       'model')
  sub = folder / 'text_encoder'
  if from_pt and not (sub / 'model.safetensors').is_file():
    if not (sub / 'pytorch_model.bin').is_file():
      raise ModelError(f'{sub} has no model.safetensors')
    if not allow_pickle:
      raise ModelError(f'{sub} has only pickled pytorch_model.bin, which can run code when '
                       'loaded: convert it to safetensors, or pass allow_pickle=True')
  if not from_pt and not (sub / 'flax_model.msgpack').is_file():
    raise ModelError(f'{sub} has no flax_model.msgpack: pass from_pt=True for PyTorch weights')
  tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder / 'tokenizer'))
  encoder = transformers.FlaxCLIPTextModel.from_pretrained(str(sub), from_pt=from_pt,
                                                           dtype=jnp.float32)
  return tokenizer, encoder


def alphas_cumprod(scheduler_config):
  """The cumulative product of (1 - beta) of a diffusers DDPM-style schedule, float32 [T]."""
  steps = scheduler_config.get('num_train_timesteps', 1000)
  start = scheduler_config.get('beta_start', 1e-4)
  end = scheduler_config.get('beta_end', 0.02)
  kind = scheduler_config.get('beta_schedule', 'linear')
  if kind == 'linear':
    betas = np.linspace(start, end, steps, dtype=np.float64)
  elif kind == 'scaled_linear':
    betas = np.linspace(start**0.5, end**0.5, steps, dtype=np.float64)**2
  elif kind == 'squaredcos_cap_v2':
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2)**2
    t = np.arange(steps, dtype=np.float64)
    betas = np.minimum(1 - f((t + 1) / steps) / f(t / steps), 0.999)
  else:
    raise ModelError(f'scheduler beta_schedule={kind!r} is not supported (linear, '
                     'scaled_linear, squaredcos_cap_v2)')
  return np.cumprod(1.0 - betas).astype(np.float32)
