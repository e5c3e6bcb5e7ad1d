"""Pure training steps: classic NeRF's photometric step and DreamFusion's SDS step.

Each step is `(state, ...inputs) -> (state, metrics)` with every hyperparameter an explicit
argument (bound with functools.partial by build.py, then jitted). Randomness comes only from
fold_in(state.key, state.step), so a run is reproducible bit for bit and resumes exactly.

Letters: B views, H, W render size, R rays, S samples per ray.
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dreamfusion_jax import augment
from dreamfusion_jax import camera
from dreamfusion_jax import guidance
from dreamfusion_jax import losses
from dreamfusion_jax import nerf
from dreamfusion_jax import perpneg
from dreamfusion_jax import render
from dreamfusion_jax import schedules
from dreamfusion_jax import shading

# Side streams: an optional loss draws from a key of its own, folded in with these numbers, so
# that switching it on leaves every other draw of the step as it was.
CLIP_STREAM = 2  # fold_in(step key, CLIP_STREAM): Dream Fields' augmentations.
SMOOTHNESS_STREAM = 1  # fold_in(key_render, SMOOTHNESS_STREAM): the smoothness offsets.


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree.

  Attributes:
    step: int32 scalar, steps taken.
    params: the trained variables (for DreamFusion {'nerf': ..., 'background': ...}).
    opt_state: the Optax state.
    key: the run's base PRNG key; step keys are fold_in(key, step).
  """
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  key: jax.Array


@flax.struct.dataclass
class PosedPixels:
  """Every training pixel as a ray with its colour.

  Attributes:
    rays: camera.Rays [N].
    rgb: float32 [N, 3] target colours.
  """
  rays: camera.Rays
  rgb: jax.Array


def photometric_step(state, pixels, *, model, optimizer, render_fn, batch_size, background,
                     coarse_weight, shard=None):
  """One classic-NeRF step: a random batch of pixels, render, MSE, Adam.

  Args:
    state: TrainState.
    pixels: PosedPixels [N], all training pixels.
    model: the NeRF module.
    optimizer: an optax.GradientTransformation.
    render_fn: render.render_rays with its sampling settings bound.
    batch_size: int rays per step.
    background: float32 [3] background colour of the images.
    coarse_weight: weight of every level but the last in the loss (mip-NeRF: 0.1).
    shard: None, or a function that splits an array's leading axis over the devices
      (parallel.constrain_fn): each device renders its share of the rays.

  Returns:
    The new TrainState and a dict of float32 scalar metrics (loss, psnr of the last level).
  """
  key = jax.random.fold_in(state.key, state.step)
  key_batch, key_render = jax.random.split(key)
  index = jax.random.randint(key_batch, (batch_size,), 0, pixels.rgb.shape[0])
  batch = jax.tree.map(lambda x: x[index], pixels)
  if shard is not None:
    batch = jax.tree.map(shard, batch)
  bg = jnp.broadcast_to(background, batch.rgb.shape)

  def loss_fn(params):
    field = nerf.field_fn(model, params, with_normals=False)
    outputs = render_fn(key_render, field, batch.rays, background=bg, randomized=True)
    mses = [jnp.mean((out.rgb - batch.rgb)**2) for out in outputs]
    loss = mses[-1] + coarse_weight * sum(mses[:-1])
    return loss, mses[-1]

  (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, {'loss': loss, 'psnr': losses.psnr(mse)}


@dataclasses.dataclass(frozen=True)
class SDSSettings:
  """The static hyperparameters of DreamFusion's step (built from the config by build.py).

  Attributes:
    batch_size: views per step B.
    height, width: render size.
    camera_ranges: keyword arguments of camera.sample_cameras (ranges of elevation, azimuth,
      distance and focal), as a tuple of (name, value) pairs.
    shading_modes: indices into shading.MODES drawn after the warm-up.
    shading_probs: their probabilities.
    warmup_mode: the shading mode index during the first warmup_steps.
    warmup_steps: steps of warm-up shading (paper: albedo only).
    light_color, ambient: Lambertian light colour l_rho and ambient l_a.
    t_range: (t_min, t_max) of the SDS noise level at step 0.
    t_max_schedule: (start, end, num_steps) of the linear schedule of t_max (start = end: the
      paper's constant range; a falling t_max refines detail late in the run).
    weighting: guidance.WEIGHTINGS entry.
    guidance_scale: (start, end, num_steps) of the linear guidance-scale schedule.
    orientation_weight: (start, end, num_steps) of the orientation-loss weight schedule.
    opacity_weight: weight of the opacity penalty.
    entropy_weight: weight of the opacity entropy penalty (0: the paper's losses only).
    smoothness_weight: weight of the normal smoothness penalty (0: the paper's losses only).
    smoothness_radius: standard deviation of the offset of the perturbed surface points.
    sds_weight: weight of the SDS loss (0: no diffusion model, e.g. Dream Fields).
    clip_weight: weight of Dream Fields' CLIP loss (0: none; both > 0 combines them, as
      Dreamfields-3D offers).
    clip_augmentations: augmented copies A of each render shown to CLIP.
    clip_min_scale: smallest random crop, as a share of the render's side.
    clip_blur_sigma: the random background's blur sigma ~ U(0, this) in pixels.
    transmittance_weight: weight of Dream Fields' transmittance loss (0: none).
    transmittance_target: (start, end, num_steps) of the target-transmittance schedule.
    transmittance_schedule: 'linear' in the transmittance, or 'exponential': Dream Fields'
      target opacity 1 - start -> 1 - end, exponential over num_steps, times
      opacity_target_scale and capped at 1 (lib.py's focal and radius factor).
    opacity_target_scale: that factor (1: none).
    clip_max_scale: largest random crop, as a share of the render's side.
    clip_background_after_crop: random backgrounds made at CLIP's size after the crop (Dream
      Fields' augment.py) rather than at the render's before it.
    clip_blur_radius: the background blur's radius in pixels (None: a third of its side).
    remat_chunks: 0 or 1 renders all rays at once; N > 1 renders them in N chunks recomputed in
      the backward pass (remat_chunks), for memory of about one chunk's NeRF activations; -1
      (automatic, resolved by build.fitted_step before a run's first step) renders them at once.
    parallel_chunks: 1 renders the rays (of each remat chunk) as one batch; N > 1 as N
      independent groups (independent_chunks), which XLA:CPU runs concurrently on its threads.
    entropy_ramp_steps: 0 keeps entropy_weight constant; N > 0 ramps it linearly from 0 over N
      steps (stable-dreamfusion's min(1, 2 step / iters) with N = iters / 2).
    grad_clip: the optimiser's global-norm clip (0: none), reported as the metric `clipped`.
    perp_neg: () for DreamFusion's view prompts, or Perp-Neg's decay functions ((a, b, c) of
      f_fs, f_sb, f_fsb; perpneg.view_weights): positive and negative view prompts per camera.
  """
  batch_size: int
  height: int
  width: int
  camera_ranges: tuple
  shading_modes: tuple
  shading_probs: tuple
  warmup_mode: int
  warmup_steps: int
  light_color: float
  ambient: float
  t_range: tuple
  t_max_schedule: tuple
  weighting: str
  guidance_scale: tuple
  orientation_weight: tuple
  opacity_weight: float
  entropy_weight: float
  smoothness_weight: float
  smoothness_radius: float
  sds_weight: float = 1.0
  clip_weight: float = 0.0
  clip_augmentations: int = 8
  clip_min_scale: float = 0.8
  clip_blur_sigma: float = 10.0
  transmittance_weight: float = 0.0
  transmittance_target: tuple = (0.5, 0.9, 500)
  remat_chunks: int = 0
  parallel_chunks: int = 1
  entropy_ramp_steps: int = 0
  grad_clip: float = 0.0
  transmittance_schedule: str = 'linear'
  opacity_target_scale: float = 1.0
  clip_max_scale: float = 1.0
  clip_background_after_crop: bool = False
  clip_blur_radius: Any = None
  perp_neg: tuple = ()


def _schedule(step, spec):
  start, end, num_steps = spec
  return schedules.linear(step, start=start, end=end, num_steps=num_steps)


def sample_shading(key, step, settings):
  """Shading mode per view, int32 [B]: the warm-up mode, then a random draw per view."""
  probs = jnp.asarray(settings.shading_probs, jnp.float32)
  draw = jax.random.choice(key, jnp.asarray(settings.shading_modes, jnp.int32),
                           (settings.batch_size,), p=probs)
  return jnp.where(step < settings.warmup_steps, settings.warmup_mode, draw).astype(jnp.int32)


def render_views(key, params, cameras, modes, lights, *, model, background_model, render_fn,
                 settings, randomized=True, shard=None):
  """Shaded renders of B cameras.

  Args:
    key: PRNG key for the samples.
    params: {'nerf': ..., 'background': ...}.
    cameras: camera.Cameras [B].
    modes: int32 [B] shading modes.
    lights: float32 [B, 3] point-light positions.
    model, background_model: the NeRF and background modules.
    render_fn: render.render_rays with its sampling settings bound.
    settings: SDSSettings (render size, light colour, ambient).
    randomized: jitter the samples.
    shard: None, or the function that splits the rays over the devices.

  Returns:
    rgb float32 [B, H, W, 3] and the last level's RenderOutput over the R = B H W rays.
  """
  b, h, w = settings.batch_size, settings.height, settings.width
  rays = camera.generate_rays(cameras.c2w, cameras.focal, h, w).reshape(-1)
  if shard is not None:
    rays = jax.tree.map(shard, rays)
  background = render.render_background(params, rays, background_model)
  field = nerf.field_fn(model, params['nerf'], with_normals=True)
  per_ray = lambda x: jnp.repeat(x, h * w, axis=0)  # [R, ...]: each view's value per ray.

  def render_chunk(key, rays, background, modes, lights):
    shade = functools.partial(render.shade_samples, modes=modes[:, None, None], lights=lights[:, None],
                              light_color=settings.light_color, ambient=settings.ambient)
    return render_fn(key, field, rays, background=background, shade=shade,
                     randomized=randomized)[-1]

  inputs = (rays, background, per_ray(modes), per_ray(lights))
  if settings.parallel_chunks > 1:
    render_chunk = render.independent_chunks(render_chunk, settings.parallel_chunks)
  if settings.remat_chunks > 1:
    out = render.remat_chunks(render_chunk, key, inputs, settings.remat_chunks)
  else:
    out = render_chunk(key, *inputs)
  return out.rgb.reshape(b, h, w, 3), out, rays


def surface_smoothness(key, params, out, rays, *, model, radius):
  """losses.normal_smoothness at each ray's expected surface point and a jittered copy of it.

  Args:
    key: PRNG key for the offsets.
    params: the NeRF's variables.
    out: the RenderOutput of the rays (depth and opacity, gradients stopped).
    rays: the rendered Rays [R].
    model: the NeRF module.
    radius: standard deviation of the Gaussian offset (world units).

  Returns:
    float32 scalar.
  """
  points = jax.lax.stop_gradient(rays.origins + rays.directions * out.depth[:, None])
  moved = points + radius * jax.random.normal(key, points.shape, points.dtype)
  normals = nerf.normals_at(model, params, jnp.concatenate([points, moved], axis=0))
  r = points.shape[0]
  return losses.normal_smoothness(normals[:r], normals[r:], out.acc)


def clip_guidance(key, rgb, acc, background, clip_model, clip_text, labels, settings):
  """Dream Fields' CLIP loss of B renders: random backgrounds and crops, then -cos to the caption.

  Args:
    key: PRNG key of the augmentations.
    rgb: float32 [B, H, W, 3] renders composited over `background`.
    acc: float32 [B, H, W] their opacity.
    background: float32 [B, H, W, 3] what they were composited over (removed here).
    clip_model: a frozen clip.Clip.
    clip_text: float32 [4, D] normalised embeddings of the view-dependent captions.
    labels: int32 [B] view labels of the cameras.
    settings: SDSSettings (the clip_* fields).

  Returns:
    float32 scalar.
  """
  foreground = rgb - (1.0 - acc[..., None]) * background
  images = augment.augment(key, foreground, acc, num=settings.clip_augmentations,
                           size=clip_model.image_size, min_scale=settings.clip_min_scale,
                           max_scale=settings.clip_max_scale,
                           max_blur_sigma=settings.clip_blur_sigma,
                           background_after_crop=settings.clip_background_after_crop,
                           blur_radius=settings.clip_blur_radius)
  text = jnp.repeat(jnp.take(clip_text, labels, axis=0), settings.clip_augmentations, axis=0)
  return guidance.clip_loss(clip_model, images, text)


def transmittance_target(step, settings):
  """The target transmittance of Dream Fields' loss at `step` (float32 scalar)."""
  if settings.transmittance_schedule != 'exponential':
    return _schedule(step, settings.transmittance_target)
  start, end, num_steps = settings.transmittance_target
  opacity = schedules.log_linear_warmup(step, init=1.0 - start, final=1.0 - end,
                                        num_steps=num_steps)
  return 1.0 - jnp.minimum(1.0, settings.opacity_target_scale * opacity)


def sample_views(key, step, settings):
  """The step's random cameras [B], point lights float32 [B, 3], shading modes and view labels.

  Args:
    key: the step's key (fold_in(state.key, state.step)).
    step: int32 scalar, the step (shading warm-up).
    settings: SDSSettings.

  Returns:
    (camera.Cameras [B], lights float32 [B, 3], modes int32 [B], labels int32 [B]) and the keys
    (key_render, key_sds, key_clip) of the rest of the step.
  """
  key_camera, key_light, key_shading, key_render, key_sds = jax.random.split(key, 5)
  key_clip = jax.random.fold_in(key, CLIP_STREAM)  # The five above match a run without CLIP.
  cameras = camera.sample_cameras(key_camera, settings.batch_size, width=settings.width,
                                  **dict(settings.camera_ranges))
  positions = cameras.c2w[:, :3, 3]
  lights = jax.vmap(shading.sample_light)(jax.random.split(key_light, settings.batch_size),
                                          positions)
  modes = sample_shading(key_shading, step, settings)
  labels = camera.view_labels(cameras.elevation_deg, cameras.azimuth_deg)
  return (cameras, lights, modes, labels), (key_render, key_sds, key_clip)


def guarded_update(state, loss, grads, optimizer):
  """Optax update that leaves params and optimiser state unchanged if loss or gradient is not finite.

  Returns:
    (new TrainState with step + 1, float32 scalar global gradient norm, bool scalar finite).
  """
  grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                            opt_state=keep(opt_state, state.opt_state))
  return new_state, grad_norm, finite


def dreamfusion_step(state, diffusion, text, clip_model=None, clip_text=None, *, model,
                     background_model, optimizer, render_fn, settings, shard=None):
  """One step: random cameras and shading, render, SDS and/or CLIP + regularisers, Optax.

  DreamFusion (settings.sds_weight > 0), Dream Fields (settings.clip_weight > 0, with
  diffusion None) or both at once with their weights.

  A step whose loss or gradient is not finite leaves params and optimiser state unchanged
  (only the step advances, so the next step draws new randomness) and reports skipped = 1.

  Args:
    state: TrainState with params {'nerf', 'background'}.
    diffusion: guidance.Diffusion (frozen; a pytree argument, never donated), or None when
      settings.sds_weight is 0.
    text: guidance.TextEmbeddings [4, L, D] of the view-dependent prompts (VIEW_NAMES order),
      or None with diffusion.
    clip_model: a frozen clip.Clip when settings.clip_weight > 0.
    clip_text: float32 [4, D] its embeddings of the view-dependent prompts.
    model, background_model: the NeRF and background modules.
    optimizer: optax.GradientTransformation.
    render_fn: render.render_rays with its sampling settings bound.
    settings: SDSSettings.
    shard: None, or a function that splits an array's leading axis over the devices
      (parallel.constrain_fn): the B H W rays and the B renders are split, so each device
      renders its views and runs SDS on them, and the gradient of the replicated parameters
      becomes the all-reduced sum over devices. Every draw is made from the replicated key, so
      the step computes the same values on any number of devices.

  Returns:
    The new TrainState and a dict of float32 scalar metrics.
  """
  key = jax.random.fold_in(state.key, state.step)
  views, keys = sample_views(key, state.step, settings)
  scale = _schedule(state.step, settings.guidance_scale)
  orientation_weight = _schedule(state.step, settings.orientation_weight)
  entropy_weight = settings.entropy_weight
  if settings.entropy_ramp_steps:
    entropy_weight *= jnp.minimum(1.0, state.step / settings.entropy_ramp_steps)
  t_range = (settings.t_range[0], _schedule(state.step, settings.t_max_schedule))
  loss_fn = functools.partial(
      _dreamfusion_loss, step=state.step, views=views, keys=keys, diffusion=diffusion,
      text=text, clip_model=clip_model, clip_text=clip_text, scale=scale, t_range=t_range,
      orientation_weight=orientation_weight, entropy_weight=entropy_weight, model=model,
      background_model=background_model, render_fn=render_fn, settings=settings, shard=shard)
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state, grad_norm, finite = guarded_update(state, loss, grads, optimizer)
  clipped = (grad_norm > settings.grad_clip) if settings.grad_clip > 0 else jnp.zeros((), bool)
  metrics.update(loss=loss, grad_norm=grad_norm, skipped=1.0 - finite.astype(jnp.float32),
                 clipped=(clipped & finite).astype(jnp.float32),
                 guidance_scale=jnp.asarray(scale, jnp.float32),
                 orientation_weight=jnp.asarray(orientation_weight, jnp.float32),
                 entropy_weight=jnp.asarray(entropy_weight, jnp.float32),
                 t_max=jnp.asarray(t_range[1], jnp.float32))
  return new_state, metrics


def _dreamfusion_loss(params, *, step, views, keys, diffusion, text, clip_model, clip_text,
                      scale, t_range, orientation_weight, entropy_weight, model,
                      background_model, render_fn, settings, shard):
  """The weighted loss of dreamfusion_step and its metrics, as a function of the params."""
  cameras, lights, modes, labels = views
  key_render, key_sds, key_clip = keys
  rgb, out, rays = render_views(key_render, params, cameras, modes, lights, model=model,
                                background_model=background_model, render_fn=render_fn,
                                settings=settings, shard=shard)
  images = rgb if shard is None else shard(rgb)
  orient = losses.orientation(out.weights, out.sample_normals, rays.directions)
  opacity = losses.opacity(out.acc)
  entropy = losses.opacity_entropy(out.acc)
  total = (orientation_weight * orient + settings.opacity_weight * opacity
           + entropy_weight * entropy)
  metrics = dict(orientation=orient, opacity=opacity, entropy=entropy, acc=jnp.mean(out.acc))
  if settings.sds_weight:
    if diffusion.resolution != settings.height:
      images = guidance.resize_images(images, diffusion.resolution)
    if settings.perp_neg:
      emb = perpneg.view_embeddings(text, cameras.elevation_deg, cameras.azimuth_deg,
                                    settings.perp_neg)
    else:
      emb = text.select(labels)
    sds, aux = diffusion.sds_loss(images, emb, key_sds, scale, t_range, settings.weighting)
    total = total + settings.sds_weight * sds
    metrics.update(sds=sds, t=jnp.mean(aux['t']))
  if settings.clip_weight:
    b, h, w = settings.batch_size, settings.height, settings.width
    background = render.render_background(params, rays, background_model).reshape(b, h, w, 3)
    clip = clip_guidance(key_clip, rgb, out.acc.reshape(b, h, w), background, clip_model,
                         clip_text, labels, settings)
    total = total + settings.clip_weight * clip
    metrics['clip'] = clip
  if settings.transmittance_weight:
    target = transmittance_target(step, settings)
    trans = losses.transmittance(out.acc, target)
    total = total + settings.transmittance_weight * trans
    metrics.update(transmittance=trans, transmittance_target=jnp.asarray(target, jnp.float32))
  if settings.smoothness_weight:  # Its own key, so the other draws match a run without it.
    smooth = surface_smoothness(jax.random.fold_in(key_render, SMOOTHNESS_STREAM),
                                params['nerf'], out, rays, model=model,
                                radius=settings.smoothness_radius)
    total = total + settings.smoothness_weight * smooth
    metrics['smoothness'] = smooth
  return total, metrics
