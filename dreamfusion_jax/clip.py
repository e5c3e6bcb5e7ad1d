"""Frozen CLIP: image and text embeddings for Dream Fields guidance and R-precision evaluation.

A model is a transformers CLIP folder or hub id (e.g. openai/clip-vit-base-patch32): config.json,
`flax_model.msgpack` (or `model.safetensors` with from_pt=True) and the tokenizer files side by
side. Pickled `pytorch_model.bin` weights can run code when unpickled, so they are refused unless
the caller opts in (as in `models`).

`Clip` is a pytree: its frozen parameters are leaves and its model and tokenizer static, so pass
it as an argument of a jitted function (never close over it, which would bake the weights into
the compiled program as constants). `embed_images` is differentiable w.r.t. the images; text is
embedded on the host and cached per string.

R-precision (DreamFusion Sec. 4, after Dream Fields): the share of renders whose own caption is
CLIP's top-1 retrieval among a set of captions.

Letters: B images, H, W image size, S the model's input size, N texts, D embedding width.
"""

import functools
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dreamfusion_jax import models

# OpenAI CLIP's image normalisation (CLIPImageProcessor's defaults).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FLAX_WEIGHTS = 'flax_model.msgpack'
SAFETENSORS_WEIGHTS = 'model.safetensors'
PICKLE_WEIGHTS = 'pytorch_model.bin'
TOKENIZER_FILES = (('vocab.json', 'merges.txt'), ('tokenizer.json',))


class TextCache:
  """Host-side memo of text embeddings, string -> float32 [D].

  All caches compare equal: traced code never reads one, so two Clips that differ only in their
  cache share compiled functions (a static field takes part in jit's cache key).
  """

  def __init__(self):
    self.embeddings = {}

  def __eq__(self, other):
    return isinstance(other, TextCache)

  def __hash__(self):
    return hash(TextCache)


def l2_normalize(x, eps=1e-12):
  """x / |x| along the last axis, with a finite gradient at x = 0."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


@flax.struct.dataclass
class Clip:
  """A frozen CLIP model.

  Attributes:
    params: the FlaxCLIPModel's parameters (float32).
    module: transformers.FlaxCLIPModel (static).
    tokenizer: transformers.CLIPTokenizer (static, host side).
    image_size: int S, the square image size the vision tower takes (static).
    mean, std: 3-tuples of floats, the per-channel image normalisation (static).
    cache: TextCache of computed text embeddings (static, host side).
  """
  params: dict
  module: object = flax.struct.field(pytree_node=False)
  tokenizer: object = flax.struct.field(pytree_node=False)
  image_size: int = flax.struct.field(pytree_node=False, default=224)
  mean: tuple = flax.struct.field(pytree_node=False, default=OPENAI_MEAN)
  std: tuple = flax.struct.field(pytree_node=False, default=OPENAI_STD)
  cache: TextCache = flax.struct.field(pytree_node=False, default_factory=TextCache)

  @classmethod
  def from_pretrained(cls, path_or_id, from_pt=False, allow_pickle=False):
    """Loads a transformers CLIP folder or hub id, tokenizer files included.

    Args:
      path_or_id: local folder or hub id such as 'openai/clip-vit-base-patch32'.
      from_pt: read PyTorch `model.safetensors` instead of `flax_model.msgpack`.
      allow_pickle: also accept pickled `pytorch_model.bin` (it can run code when loaded).

    Returns:
      Clip.
    """
    import transformers  # pylint: disable=g-import-not-at-top
    transformers.utils.logging.set_verbosity_error()  # One deprecation line per Flax model.
    try:
      folder = models.resolve(path_or_id, models.clip_files(from_pt, allow_pickle))
    except models.ModelError as e:
      raise models.ModelError(
          f'CLIP model {str(path_or_id)!r} not found ({e}). Pass a transformers CLIP folder '
          '(config.json, flax_model.msgpack, tokenizer files) or a hub id like '
          '"openai/clip-vit-base-patch32"') from e
    config = read_clip_config(folder)
    check_weights(folder, from_pt=from_pt, allow_pickle=allow_pickle)
    if not any(all((folder / f).is_file() for f in files) for files in TOKENIZER_FILES):
      raise models.ModelError(f'{folder} has no tokenizer (vocab.json and merges.txt, or '
                              'tokenizer.json): save the CLIPTokenizer into the model folder')
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder))
    module = transformers.FlaxCLIPModel.from_pretrained(str(folder), from_pt=from_pt,
                                                        dtype=jnp.float32)
    mean, std = read_normalization(folder)
    params = models.cast_floats(module.params, jnp.float32)  # On this process's first device.
    return cls(params=params, module=module, tokenizer=tokenizer,
               image_size=int(config['vision_config'].get('image_size', 224)), mean=mean,
               std=std)

  def embed_text(self, texts):
    """L2-normalised text embeddings, computed once per string (host side).

    Args:
      texts: a non-empty string or a non-empty list of N non-empty strings.

    Returns:
      NumPy float32 [N, D].
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or any(not t or not t.strip() for t in texts):
      raise ValueError(f'CLIP text to embed is empty ({texts!r}): pass non-empty captions')
    missing = [t for t in dict.fromkeys(texts) if t not in self.cache.embeddings]
    if missing:
      tokens = self.tokenizer(missing, padding='max_length', truncation=True,
                              max_length=self.tokenizer.model_max_length, return_tensors='np')
      emb = text_features(self.module, self.params, np.asarray(tokens.input_ids, np.int32),
                          np.asarray(tokens.attention_mask, np.int32))
      self.cache.embeddings.update(zip(missing, np.asarray(emb, np.float32)))
    return np.stack([self.cache.embeddings[t] for t in texts])

  def embed_images(self, images):
    """L2-normalised image embeddings; jittable and differentiable w.r.t. `images`.

    Images of another size are resized (bilinear, antialiased) to S x S as a whole, without
    CLIPImageProcessor's centre crop: renders are square and framed already.

    Args:
      images: float [B, H, W, 3] RGB in [0, 1].

    Returns:
      float32 [B, D].
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'images have shape {images.shape}; expected [B, H, W, 3]')
    x = jnp.asarray(images, jnp.float32)
    b, h, w, _ = x.shape
    s = self.image_size
    if (h, w) != (s, s):
      x = jax.image.resize(x, (b, s, s, 3), 'bilinear', antialias=True)
    x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    features = self.module.get_image_features(x.transpose(0, 3, 1, 2), params=self.params)
    return l2_normalize(features.astype(jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def text_features(module, params, input_ids, attention_mask):
  """L2-normalised text embeddings float32 [N, D] of int32 [N, L] token ids and mask."""
  features = module.get_text_features(input_ids, attention_mask, params=params)
  return l2_normalize(features.astype(jnp.float32))


def read_clip_config(folder):
  """The parsed config.json of a CLIP folder; refuses anything but a two-tower CLIP."""
  file = folder / 'config.json'
  if not file.is_file():
    raise models.ModelError(f'{folder} has no config.json: not a transformers CLIP folder '
                            '(expected config.json, flax_model.msgpack and tokenizer files)')
  try:
    config = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise models.ModelError(f'{file} is not valid JSON ({e.msg}): re-save the model') from e
  if config.get('model_type') != 'clip' or 'vision_config' not in config:
    raise models.ModelError(f'{file}: model_type={config.get("model_type")!r} is not a CLIP '
                            'model (model_type "clip" with text and vision towers); pass a '
                            'CLIP folder such as openai/clip-vit-base-patch32')
  return config


def check_weights(folder, *, from_pt, allow_pickle):
  """Refuses a folder without weights of the requested kind, with what to change."""
  have_flax = (folder / FLAX_WEIGHTS).is_file()
  have_st = (folder / SAFETENSORS_WEIGHTS).is_file()
  have_bin = (folder / PICKLE_WEIGHTS).is_file()
  if not from_pt:
    if have_flax:
      return
    if have_st or have_bin:
      raise models.ModelError(f'{folder} has PyTorch weights but no {FLAX_WEIGHTS}: pass '
                              'from_pt=True')
  else:
    if have_st:
      return
    if have_bin and not allow_pickle:
      raise models.ModelError(f'{folder} has only pickled {PICKLE_WEIGHTS}, which can run code '
                              'when loaded: convert it to safetensors, or pass allow_pickle=True '
                              'if you trust it')
    if have_bin:
      return
  raise models.ModelError(f'{folder} has no CLIP weights ({FLAX_WEIGHTS}, or '
                          f'{SAFETENSORS_WEIGHTS} with from_pt=True)')


def read_normalization(folder):
  """(mean, std) 3-tuples from preprocessor_config.json, else OpenAI CLIP's."""
  file = folder / 'preprocessor_config.json'
  if not file.is_file():
    return OPENAI_MEAN, OPENAI_STD
  try:
    config = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise models.ModelError(f'{file} is not valid JSON ({e.msg}): re-save the processor') from e
  mean = tuple(float(v) for v in config.get('image_mean', OPENAI_MEAN))
  std = tuple(float(v) for v in config.get('image_std', OPENAI_STD))
  if len(mean) != 3 or len(std) != 3:
    raise models.ModelError(f'{file}: image_mean and image_std need 3 values (RGB)')
  return mean, std


def retrieval_ranks(image_emb, text_emb, true_index):
  """Rank of each image's true caption among all captions by cosine similarity.

  Ties count against the true caption (a caption as similar as the true one ranks above it),
  so degenerate embeddings cannot score well.

  Args:
    image_emb: float [B, D] L2-normalised image embeddings.
    text_emb: float [N, D] L2-normalised caption embeddings.
    true_index: int [B], the index in [0, N) of each image's caption.

  Returns:
    int32 [B]: 0 when the true caption is the most similar, up to N - 1.
  """
  sims = jnp.asarray(image_emb, jnp.float32) @ jnp.asarray(text_emb, jnp.float32).T  # [B, N]
  return similarity_ranks(sims, true_index)


def similarity_ranks(sims, true_index):
  """Rank of each image's true caption given image-caption similarities (ties count against it).

  Args:
    sims: float [B, N] similarity of each image to each caption (for an ensemble of CLIPs, the
      mean of their cosine similarities).
    true_index: int [B], the index in [0, N) of each image's caption.

  Returns:
    int32 [B]: 0 when the true caption is the most similar, up to N - 1.
  """
  sims = jnp.asarray(sims, jnp.float32)
  true_index = jnp.asarray(true_index, jnp.int32)
  true = jnp.take_along_axis(sims, true_index[:, None], axis=1)
  others = jnp.arange(sims.shape[1])[None, :] != true_index[:, None]
  return jnp.sum((sims >= true) & others, axis=1).astype(jnp.int32)


def r_precision(ranks):
  """R-precision: the share of images whose true caption is retrieved first (rank 0), float."""
  return jnp.mean(jnp.asarray(ranks) == 0)
