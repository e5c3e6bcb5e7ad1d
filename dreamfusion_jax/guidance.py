"""Frozen diffusion guidance: Score Distillation Sampling (DreamFusion, Sec. 3).

For a render x, noise eps and a noise level t, SDS pushes x along
    grad = w(t) (eps_hat(z_t; y, t) - eps) dz/dx,    z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps,
without differentiating the UNet. For a pixel-space model (Imagen, the paper's prior) z is the
image scaled to [-1, 1]; for a latent model (Stable Diffusion) z is the VAE posterior mean times
the VAE's scaling factor, and the gradient returns to the image through the encoder by a VJP.
Classifier-free guidance: eps_hat = eps_u + s (eps_c - eps_u), cond and uncond in one UNet call;
with Perp-Neg's negatives (perpneg.py) the negatives join the same call.

`Diffusion` is a pytree: its frozen parameters are leaves and its modules static, so pass it as
an argument of a jitted function (never close over it, which would bake the weights into the
compiled program as constants). Its parameters have no optimiser state and receive no gradient.

Use (a hub id or a diffusers folder; a folder with `vae/` is a latent model, without it a
pixel-space one):

    from dreamfusion_jax import guidance
    model = guidance.Diffusion.from_pretrained('stabilityai/stable-diffusion-2-1-base',
                                               dtype=jnp.bfloat16, from_pt=True)
    emb = model.encode_views('a DSLR photo of a peacock on a surfboard', negative_prompt='')
    views = jnp.array([0, 2])                  # camera.view_labels of the rendered cameras
    images = guidance.resize_images(renders, model.resolution)  # [B, 64, 64, 3] -> [B, 512, 512, 3]
    t, noise = model.sample_t_and_noise(key, 2, t_range=(0.02, 0.98))
    grad, aux = model.sds_grad(images, emb.select(views), t, noise, guidance_scale=100.0)
    loss, aux = model.sds_loss(images, emb.select(views), key, guidance_scale=100.0)  # for optax

- `from_pretrained(path_or_id, dtype=jnp.float32, from_pt=False, allow_pickle=False)`: Flax
  msgpack weights, or PyTorch `.safetensors` with `from_pt=True` (converted with diffusers' own
  key mapping, no torch needed). Pickled `.bin` files can run code when loaded and are refused
  unless `allow_pickle=True`. A saved config the Flax port would silently compute differently
  (for example `norm_num_groups` other than 32) is refused with the field's name.
- `encode_text(prompts, negative_prompts)` returns conditional and unconditional (negative
  prompt, default '') embeddings, cached per string; `encode_views(prompt)` gives the four
  view-dependent prompts ("<prompt>, front view", side, back, overhead) in the order of
  `camera.VIEW_NAMES`, and `emb.select(camera.view_labels(...))` picks one per camera.
- `sds_grad(images, emb, t, noise, guidance_scale, weighting='sigma2')`: images [B, H, W, 3] in
  [0, 1] at `model.resolution`, scaled to [-1, 1] for the model; t in (0, 1) is a fraction of the
  training schedule (index round(t (T - 1))); noise has `model.latent_shape(B)` (NHWC);
  v-prediction models are converted to epsilon. The returned gradient is w(t) (eps_hat - eps)
  pulled back to the [0, 1] images (so it includes the factor 2 of the [-1, 1] scaling and, for
  latent models, the encoder Jacobian and scaling factor); `aux` holds latent_grad, eps_hat,
  z_t, weight, timesteps, alpha_bar. Weightings: sigma2 (paper, 1 - abar), sigma, uniform.
- `sds_loss(images, emb, key, guidance_scale, t_range=(0.02, 0.98), weighting='sigma2')` is the
  surrogate sum(stop_gradient(grad) * images) / B, whose gradient is the SDS gradient averaged
  over the B views (as the regularisers average over rays).
- `schedules.linear(step, start=100, end=100, num_steps=N)` schedules the guidance scale.

Letters: B images, H, W image size, h, w, C the model's input (latent or pixel) size, L tokens,
D text embedding width, T schedule steps.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dreamfusion_jax import camera
from dreamfusion_jax import models
from dreamfusion_jax import perpneg

WEIGHTINGS = ('sigma2', 'uniform', 'sigma')


@flax.struct.dataclass
class TextEmbeddings:
  """Conditional and unconditional (negative-prompt) text embeddings.

  Attributes:
    cond: float [P, L, D] embeddings of the prompts.
    uncond: float [P, L, D] embeddings of the negative prompts ('' = unconditional).
    negatives: None, or float [P, K, L, D] Perp-Neg's negative prompts of each entry
      (perpneg.view_embeddings), which predict_noise then combines perpendicularly.
    negative_weights: None, or float32 [P, K] their weights.
  """
  cond: jax.Array
  uncond: jax.Array
  negatives: jax.Array | None = None
  negative_weights: jax.Array | None = None

  def select(self, index):
    """The embeddings of entries `index` (int [B]), e.g. a camera's view label."""
    take = lambda x: None if x is None else jnp.take(x, index, axis=0)
    return TextEmbeddings(cond=take(self.cond), uncond=take(self.uncond),
                          negatives=take(self.negatives),
                          negative_weights=take(self.negative_weights))


class TextEncoder:
  """A CLIP tokenizer and text encoder with a cache of computed embeddings (host side)."""

  def __init__(self, tokenizer, encoder):
    self.tokenizer = tokenizer
    self.encoder = encoder
    self._cache = {}

  def __call__(self, texts):
    """Embeddings float32 [len(texts), L, D] of a list of strings."""
    missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
    if missing:
      ids = self.tokenizer(missing, padding='max_length', truncation=True,
                           max_length=self.tokenizer.model_max_length, return_tensors='np')
      hidden = np.asarray(self.encoder(ids.input_ids).last_hidden_state)
      self._cache.update(zip(missing, hidden))
    return np.stack([self._cache[t] for t in texts])


def view_prompts(prompt):
  """DreamFusion's view-dependent prompts, one per camera.VIEW_NAMES entry."""
  return [f'{prompt}, {name} view' for name in camera.VIEW_NAMES]


def sds_weight(alpha_bar, kind):
  """w(t) of SDS as a function of abar_t, float [B].

  'sigma2' is the paper's sigma_t^2 = 1 - abar_t; 'uniform' is 1; 'sigma' is sigma_t.
  """
  if kind == 'sigma2':
    return 1.0 - alpha_bar
  if kind == 'uniform':
    return jnp.ones_like(alpha_bar)
  if kind == 'sigma':
    return jnp.sqrt(1.0 - alpha_bar)
  raise ValueError(f'unknown SDS weighting {kind!r}: choose one of {", ".join(WEIGHTINGS)}')


def resize_images(images, resolution):
  """Bilinear resize of float [B, H, W, 3] images to [B, resolution, resolution, 3].

  A latent model expects images at its VAE resolution (Stable Diffusion: 512), while DreamFusion
  renders 64x64: this resize sits between the renderer and `sds_grad`, so its VJP carries the
  gradient back to the render.
  """
  b, _, _, c = images.shape
  return jax.image.resize(images, (b, resolution, resolution, c), 'bilinear')


def _is_concrete(x):
  """Whether x holds values (checks on values are skipped while tracing)."""
  return not isinstance(x, jax.core.Tracer)


@flax.struct.dataclass
class Diffusion:
  """A frozen text-conditioned diffusion model for SDS (pixel space, or latent with a VAE).

  Attributes:
    unet_params: the UNet's parameters (in `dtype`).
    vae_params: the VAE's parameters, or None for a pixel-space model.
    alphas_cumprod: float32 [T] abar_t of the training schedule.
    unet: FlaxUNet2DConditionModel (static).
    vae: FlaxAutoencoderKL or None (static).
    text: TextEncoder (static, host side).
    prediction_type: 'epsilon' or 'v_prediction' (static).
    scaling_factor: the VAE latent scale (static; 1 for pixel models).
    resolution: int, the image size the model takes (static).
  """
  unet_params: dict
  vae_params: dict | None
  alphas_cumprod: jax.Array
  unet: object = flax.struct.field(pytree_node=False)
  vae: object = flax.struct.field(pytree_node=False)
  text: TextEncoder = flax.struct.field(pytree_node=False)
  prediction_type: str = flax.struct.field(pytree_node=False, default='epsilon')
  scaling_factor: float = flax.struct.field(pytree_node=False, default=1.0)
  resolution: int = flax.struct.field(pytree_node=False, default=64)

  @classmethod
  def from_pretrained(cls, path_or_id, dtype=jnp.float32, from_pt=False, allow_pickle=False):
    """Loads a diffusers model folder or hub id; a folder without `vae/` is a pixel model.

    Args:
      path_or_id: local folder or hub id.
      dtype: the UNet's and VAE's parameter and compute dtype (float32 or bfloat16).
      from_pt: read PyTorch `.safetensors` weights instead of Flax msgpack.
      allow_pickle: also accept pickled PyTorch `.bin` weights (they can run code on load).

    Returns:
      Diffusion.
    """
    import diffusers  # pylint: disable=g-import-not-at-top
    diffusers.utils.logging.set_verbosity_error()
    folder = models.resolve(path_or_id, models.diffusers_files(from_pt, allow_pickle))
    if models.read_config(folder, 'unet') is None:
      raise models.ModelError(f'{folder} has no unet/config.json: not a diffusers model folder '
                              '(expected unet/, text_encoder/, tokenizer/, scheduler/)')
    scheduler = models.read_config(folder, 'scheduler')
    if scheduler is None:
      raise models.ModelError(f'{folder} has no scheduler/scheduler_config.json')
    prediction_type = scheduler.get('prediction_type', 'epsilon')
    if prediction_type not in ('epsilon', 'v_prediction'):
      raise models.ModelError(f'{folder}: prediction_type={prediction_type!r} is not supported '
                              '(epsilon or v_prediction)')
    options = dict(dtype=dtype, from_pt=from_pt, allow_pickle=allow_pickle)
    unet, unet_params = models.load_diffusers_component(
        folder, 'unet', diffusers.FlaxUNet2DConditionModel, models.UNET_TORCH_ONLY,
        models.UNET_BLOCKS, **options)
    vae, vae_params, scaling, factor = None, None, 1.0, 1
    if models.read_config(folder, 'vae') is not None:
      vae, vae_params = models.load_diffusers_component(
          folder, 'vae', diffusers.FlaxAutoencoderKL, models.VAE_TORCH_ONLY, models.VAE_BLOCKS,
          **options)
      scaling = float(vae.scaling_factor)
      factor = 2**(len(vae.block_out_channels) - 1)
      if unet.in_channels != vae.latent_channels:
        raise models.ModelError(f'{folder}: unet in_channels={unet.in_channels} differs from '
                                f'vae latent_channels={vae.latent_channels}')
    elif unet.in_channels != 3:
      raise models.ModelError(f'{folder} has no vae/ but unet in_channels={unet.in_channels}: '
                              'a pixel-space model takes 3 channels')
    tokenizer, encoder = models.load_text_encoder(folder, from_pt=from_pt,
                                                  allow_pickle=allow_pickle)
    if encoder.config.hidden_size != unet.cross_attention_dim:
      raise models.ModelError(f'{folder}: text encoder width {encoder.config.hidden_size} != '
                              f'unet cross_attention_dim {unet.cross_attention_dim}')
    return cls(unet_params=unet_params, vae_params=vae_params,
               alphas_cumprod=jnp.asarray(models.alphas_cumprod(scheduler)), unet=unet,
               vae=vae, text=TextEncoder(tokenizer, encoder), prediction_type=prediction_type,
               scaling_factor=scaling, resolution=int(unet.sample_size) * factor)

  @property
  def dtype(self):
    return self.unet.dtype

  @property
  def is_latent(self):
    return self.vae is not None

  def latent_shape(self, batch_size):
    """Shape (B, h, w, C) of the model's input space (the noise `sds_grad` takes)."""
    if self.vae is None:
      return (batch_size, self.resolution, self.resolution, 3)
    size = self.resolution // 2**(len(self.vae.block_out_channels) - 1)
    return (batch_size, size, size, self.vae.latent_channels)

  def encode_text(self, prompts, negative_prompts=None):
    """Text embeddings for classifier-free guidance (computed once per string, then cached).

    Args:
      prompts: list of P non-empty strings.
      negative_prompts: None (unconditional ''), one string for all, or a list of P strings.

    Returns:
      TextEmbeddings with cond and uncond [P, L, D] in the model's dtype.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or any(not p or not p.strip() for p in prompts):
      raise ValueError('the prompt is empty: pass the text to generate, e.g. --config.prompt='
                       '"a DSLR photo of a peacock on a surfboard"')
    if negative_prompts is None or isinstance(negative_prompts, str):
      negative_prompts = [negative_prompts or ''] * len(prompts)
    if len(negative_prompts) != len(prompts):
      raise ValueError(f'{len(negative_prompts)} negative prompts for {len(prompts)} prompts')
    cond = self.text(prompts)
    uncond = self.text(list(negative_prompts))
    return TextEmbeddings(cond=jnp.asarray(cond, self.dtype),
                          uncond=jnp.asarray(uncond, self.dtype))

  def encode_views(self, prompt, negative_prompt=None):
    """TextEmbeddings [4, L, D] of DreamFusion's view-dependent prompts, in VIEW_NAMES order."""
    if not prompt or not prompt.strip():
      raise ValueError('the prompt is empty: pass the text to generate')
    return self.encode_text(view_prompts(prompt), negative_prompt)

  def to_model_space(self, images):
    """z(images): float32 [B, h, w, C], the model's clean input for images [B, H, W, 3] in [0, 1].

    Pixel models see the images scaled to [-1, 1]; latent models the VAE posterior mean of that,
    times the scaling factor.
    """
    x = 2.0 * images - 1.0
    if self.vae is None:
      return x
    posterior = self.vae.apply({'params': self.vae_params},
                               x.transpose(0, 3, 1, 2).astype(self.dtype),
                               method=self.vae.encode).latent_dist
    return posterior.mean.astype(jnp.float32) * self.scaling_factor

  def predict_noise(self, z_t, timesteps, emb, guidance_scale):
    """Classifier-free-guided noise prediction, all prompts in one batched UNet call.

    Args:
      z_t: float32 [B, h, w, C] noisy inputs.
      timesteps: int32 [B] schedule indices.
      emb: TextEmbeddings with [B, L, D] entries; with Perp-Neg's negatives [B, K, L, D] the
        UNet sees (2 + K) B inputs and perpneg.combine forms the guided noise.
      guidance_scale: float or float [B], s.

    Returns:
      eps_hat float32 [B, h, w, C], predicting the noise in z_t.
    """
    texts = [emb.uncond, emb.cond]
    if emb.negatives is not None:
      texts += list(jnp.moveaxis(emb.negatives, 1, 0))
    n = len(texts)
    sample = jnp.concatenate([z_t] * n).transpose(0, 3, 1, 2).astype(self.dtype)  # NCHW.
    out = self.unet.apply({'params': self.unet_params}, sample,
                          jnp.concatenate([timesteps] * n),
                          jnp.concatenate(texts).astype(self.dtype)).sample
    out = out.astype(jnp.float32).transpose(0, 2, 3, 1)
    if self.prediction_type == 'v_prediction':
      abar = jnp.concatenate([self.alphas_cumprod[timesteps]] * n)[:, None, None, None]
      zz = jnp.concatenate([z_t] * n)
      out = jnp.sqrt(abar) * out + jnp.sqrt(1.0 - abar) * zz  # eps from v.
    eps_u, eps_c, *eps_negatives = jnp.split(out, n)
    if emb.negatives is not None:
      return perpneg.combine(eps_u, eps_c, jnp.stack(eps_negatives), emb.negative_weights,
                             guidance_scale)
    scale = jnp.reshape(jnp.asarray(guidance_scale, jnp.float32), (-1, 1, 1, 1))
    return eps_u + scale * (eps_c - eps_u)

  def timesteps(self, t):
    """Schedule indices int32 [B] of noise levels t in (0, 1) (a fraction of the schedule)."""
    steps = self.alphas_cumprod.shape[0]
    return jnp.clip(jnp.round(t * (steps - 1)), 0, steps - 1).astype(jnp.int32)

  def _check(self, images, emb, t, noise):
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:3] != (self.resolution,) * 2:
      raise ValueError(f'images must be [B, {self.resolution}, {self.resolution}, 3] (the '
                       f'model resolution; see resize_images), got {tuple(images.shape)}')
    b = images.shape[0]
    if tuple(noise.shape) != self.latent_shape(b):
      raise ValueError(f'noise must be {self.latent_shape(b)}, got {tuple(noise.shape)}')
    if emb.cond.shape[0] != b or emb.uncond.shape[0] != b:
      raise ValueError(f'text embeddings must have one entry per image ({b}), got '
                       f'{emb.cond.shape[0]}: use emb.select(view_labels)')
    if np.shape(t) != (b,):
      raise ValueError(f't must have shape ({b},), got {np.shape(t)}')
    if _is_concrete(images):
      lo, hi = float(np.min(np.asarray(images))), float(np.max(np.asarray(images)))
      if lo < 0.0 or hi > 1.0:
        raise ValueError(f'images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]')
    if _is_concrete(t):
      if not np.all((np.asarray(t) > 0) & (np.asarray(t) < 1)):
        raise ValueError(f't must lie in (0, 1) (a fraction of the schedule), got {np.asarray(t)}')

  def sds_grad(self, images, emb, t, noise, guidance_scale, weighting='sigma2'):
    """The SDS gradient with respect to the images (deterministic given t and noise).

    Args:
      images: float32 [B, H, W, 3] in [0, 1], H = W = self.resolution.
      emb: TextEmbeddings with [B, L, D] entries (cond and negative/uncond).
      t: float32 [B] noise levels in (0, 1), as a fraction of the schedule.
      noise: float32 [B, h, w, C] = self.latent_shape(B), the eps added.
      guidance_scale: float or float32 [B], classifier-free guidance s (paper: 100).
      weighting: one of WEIGHTINGS (paper: 'sigma2').

    Returns:
      grad: float32 [B, H, W, 3], w(t) (eps_hat - eps) dz/dx chained to the [0, 1] images.
      aux: dict with latent_grad (the gradient in model space) [B, h, w, C], eps_hat, z_t,
        weight [B], timesteps [B] and alpha_bar [B].
    """
    self._check(images, emb, t, noise)
    images = images.astype(jnp.float32)
    z, pullback = jax.vjp(self.to_model_space, images)
    k = self.timesteps(t)
    alpha_bar = self.alphas_cumprod[k]
    ab = alpha_bar[:, None, None, None]
    z_t = jnp.sqrt(ab) * z + jnp.sqrt(1.0 - ab) * noise
    eps_hat = self.predict_noise(jax.lax.stop_gradient(z_t), k, emb, guidance_scale)
    weight = sds_weight(alpha_bar, weighting)
    latent_grad = jax.lax.stop_gradient(weight[:, None, None, None] * (eps_hat - noise))
    (grad,) = pullback(latent_grad)
    aux = dict(latent_grad=latent_grad, eps_hat=eps_hat, z_t=z_t, weight=weight, timesteps=k,
               alpha_bar=alpha_bar)
    return grad, aux

  def sample_t_and_noise(self, key, batch_size, t_range=(0.02, 0.98)):
    """t ~ U[t_min, t_max] float32 [B] and eps ~ N(0, I) of shape latent_shape(B)."""
    key_t, key_noise = jax.random.split(key)
    t = jax.random.uniform(key_t, (batch_size,), minval=t_range[0], maxval=t_range[1])
    return t, jax.random.normal(key_noise, self.latent_shape(batch_size))

  def sds_loss(self, images, emb, key, guidance_scale, t_range=(0.02, 0.98),
               weighting='sigma2'):
    """A surrogate loss whose gradient with respect to `images` is the SDS gradient.

    loss = sum(stop_gradient(grad) * images) / B: the mean over the B views, as threestudio
    reduces it (and as the regularisers, means over rays, are), so a weight tuned at one view
    per step keeps its balance at any batch_size. Its gradient is the SDS gradient of each view
    divided by B.

    Args:
      images: float32 [B, H, W, 3] renders in [0, 1] (differentiable).
      emb: TextEmbeddings with [B, L, D] entries.
      key: PRNG key for t and the noise.
      guidance_scale: float or float32 [B].
      t_range: (t_min, t_max) inside (0, 1) (paper: 0.02, 0.98).
      weighting: one of WEIGHTINGS.

    Returns:
      (loss float32 scalar, aux of sds_grad with t added).
    """
    t, noise = self.sample_t_and_noise(key, images.shape[0], t_range)
    grad, aux = self.sds_grad(jax.lax.stop_gradient(images), emb, t, noise, guidance_scale,
                              weighting)
    aux = dict(aux, t=t)
    return jnp.sum(jax.lax.stop_gradient(grad) * images) / images.shape[0], aux



def clip_loss(clip_model, images, text_embedding):
  """Dream Fields' CLIP guidance: minus the mean cosine similarity of images and the caption.

  Args:
    clip_model: a frozen clip.Clip (a pytree argument; its parameters get no gradient).
    images: float32 [N, H, W, 3] augmented renders in [0, 1] (differentiable).
    text_embedding: float32 [D] or [N, D] L2-normalised caption embedding(s)
      (clip.Clip.embed_text, e.g. one view-dependent caption per image).

  Returns:
    float32 scalar in [-1, 1].
  """
  image_embedding = clip_model.embed_images(images)  # [N, D], normalised.
  text_embedding = jax.lax.stop_gradient(jnp.asarray(text_embedding, jnp.float32))
  return -jnp.mean(jnp.sum(image_embedding * text_embedding, axis=-1))
