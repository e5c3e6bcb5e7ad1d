"""Trains the toy world's CLIP (a small ViT and text transformer, 32x32) contrastively.

  python -m dreamfusion_jax.toy.train_clip --out dreamfusion_jax/toy/weights/clip

A transformers FlaxCLIPModel learns CLIP's symmetric InfoNCE loss with a learned temperature on
renders of the TRAIN_PROMPTS (never the HELDOUT ones), each captioned by its prompt "a {colour}
{shape}" without a view suffix: R-precision retrieves the prompt. Every batch holds G groups, each
group every training prompt once with a random view, so no batch has two positives for a caption.
At the end the model is measured on renders of the HELDOUT prompts from fresh DreamFusion cameras,
retrieving among all 30 world.PROMPTS. Shape captions ("a cube") are also matched on renders
recoloured to random hues (recolor_arcs: never nearer a shape's held-out colour than its training
colours), and the renders can be augmented (Augmentation, off by default). Options, all off by
default: --target_jitter renders the training views from cameras aimed off the origin (objects off
the image centre, as NeRFs that grew off it); --saturation stretches the object colours towards the
channel extremes SDS produces; --compose_weight pulls each prompt's text embedding towards the sum
of its colour's and shape's (compose_loss). The folder is a
transformers CLIP folder (config.json, flax_model.msgpack, tokenizer, preprocessor_config.json)
that clip.Clip.from_pretrained loads. Reproducible from --seed.
"""

import argparse
import colorsys
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from dreamfusion_jax import clip
from dreamfusion_jax import host_memory
from dreamfusion_jax.toy import ema_step
from dreamfusion_jax.toy import tokenizer as tokenizer_lib
from dreamfusion_jax.toy import train_prior
from dreamfusion_jax.toy import world

TOKEN_LENGTH = train_prior.TOKEN_LENGTH
WIDTH = 64
MAX_LOGIT_SCALE = 100.0  # CLIP clips the learned temperature's inverse at 100.


def clip_config(vocab_size, bos_id, eos_id, image_size, patch_size, width=WIDTH,
                projection_dim=WIDTH):
  """A transformers.CLIPConfig: a 3-layer ViT and a 2-layer text transformer of `width`."""
  import transformers  # pylint: disable=g-import-not-at-top
  text = train_prior.text_config(vocab_size, bos_id, eos_id, width, projection_dim)
  vision = transformers.CLIPVisionConfig(
      image_size=image_size, patch_size=patch_size, hidden_size=width,
      intermediate_size=2 * width, num_hidden_layers=3, num_attention_heads=4,
      projection_dim=projection_dim)
  return transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                 projection_dim=projection_dim)


def build_model(folder, image_size, patch_size, seed):
  """A fresh FlaxCLIPModel and its tokenizer (the tokenizer files are written to `folder`)."""
  import transformers  # pylint: disable=g-import-not-at-top
  transformers.utils.logging.set_verbosity_error()
  tokenizer = tokenizer_lib.save_tokenizer(folder, world.WORDS, TOKEN_LENGTH)
  vocab = tokenizer.get_vocab()
  config = clip_config(len(vocab), vocab[tokenizer_lib.BOS], vocab[tokenizer_lib.EOS],
                       image_size, patch_size)
  return transformers.FlaxCLIPModel(config, seed=seed), tokenizer


def attribute_captions():
  """Captions of one attribute each: every colour ("red") then every shape ("a cube")."""
  return tuple(world.COLORS) + tuple(f'a {shape}' for shape in world.SHAPES)


def attribute_membership(prompts):
  """float32 [P, A] 1 where prompt p has attribute a (attribute_captions order), else 0."""
  membership = np.zeros((len(prompts), len(world.COLORS) + len(world.SHAPES)), np.float32)
  for p, text in enumerate(prompts):
    color, shape = world.parse_prompt(text)
    membership[p, list(world.COLORS).index(color)] = 1.0
    membership[p, len(world.COLORS) + world.SHAPES.index(shape)] = 1.0
  return membership


def contrastive_loss(image_emb, text_emb, membership, logit_scale):
  """CLIP's symmetric InfoNCE loss with label-aware (multi-positive) targets, per group.

  With membership = identity this is CLIP's loss; otherwise each image's target is uniform over
  the captions it matches, and each caption's target uniform over the images it matches.

  Args:
    image_emb: float [G, P, D] L2-normalised; image p of every group shows training prompt p.
    text_emb: float [T, D] L2-normalised caption embeddings.
    membership: float [P, T], 1 where caption t describes prompt p's images; no empty rows or
      columns.
    logit_scale: float scalar, log of the inverse temperature (clipped at log 100).

  Returns:
    float scalar: mean of the image-to-text and text-to-image cross-entropies.
  """
  scale = jnp.exp(jnp.minimum(logit_scale, jnp.log(MAX_LOGIT_SCALE)))
  logits = scale * jnp.einsum('gpd,td->gpt', image_emb, text_emb)  # [G, P images, T texts]
  image_target = membership / jnp.sum(membership, axis=1, keepdims=True)
  text_target = membership.T / jnp.sum(membership, axis=0)[:, None]
  image_to_text = optax.softmax_cross_entropy(logits, image_target)
  text_to_image = optax.softmax_cross_entropy(logits.transpose(0, 2, 1), text_target)
  return 0.5 * (jnp.mean(image_to_text) + jnp.mean(text_to_image))


def flip(key, images):
  """Random horizontal flips of float [..., H, W, 3] images (a mirrored render is still valid)."""
  mirror = jax.random.bernoulli(key, 0.5, images.shape[:-3])[..., None, None, None]
  return jnp.where(mirror, images[..., ::-1, :], images)


def gaussian_blur(images, sigma_px, radius=2):
  """Blurs float [N, H, W, 3] images by a separable Gaussian of per-image width sigma_px [N].

  Edges are extended (the border is background); sigma_px near 0 leaves an image unchanged.
  """
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (offsets / jnp.maximum(sigma_px, 1e-3)[:, None])**2)
  weights = weights / jnp.sum(weights, axis=1, keepdims=True)  # [N, K]
  size_h, size_w = images.shape[1:3]
  padded = jnp.pad(images, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode='edge')
  images = sum(weights[:, k, None, None, None] * padded[:, k:k + size_h]
               for k in range(2 * radius + 1))
  padded = jnp.pad(images, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode='edge')
  return sum(weights[:, k, None, None, None] * padded[:, :, k:k + size_w]
             for k in range(2 * radius + 1))


def zoom_and_shift(images, scale, shift_px):
  """Rescales float [N, H, W, 3] images over white about their centre and shifts them.

  Args:
    images: float [N, H, W, 3] over a white background.
    scale: float [N] magnification (> 1 enlarges the object).
    shift_px: float [N, 2] shift in pixels (rows, columns).

  Returns:
    float [N, H, W, 3]; what comes in from outside the frame is white.
  """
  size = jnp.asarray(images.shape[1:3], jnp.float32)

  def one(image, s, shift):
    translation = 0.5 * size * (1.0 - s) + shift
    return jax.image.scale_and_translate(image - 1.0, image.shape, (0, 1), jnp.stack([s, s]),
                                         translation, 'linear', antialias=True) + 1.0

  return jax.vmap(one)(images, scale, shift_px)


def augment(key, images, max_zoom, max_shift_px, max_blur_px, max_noise):
  """Flips, zooms, shifts, blurs and adds noise to float [..., H, W, 3] renders over white.

  Each image draws its own magnification (log-uniform in [1 / (1 + max_zoom), 1 + max_zoom]),
  shift (uniform up to max_shift_px each way), blur width (uniform in [0, max_blur_px]) and
  noise level (uniform in [0, max_noise], Gaussian per pixel), so that the CLIP reads an object
  from the silhouette and shading a NeRF render gives, softer and less exact than the analytic
  renders it is trained on. Zero maxima leave only the flip. Returns the same shape in [0, 1].
  """
  key_flip, key_zoom, key_shift, key_blur, key_level, key_noise = jax.random.split(key, 6)
  shape = images.shape
  images = flip(key_flip, images).reshape(-1, *shape[-3:])
  n = images.shape[0]
  if max_zoom > 0 or max_shift_px > 0:
    log_zoom = jnp.log1p(max_zoom)
    scale = jnp.exp(jax.random.uniform(key_zoom, (n,), minval=-log_zoom, maxval=log_zoom))
    shift = jax.random.uniform(key_shift, (n, 2), minval=-max_shift_px, maxval=max_shift_px)
    images = zoom_and_shift(images, scale, shift)
  if max_blur_px > 0:
    images = gaussian_blur(images, jax.random.uniform(key_blur, (n,), maxval=max_blur_px))
  if max_noise > 0:
    level = jax.random.uniform(key_level, (n, 1, 1, 1), maxval=max_noise)
    images = images + level * jax.random.normal(key_noise, images.shape)
  return jnp.clip(images, 0.0, 1.0).reshape(shape)


def reshade(albedo, coverage, alphas, gamma):
  """Renders over white from their shading coverage with the shading's contrast changed.

  Args:
    albedo: float [..., 3] object colour per image.
    coverage: float [..., H, W] shading_coverage S (coverage times mean shading).
    alphas: float [..., H, W] coverage.
    gamma: float [...] exponent: the object's shading S / alpha becomes (S / alpha)^gamma, so
      gamma = 1 gives back the render exactly, < 1 flattens the shading and > 1 deepens it.

  Returns:
    float [..., H, W, 3] = albedo * alpha * (S / alpha)^gamma + (1 - alpha).
  """
  shade = jnp.where(alphas > 0, coverage / jnp.maximum(alphas, 1e-6), 0.0)
  shade = jnp.clip(shade, 0.0, 1.0)**gamma[..., None, None]
  return albedo[..., None, None, :] * (alphas * shade)[..., None] + (1.0 - alphas)[..., None]


def hue_deg(rgb):
  """Hue in degrees [0, 360) of an RGB triple."""
  return 360.0 * colorsys.rgb_to_hsv(*rgb)[0]


def hue_gap_deg(a, b):
  """Angular distance in degrees [0, 180] between two hues."""
  d = abs(a - b) % 360.0
  return min(d, 360.0 - d)


def recolor_arcs(prompts):
  """The hues each prompt's shape may be recoloured to: float32 [P, 2] (start_deg, length_deg).

  The whole hue circle except, for every HELDOUT colour of the shape, the open arc of hues closer
  to it than the nearest colour the shape is trained in: no recoloured shape is closer in hue to
  its held-out colour than the training renders of that shape already are. (The arc is
  symmetric, so the shape is seen on both sides of its held-out hue; excluding everything between
  the two nearest training colours instead left the yellow sphere's whole side of the circle
  without spheres, and the CLIP learnt that yellowish round things are never spheres.)
  """
  arcs = []
  for text in prompts:
    shape = world.parse_prompt(text)[1]
    seen = [hue_deg(world.COLORS[c]) for c in world.COLORS if world.prompt(c, shape) in prompts]
    start, length = 0.0, 360.0
    for held in (world.parse_prompt(h) for h in world.HELDOUT):
      if held[1] == shape:
        hue = hue_deg(world.COLORS[held[0]])
        gap = min(hue_gap_deg(hue, h) for h in seen)
        start, length = (hue + gap) % 360.0, 360.0 - 2.0 * gap
    arcs.append((start, length))
  return np.asarray(arcs, np.float32)


def shading_coverage(images, alphas, prompts):
  """Per-pixel albedo factor S of renders, so that rgb = albedo * S + (1 - alpha) exactly.

  world.render_view averages albedo * shading over covered subsamples and white elsewhere, so S
  (coverage times mean shading) is read off the channel with the largest albedo.

  Args:
    images: float32 [P, V, H, W, 3] renders of `prompts` over white.
    alphas: float32 [P, V, H, W] coverage.
    prompts: the P toy prompts.

  Returns:
    float32 [P, V, H, W] in [0, 1].
  """
  albedo = np.asarray([world.COLORS[world.parse_prompt(p)[0]] for p in prompts], np.float32)
  channel = np.argmax(albedo, axis=1)
  rgb = np.take_along_axis(images, channel[:, None, None, None, None], axis=-1)[..., 0]
  peak = albedo[np.arange(len(prompts)), channel][:, None, None, None]
  return np.clip((rgb - (1.0 - alphas)) / peak, 0.0, 1.0).astype(np.float32)


def hsv_to_rgb(hue_deg_, saturation, value):
  """float [..., 3] RGB of HSV colours (hue in degrees, saturation and value in [0, 1])."""
  n = jnp.asarray([5.0, 3.0, 1.0])
  k = jnp.mod(n + hue_deg_[..., None] / 60.0, 6.0)
  ramp = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return value[..., None] * (1.0 - saturation[..., None] * ramp)


def recolor(key, arcs, batch_shape):
  """A random colour per render, hue drawn from its shape's allowed arc.

  Args:
    key: a PRNG key.
    arcs: float [P, 2] recolor_arcs of the P prompts.
    batch_shape: (G, P) renders of the P prompts in G groups.

  Returns:
    float32 [G, P, 3] RGB albedos, saturation uniform in [0, 1] (gray included) and value in
    [0.3, 1].
  """
  key_hue, key_sat, key_val = jax.random.split(key, 3)
  hue = arcs[:, 0] + jax.random.uniform(key_hue, batch_shape) * arcs[:, 1]
  return hsv_to_rgb(hue, jax.random.uniform(key_sat, batch_shape),
                    jax.random.uniform(key_val, batch_shape, minval=0.3, maxval=1.0))


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Maxima of the random image changes of a training step (see augment and reshade).

  zoom: magnification up to 1 + zoom either way; shift_px: shift each way in pixels; blur_px:
  Gaussian blur width in pixels; noise: standard deviation of pixel noise; gamma: shading
  exponent log-uniform in [1 / gamma, gamma] (1 keeps the renders' shading); saturation: the
  object colour's contrast stretch k, log-uniform in [1, saturation] (see saturate; 1 keeps it).
  """
  zoom: float = 0.0
  shift_px: float = 0.0
  blur_px: float = 0.0
  noise: float = 0.0
  gamma: float = 1.0
  saturation: float = 1.0


def saturate(albedo, stretch):
  """Colours pushed towards the channel extremes, as SDS with classifier-free guidance does.

  A NeRF trained by SDS tends to come out in saturated colours with each channel near 0 or 1
  (a held-out blue cone (0.15, 0.3, 0.9) as (0, 0, 1)); stretching the training colours' channels
  about 0.5 shows the CLIP such colours under their own names.

  Args:
    albedo: float [..., 3] colours in [0, 1].
    stretch: float [...] factor k >= 1 (1 leaves the colour as it is).

  Returns:
    float [..., 3] = clip(0.5 + k * (albedo - 0.5), 0, 1).
  """
  return jnp.clip(0.5 + stretch[..., None] * (albedo - 0.5), 0.0, 1.0)


def normalize_images(images, mean, std):
  """NCHW float32 model input [B, 3, H, W] of float [B, H, W, 3] images in [0, 1]."""
  x = (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.transpose(0, 3, 1, 2)


def compose_loss(prompt_emb, attribute_emb, membership):
  """How far each prompt's text embedding is from the sum of its attributes' (1 - cosine).

  Args:
    prompt_emb: float [P, D] unit text embeddings of "a {colour} {shape}" prompts.
    attribute_emb: float [A, D] unit text embeddings of the attribute captions.
    membership: float [P, A] 1 where prompt p has attribute a (two per prompt).

  Returns:
    float, the mean over prompts of 1 - cos(prompt, normalised sum of its attributes).
  """
  target = clip.l2_normalize(membership @ attribute_emb)
  return jnp.mean(1.0 - jnp.sum(prompt_emb * target, axis=-1))


def make_train_step(model, optimizer, membership, arcs, albedo, attribute_weight,
                    recolor_weight, ema_decay, augmentation, compose_weight=0.0):
  """The jitted step (params, ema, opt_state, batch, ids [P + A, L], key, step) -> (params, ema,
  opt_state, loss).

  `batch` holds the shading_coverage and alphas [G, P, H, W] of renders of the P training
  prompts (group g, prompt p), drawn again in their own colours (albedo float [P, 3]), and those
  of R more groups ('recolor_coverage', 'recolor_alphas'), recoloured (arcs float [P, 2], see
  recolor_arcs); each render has its shading's contrast changed and is then augmented as
  `augmentation` (an Augmentation) says. The
  loss is the prompts' InfoNCE on the G groups, plus `attribute_weight` times the attribute
  captions' (membership float [P, A], colours then shapes), plus `recolor_weight` times the
  shape captions' on the R recoloured groups: shape seen in many colours, so that reading it does
  not hinge on the colours each shape was trained in, while no held-out pair is shown. `ema` is
  the moving average of the parameters. `compose_weight` times compose_loss pulls each training
  prompt's text embedding towards the sum of its colour's and its shape's, so that a held-out
  pair's text, never trained on, lands where its two words point.
  """
  num_prompts = membership.shape[0]
  num_colors = len(world.COLORS)

  def embed(params, images):  # [G, P, H, W, 3] -> [G, P, D]
    g, p = images.shape[:2]
    pixels = normalize_images(images.reshape(g * p, *images.shape[2:]), clip.OPENAI_MEAN,
                              clip.OPENAI_STD)
    return clip.l2_normalize(model.get_image_features(pixels, params=params)).reshape(g, p, -1)

  def draw(key, albedos, coverage, alphas):  # albedos [G, P, 3] -> images [G, P, H, W, 3]
    key_gamma, key_augment, key_saturation = jax.random.split(key, 3)
    log_gamma = jnp.log(augmentation.gamma)
    gamma = jnp.exp(jax.random.uniform(key_gamma, coverage.shape[:2], minval=-log_gamma,
                                       maxval=log_gamma))
    if augmentation.saturation > 1:
      stretch = jnp.exp(jax.random.uniform(key_saturation, coverage.shape[:2],
                                           maxval=jnp.log(augmentation.saturation)))
      albedos = saturate(albedos, stretch)
    images = reshade(albedos, coverage, alphas, gamma)
    return augment(key_augment, images, augmentation.zoom, augmentation.shift_px,
                   augmentation.blur_px, augmentation.noise)

  def loss_fn(params, batch, ids, key):
    key_own, key_color, key_recolored = jax.random.split(key, 3)
    coverage, alphas = batch['coverage'], batch['alphas']
    own = jnp.broadcast_to(albedo, (coverage.shape[0], *albedo.shape))
    image_emb = embed(params, draw(key_own, own, coverage, alphas))
    text_emb = clip.l2_normalize(model.get_text_features(ids, params=params))
    prompt_emb, attribute_emb = text_emb[:num_prompts], text_emb[num_prompts:]
    scale = params['logit_scale']
    loss = contrastive_loss(image_emb, prompt_emb, jnp.eye(num_prompts), scale)
    if attribute_weight > 0:
      loss += attribute_weight * contrastive_loss(image_emb, attribute_emb, membership, scale)
    if compose_weight > 0:
      loss += compose_weight * compose_loss(prompt_emb, attribute_emb, membership)
    if recolor_weight > 0:
      coverage, alphas = batch['recolor_coverage'], batch['recolor_alphas']
      colors = recolor(key_color, arcs, coverage.shape[:2])
      recolored = draw(key_recolored, colors, coverage, alphas)
      loss += recolor_weight * contrastive_loss(embed(params, recolored),
                                                attribute_emb[num_colors:],
                                                membership[:, num_colors:], scale)
    return loss

  return ema_step.make_ema_step(loss_fn, optimizer, ema_decay)


def make_optimizer(lr, steps, weight_decay):
  """AdamW under warm-up and cosine decay, with weight decay on matrices only."""
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(200, steps // 10 + 1), steps,
                                                lr * 0.02)
  decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, b2=0.98, weight_decay=weight_decay, mask=decay_mask))


def heldout_r_precision(model, params, tokenizer, images, prompt_index, prompts):
  """R-precision of renders of `prompts` (indices into them), retrieving among world.PROMPTS.

  Returns:
    (float overall, dict prompt -> float R-precision of its renders).
  """
  frozen = clip.Clip(params=params, module=model, tokenizer=tokenizer,
                     image_size=images.shape[1])
  true_index = np.asarray([world.PROMPTS.index(p) for p in prompts])[prompt_index]
  image_emb = jax.jit(clip.Clip.embed_images)(frozen, images)
  ranks = np.asarray(clip.retrieval_ranks(image_emb, frozen.embed_text(world.PROMPTS),
                                          true_index))
  per_prompt = {p: float(np.mean(ranks[prompt_index == i] == 0)) for i, p in enumerate(prompts)}
  return float(np.mean(ranks == 0)), per_prompt


def save(folder, model, params, image_size, info):
  """Writes the model, the image processor config and training.json (the tokenizer is there)."""
  import transformers  # pylint: disable=g-import-not-at-top
  model.save_pretrained(str(folder), params=jax.device_get(params))
  transformers.CLIPImageProcessor(
      size={'shortest_edge': image_size}, crop_size={'height': image_size, 'width': image_size},
      image_mean=list(clip.OPENAI_MEAN), image_std=list(clip.OPENAI_STD)).save_pretrained(
          str(folder))
  (folder / 'training.json').write_text(json.dumps(info, indent=2))


def train(out, *, steps, groups, views_per_prompt, eval_views, resolution, patch_size, lr,
          weight_decay, attribute_weight, recolor_weight, recolor_groups, ema_decay, seed,
          eval_every, augmentation, target_jitter=0.0, compose_weight=0.0):
  """Renders the data, trains, evaluates on HELDOUT and saves to `out`; returns the info dict."""
  args = {k: v for k, v in locals().items() if k not in ('out', 'augmentation')}
  args['augmentation'] = dataclasses.asdict(augmentation)
  start = time.time()
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  key_data, key_eval, key_train = jax.random.split(jax.random.key(seed), 3)
  prompts = world.TRAIN_PROMPTS
  print(f'rendering {len(prompts)} prompts x {views_per_prompt} views and '
        f'{len(world.HELDOUT)} held-out x {eval_views} at {resolution}px', file=sys.stderr)
  images, alphas, _, _ = world.render_dataset(key_data, prompts, views_per_prompt, resolution,
                                              target_jitter=target_jitter)
  images = images.reshape(len(prompts), views_per_prompt, resolution, resolution, 3)
  alphas = alphas.reshape(len(prompts), views_per_prompt, resolution, resolution)
  coverage = shading_coverage(images, alphas, prompts)
  del images  # reshade draws them again from their coverage.
  albedo = np.asarray([world.COLORS[world.parse_prompt(p)[0]] for p in prompts], np.float32)
  eval_images, _, _, eval_index = world.render_dataset(key_eval, world.HELDOUT, eval_views,
                                                       resolution)
  model, tokenizer = build_model(out, resolution, patch_size, seed)
  ids = train_prior.tokenize(tokenizer, prompts + attribute_captions())
  optimizer = make_optimizer(lr, steps, weight_decay)
  params = model.params
  opt_state = optimizer.init(params)
  ema = jax.tree.map(jnp.copy, params)
  step_fn = make_train_step(model, optimizer, jnp.asarray(attribute_membership(prompts)),
                            jnp.asarray(recolor_arcs(prompts)), jnp.asarray(albedo),
                            attribute_weight, recolor_weight, ema_decay, augmentation,
                            compose_weight)
  rng = np.random.default_rng(seed)
  losses, history = [], []
  bar = tqdm.tqdm(range(steps), desc='toy clip', dynamic_ncols=True, file=sys.stderr)
  for step in bar:
    every = np.arange(len(prompts))[None, :]
    views = rng.integers(0, views_per_prompt, (groups + recolor_groups, len(prompts)))
    own, other = views[:groups], views[groups:]
    batch = dict(coverage=coverage[every, own], alphas=alphas[every, own],  # [G, P, H, W]
                 recolor_coverage=coverage[every, other], recolor_alphas=alphas[every, other])
    params, ema, opt_state, loss = step_fn(params, ema, opt_state, batch, ids,
                                           jax.random.fold_in(key_train, step), step)
    losses.append(float(loss))
    if (step + 1) % 50 == 0:
      bar.set_postfix(loss=f'{np.mean(losses[-100:]):.4f}')
    if (step + 1) % eval_every == 0 or step + 1 == steps:
      r_prec, per_prompt = heldout_r_precision(model, ema, tokenizer, eval_images, eval_index,
                                               world.HELDOUT)
      history.append(dict(step=step + 1, loss=round(float(np.mean(losses[-100:])), 5),
                          heldout_r_precision=r_prec, heldout_per_prompt=per_prompt))
      bar.write(f'step {step + 1}: loss {history[-1]["loss"]:.4f}, held-out R-precision '
                f'{r_prec:.3f} ({", ".join(f"{v:.2f}" for v in per_prompt.values())})',
                file=sys.stderr)
  info = dict(
      steps=steps, final_loss=float(np.mean(losses[-100:])),
      heldout_r_precision=history[-1]['heldout_r_precision'],
      heldout_per_prompt=history[-1]['heldout_per_prompt'],
      heldout_views_per_prompt=eval_views, retrieval_set='world.PROMPTS (30)',
      logit_scale=float(ema['logit_scale']), seconds=round(time.time() - start, 1),
      seed=seed, args=args, train_prompts=list(prompts), heldout=list(world.HELDOUT),
      history=history)
  save(out, model, ema, resolution, info)
  return info


def main(argv=None):
  host_memory.keep_freed_memory()  # Before JAX's first computation.
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='output folder (transformers CLIP layout)')
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--groups', type=int, default=4,
                      help='groups per batch, each every training prompt once')
  parser.add_argument('--views_per_prompt', type=int, default=256)
  parser.add_argument('--eval_views', type=int, default=40,
                      help='renders per held-out prompt for the final R-precision')
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--patch_size', type=int, default=8)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--weight_decay', type=float, default=0.05)
  parser.add_argument('--attribute_weight', type=float, default=0.5,
                      help='weight of the single-attribute captions ("red", "a cube") loss')
  parser.add_argument('--compose_weight', type=float, default=0.0,
                      help='weight of the pull of each prompt\'s text embedding towards the '
                      'sum of its colour\'s and shape\'s')
  parser.add_argument('--recolor_weight', type=float, default=4.0,
                      help='weight of the shape captions\' loss on recoloured renders')
  parser.add_argument('--recolor_groups', type=int, default=4,
                      help='groups of recoloured renders per batch')
  parser.add_argument('--ema_decay', type=float, default=0.995)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--eval_every', type=int, default=250)
  parser.add_argument('--target_jitter', type=float, default=0.0,
                      help='training cameras look at a point up to this far from the origin '
                      'on each axis (world units; the held-out measure stays centred)')
  defaults = Augmentation()
  parser.add_argument('--zoom', type=float, default=defaults.zoom,
                      help='augmentation: magnification up to 1 + zoom either way')
  parser.add_argument('--shift_px', type=float, default=defaults.shift_px,
                      help='augmentation: shift up to this many pixels each way')
  parser.add_argument('--blur_px', type=float, default=defaults.blur_px,
                      help='augmentation: Gaussian blur width up to this many pixels')
  parser.add_argument('--noise', type=float, default=defaults.noise,
                      help='augmentation: pixel noise standard deviation up to this')
  parser.add_argument('--gamma', type=float, default=defaults.gamma,
                      help='augmentation: shading exponent in [1 / gamma, gamma]')
  parser.add_argument('--saturation', type=float, default=defaults.saturation,
                      help='augmentation: object colours\' contrast stretched by up to this')
  args = vars(parser.parse_args(argv))
  if args['target_jitter'] < 0 or args['compose_weight'] < 0 or args['saturation'] < 1:
    parser.error(f'--target_jitter={args["target_jitter"]} and --compose_weight='
                 f'{args["compose_weight"]} must be >= 0 and --saturation={args["saturation"]} '
                 '>= 1 (1 leaves the colours as they are)')
  out = args.pop('out')
  augmentation = Augmentation(**{f.name: args.pop(f.name)
                                 for f in dataclasses.fields(Augmentation)})
  info = train(out, augmentation=augmentation, **args)
  print(f'saved {out}: {info["steps"]} steps, final loss {info["final_loss"]:.4f}, '
        f'held-out R-precision {info["heldout_r_precision"]:.3f}, {info["seconds"]:.0f} s')


if __name__ == '__main__':
  main()
