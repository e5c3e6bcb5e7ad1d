"""DreamFusion's training step written plainly in PyTorch: the reference the JAX step is timed
against (benchmarks/torch_step.py, benchmarks/run.py) and checked against
(tests/torch_step_test.py).

The step of steps.dreamfusion_step (JAX, jitted) as a PyTorch user would write it: an nn.Module
NeRF whose normals come from torch.autograd.grad(create_graph=True), diffusers' torch
UNet2DConditionModel and AutoencoderKL built from their configs with random weights,
torch.optim.Adam after clip_grad_norm_. Each step does the JAX step's work: B random cameras,
point lights and shading modes; mip-NeRF cone rays restricted to the scene sphere; hierarchical
sampling with the NeRF and its normals at every level, composited over the learned background;
the orientation and opacity losses; a bilinear resize to the model's resolution; SDS with the
conditional and unconditional UNet passes in one call; backward, clipping and Adam. With
device='cuda' every tensor, the generator of the draws and the modules live on the GPU (torch's
default device is set around each step). The NeRF, cameras and renderer are in torch_render.py.

Imports torch: only tests and benchmarks import this module, never the package itself.

Letters: B views, H, W render size, R = B H W rays, S samples per ray, h, w, C the model's input
(latent or pixel) size, L tokens, D text embedding width.
"""

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from dreamfusion_jax.testing import bench
from dreamfusion_jax.testing import tiny_models
from dreamfusion_jax.testing import torch_render

# Stable Diffusion's DDPM schedule (also the tiny test models').
_MODES = torch_render.SHADING_MODES
DEFAULT_SCHEDULER = {'num_train_timesteps': 1000, 'beta_start': 0.00085, 'beta_end': 0.012,
                     'beta_schedule': 'scaled_linear', 'prediction_type': 'epsilon'}


# The spec: everything the step needs, read once from the config.


def _pair(x):
  return tuple(float(v) for v in x)


# The optimiser the PyTorch step implements (torch.optim.Adam), as dotted config overrides: the
# benchmarks compare both sides with it, since PyTorch has no Adan (configs/dreamfusion.py's).
ADAM = {'optim.name': 'adam', 'optim.beta1': 0.9, 'optim.beta2': 0.99, 'optim.eps': 1e-15,
        'optim.weight_decay': 0.0}


def _check_supported(config):
  """Raises ValueError for config features the PyTorch step does not implement."""
  unsupported = {
      'nerf.encoding != ipe': config.nerf.encoding != 'ipe',
      'nerf.dir_max_deg > 0': config.nerf.dir_max_deg > 0,
      'loss.smoothness_weight > 0': config.loss.get('smoothness_weight', 0.0) > 0,
      'nerf.normal_eps > 0': config.nerf.get('normal_eps', 0.0) > 0,
      'camera.uniform_sphere_rate > 0': config.camera.get('uniform_sphere_rate', 0.0) > 0,
      'loss.transmittance_weight > 0': config.loss.get('transmittance_weight', 0.0) > 0,
      'clip.weight > 0': 'clip' in config and config.clip.weight > 0,
      'optim.name != adam (override with torch_reference.ADAM)':
          config.optim.get('name', 'adam') != 'adam',
  }
  bad = [name for name, is_set in unsupported.items() if is_set]
  if bad:
    raise ValueError(f'the PyTorch step does not implement {", ".join(bad)}')


def model_resolution(unet_config, vae_config):
  """The image size the diffusion model takes: the UNet's, times the VAE's downsampling."""
  size = int(unet_config['sample_size'])
  if vae_config is None:
    return size
  return size * 2**(len(vae_config['block_out_channels']) - 1)


def make_spec(config, unet_config, vae_config, text_width, text_tokens, scheduler=None):
  """A plain dict of everything the torch step needs, read from a DreamFusion config.

  Args:
    config: ml_collections DreamFusion config (configs/dreamfusion.py): config.render.*,
      config.nerf.*, config.background.*, config.camera.*, config.shading.*, config.loss.*,
      config.optim.*, config.batch_size, config.num_steps, config.guidance_scale(_end),
      config.t_range, config.t_max_end, config.t_anneal_steps, config.weighting,
      config.sds_weight.
    unet_config: dict of diffusers.UNet2DConditionModel arguments.
    vae_config: dict of diffusers.AutoencoderKL arguments, or None for a pixel-space model.
    text_width: int, text embedding width D (the UNet's cross_attention_dim).
    text_tokens: int, text embedding length L.
    scheduler: dict of the DDPM scheduler config (None: Stable Diffusion's).

  Returns:
    dict of plain Python values (tuples, floats, ints, strings and the two model configs).
  """
  _check_supported(config)
  rend, cam, shade, loss, optim = (config.render, config.camera, config.shading, config.loss,
                                   config.optim)
  t_range = _pair(config.t_range)
  num_steps = int(config.num_steps)
  return dict(
      batch_size=int(config.batch_size),
      num_steps=num_steps,
      render=dict(height=int(rend.height), width=int(rend.width), near=float(rend.near),
                  far=float(rend.far), scene_radius=float(rend.scene_radius),
                  num_samples=tuple(int(n) for n in rend.num_samples)),
      nerf=dict(width=int(config.nerf.width), num_blocks=int(config.nerf.num_blocks),
                min_deg=int(config.nerf.min_deg), max_deg=int(config.nerf.max_deg),
                scene_radius=float(config.nerf.scene_radius),
                density_activation=str(config.nerf.density_activation),
                density_bias=float(config.nerf.density_bias),
                blob_density=float(config.nerf.blob_density),
                blob_radius=float(config.nerf.blob_radius)),
      background=dict(width=int(config.background.width),
                      max_deg=int(config.background.max_deg),
                      color=_pair(config.background.color)),
      camera=dict(elevation_range_deg=_pair(cam.elevation_range_deg),
                  azimuth_range_deg=_pair(cam.azimuth_range_deg),
                  distance_range=_pair(cam.distance_range),
                  focal_range=_pair(cam.focal_range)),
      shading=dict(modes=tuple(_MODES.index(m) for m in shade.modes),
                   probs=_pair(shade.probs), warmup_mode=_MODES.index(shade.warmup_mode),
                   warmup_steps=int(shade.warmup_steps), light_color=float(shade.light_color),
                   ambient=float(shade.ambient)),
      loss=dict(orientation_weight=(float(loss.orientation_weight),
                                    float(loss.get('orientation_weight_end',
                                                   loss.orientation_weight)),
                                    int(loss.get('orientation_anneal_steps', 1))),
                opacity_weight=float(loss.opacity_weight),
                entropy_weight=float(loss.get('entropy_weight', 0.0)),
                entropy_ramp_steps=int(loss.get('entropy_ramp_steps', 0))),
      optim=dict(lr_init=float(optim.lr_init), lr_final=float(optim.lr_final),
                 warmup_steps=int(optim.warmup_steps), grad_clip=float(optim.grad_clip),
                 beta1=float(optim.beta1), beta2=float(optim.beta2), eps=float(optim.eps)),
      guidance_scale=(float(config.guidance_scale),
                      float(config.get('guidance_scale_end', config.guidance_scale)), num_steps),
      t_range=t_range,
      t_max_schedule=(t_range[1], float(config.get('t_max_end', t_range[1])),
                      int(config.get('t_anneal_steps', num_steps))),
      weighting=str(config.get('weighting', 'sigma2')),
      sds_weight=float(config.get('sds_weight', 1.0)),
      unet=dict(unet_config),
      vae=None if vae_config is None else dict(vae_config),
      resolution=model_resolution(unet_config, vae_config),
      text_width=int(text_width),
      text_tokens=int(text_tokens),
      scheduler=dict(scheduler or DEFAULT_SCHEDULER))


def model_spec(config, model):
  """make_spec for a model named as in bench.MODELS ('tiny-latent', 'tiny-pixel', 'sd21')."""
  if model == 'sd21':
    return make_spec(config, bench.SD21_UNET, bench.SD21_VAE, bench.SD21_TEXT_WIDTH,
                     bench.SD21_TOKENS)
  pixel = model == 'tiny-pixel'
  return make_spec(config, tiny_models.unet_config(pixel),
                   None if pixel else tiny_models.vae_config(), tiny_models.TEXT_WIDTH,
                   tiny_models.TOKEN_LENGTH, scheduler=tiny_models.SCHEDULER)

# Schedules (schedules.py).


def linear_schedule(step, start, end, num_steps):
  """Linear from `start` at step 0 to `end` at `num_steps`, then constant."""
  progress = min(max(step / num_steps, 0.0), 1.0)
  return start + (end - start) * progress


def learning_rate(step, optim, num_steps, warmup_multiplier=0.01):
  """mip-NeRF's log-linear learning rate with a sine warm-up (schedules.log_linear_warmup)."""
  progress = min(max(step / num_steps, 0.0), 1.0)
  value = math.exp(math.log(optim['lr_init']) * (1.0 - progress)
                   + math.log(optim['lr_final']) * progress)
  if optim['warmup_steps'] > 0:
    ramp = min(max(step / optim['warmup_steps'], 0.0), 1.0)
    value *= warmup_multiplier + (1.0 - warmup_multiplier) * math.sin(0.5 * math.pi * ramp)
  return value


def alphas_cumprod(scheduler):
  """abar_t of a 'linear' or 'scaled_linear' DDPM schedule, float32 [T]."""
  steps = scheduler.get('num_train_timesteps', 1000)
  start, end = scheduler.get('beta_start', 1e-4), scheduler.get('beta_end', 0.02)
  kind = scheduler.get('beta_schedule', 'linear')
  if kind == 'linear':
    betas = np.linspace(start, end, steps, dtype=np.float64)
  elif kind == 'scaled_linear':
    betas = np.linspace(start**0.5, end**0.5, steps, dtype=np.float64)**2
  else:
    raise ValueError(f'beta_schedule={kind!r}: only linear and scaled_linear are implemented')
  return torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)


# Losses (losses.py) and guidance (guidance.py).


def orientation_loss(weights, normals, directions):
  """Mean over rays of sum_i stopgrad(w_i) max(0, n_i . d)^2; weights [R, S], normals [R, S, 3]."""
  facing_away = torch.clamp(torch.sum(normals * directions[:, None, :], dim=-1), min=0.0)
  return torch.mean(torch.sum(weights.detach() * facing_away**2, dim=-1))


def opacity_loss(acc):
  """mean(sqrt(acc^2 + 0.01)) of the opacities [R]."""
  return torch.mean(torch.sqrt(acc**2 + 0.01))


def entropy_loss(acc, eps=1e-4):
  """Mean binary entropy of the opacities [R]."""
  a = torch.clamp(acc, eps, 1.0 - eps)
  return torch.mean(-a * torch.log(a) - (1.0 - a) * torch.log1p(-a))


def resize_images(images, resolution):
  """Bilinear resize [B, H, W, 3] -> [B, res, res, 3] like jax.image.resize (antialiased)."""
  x = images.permute(0, 3, 1, 2)
  x = F.interpolate(x, size=(resolution, resolution), mode='bilinear', align_corners=False,
                    antialias=True)
  return x.permute(0, 2, 3, 1)


# SDS weightings w(t) of abar_t, as guidance.WEIGHTINGS.
SDS_WEIGHTS = {'sigma2': lambda abar: 1.0 - abar, 'uniform': torch.ones_like,
               'sigma': lambda abar: torch.sqrt(1.0 - abar)}


def _build_diffusers(spec, dtype):
  """Random-weight torch UNet2DConditionModel and AutoencoderKL (None for a pixel model)."""
  import diffusers  # pylint: disable=g-import-not-at-top
  diffusers.utils.logging.set_verbosity_error()
  unet = diffusers.UNet2DConditionModel(**spec['unet']).to(dtype).eval().requires_grad_(False)
  vae = None
  if spec['vae'] is not None:
    vae = diffusers.AutoencoderKL(**spec['vae']).to(dtype).eval().requires_grad_(False)
  return unet, vae


class TorchDreamFusion:
  """DreamFusion's training step in PyTorch: NeRF, background, frozen UNet and VAE, Adam.

  Attributes:
    spec: make_spec's dict.
    nerf, background: the trained modules (float32).
    unet, vae: frozen diffusers modules in `dtype` (vae None for a pixel model).
    device: torch.device every tensor and module lives on; the default device inside step() and
      render().
    cond, uncond: [4, L, D] random text embeddings of the four view prompts.
    optimizer: torch.optim.Adam over the NeRF's and the background's parameters.
    step_count: steps taken (skipped ones included); num_updates: Adam updates applied.
  """

  def __init__(self, spec, seed=0, dtype=torch.float32, device='cpu'):
    self.device = torch.device(device)
    with self.device:
      self._build(spec, seed, dtype)

  def _build(self, spec, seed, dtype):
    """__init__'s work, with self.device the default device."""
    self.spec = spec
    self.dtype = dtype
    torch.manual_seed(seed)
    self.nerf = torch_render.NeRF(**spec['nerf'])
    self.background = torch_render.Background(**spec['background'])
    self.unet, self.vae = _build_diffusers(spec, dtype)
    self.scaling_factor = float(self.vae.config.scaling_factor) if self.vae is not None else 1.0
    self.prediction_type = spec['scheduler'].get('prediction_type', 'epsilon')
    self.alphas_cumprod = alphas_cumprod(spec['scheduler'])
    rng = np.random.default_rng(seed)
    shape = (4, spec['text_tokens'], spec['text_width'])
    self.cond = torch.tensor(rng.standard_normal(shape), dtype=dtype)
    self.uncond = torch.tensor(rng.standard_normal(shape), dtype=dtype)
    self.params = list(self.nerf.parameters()) + list(self.background.parameters())
    optim = spec['optim']
    self.optimizer = torch.optim.Adam(self.params, lr=optim['lr_init'],
                                      betas=(optim['beta1'], optim['beta2']), eps=optim['eps'])
    self.generator = torch.Generator(device=self.device).manual_seed(seed)
    self.step_count = 0
    self.num_updates = 0

  def load_jax_params(self, params):
    """Copies a JAX/Flax {'nerf': {'params': ...}, 'background': {'params': ...}} pytree in.

    Flax Dense kernels are [in, out] and are transposed into torch's [out, in]. The optimiser
    state is left as it is.
    """
    tree = params['nerf']['params']
    with torch.no_grad():
      _copy_dense(self.nerf.input, tree['input'])
      for i, (norm, block) in enumerate(zip(self.nerf.norms, self.nerf.blocks)):
        _copy_norm(norm, tree[f'norm_{i}'])
        _copy_dense(block, tree[f'block_{i}'])
      _copy_norm(self.nerf.norm_out, tree['norm_out'])
      _copy_dense(self.nerf.density, tree['density'])
      _copy_dense(self.nerf.albedo, tree['albedo'])
      if not self.background.color:
        background = params['background']['params']
        _copy_dense(self.background.hidden, background['Dense_0'])
        _copy_dense(self.background.out, background['Dense_1'])

  def render_views(self, c2w, focal, modes, lights, randomized, create_graph):
    """Shaded renders of B cameras (steps.render_views).

    Args:
      c2w: [B, 4, 4] or [B, 3, 4]; focal [B]; modes [B] shading modes; lights [B, 3].
      randomized: jitter the samples (with self.generator).
      create_graph: keep the normals differentiable.

    Returns:
      rgb [B, H, W, 3], the last level's outputs over R = B H W rays, directions [R, 3].
    """
    rend = self.spec['render']
    b, h, w = c2w.shape[0], rend['height'], rend['width']
    origins, directions, radii = (x.reshape(b * h * w, -1)
                                  for x in torch_render.generate_rays(c2w, focal, h, w))
    per_ray = lambda x: torch.repeat_interleave(x, h * w, dim=0)
    shading = self.spec['shading']
    shade_fn = functools.partial(_shade_points, lights=per_ray(lights), modes=per_ray(modes),
                                 light_color=shading['light_color'], ambient=shading['ambient'])
    outputs = torch_render.render_rays(
        self.nerf, origins, directions, radii, self.background(directions), shade_fn,
        near=rend['near'], far=rend['far'], num_samples=rend['num_samples'],
        scene_radius=rend['scene_radius'], randomized=randomized, create_graph=create_graph,
        generator=self.generator)
    return outputs[-1]['rgb'].reshape(b, h, w, 3), outputs[-1], directions

  def render(self, c2w, focal, randomized=False, modes=None, lights=None):
    """Renders given cameras (numpy or torch inputs) without a gradient.

    Args:
      c2w: [B, 4, 4] or [B, 3, 4] camera-to-world matrices.
      focal: [B] focal lengths in pixels.
      randomized: jitter the samples.
      modes: [B] shading modes (None: albedo).
      lights: [B, 3] light positions (None: at the cameras).

    Returns:
      dict of numpy arrays: rgb [B, H, W, 3], acc [B, H, W].
    """
    with self.device, torch.no_grad():
      c2w = torch.tensor(np.array(c2w, np.float32))
      focal = torch.tensor(np.array(focal, np.float32)).reshape(-1)
      b = c2w.shape[0]
      modes = (torch.full((b,), torch_render.ALBEDO) if modes is None
               else torch.tensor(np.array(modes, np.int64)))
      lights = c2w[:, :3, 3] if lights is None else torch.tensor(np.array(lights, np.float32))
      rgb, out, _ = self.render_views(c2w, focal, modes, lights, randomized, create_graph=False)
    rend = self.spec['render']
    acc = out['acc'].reshape(b, rend['height'], rend['width'])
    return {'rgb': rgb.detach().cpu().numpy(), 'acc': acc.detach().cpu().numpy()}

  def to_model_space(self, images):
    """z [B, C, h, w] of images [B, H, W, 3] in [0, 1]: 2x - 1, or its VAE mean x scale."""
    x = 2.0 * images.permute(0, 3, 1, 2) - 1.0
    if self.vae is None:
      return x
    posterior = self.vae.encode(x.to(self.dtype)).latent_dist
    return posterior.mean.float() * self.scaling_factor

  def predict_noise(self, z_t, timesteps, cond, uncond, scale):
    """Guided eps_hat [B, C, h, w]: one UNet call on [uncond, cond], then CFG with `scale`."""
    sample = torch.cat([z_t, z_t]).to(self.dtype)
    out = self.unet(sample, torch.cat([timesteps, timesteps]),
                    encoder_hidden_states=torch.cat([uncond, cond])).sample.float()
    if self.prediction_type == 'v_prediction':
      abar = torch.cat([self.alphas_cumprod[timesteps]] * 2)[:, None, None, None]
      out = torch.sqrt(abar) * out + torch.sqrt(1.0 - abar) * torch.cat([z_t, z_t])
    eps_u, eps_c = out.chunk(2)
    return eps_u + scale * (eps_c - eps_u)

  def sds_loss(self, images, labels, scale, t_range):
    """Surrogate sum(stopgrad(w (eps_hat - eps)) z) / B whose gradient is SDS's, view mean.

    Args:
      images: [B, res, res, 3] renders in [0, 1] (differentiable).
      labels: [B] view labels selecting the text embeddings.
      scale: float guidance scale.
      t_range: (t_min, t_max).

    Returns:
      float32 scalar.
    """
    b = images.shape[0]
    z = self.to_model_space(images)
    t = torch_render.uniform(self.generator, b, t_range)
    noise = torch.randn(z.shape, generator=self.generator)
    steps = self.alphas_cumprod.shape[0]
    k = torch.clamp(torch.round(t * (steps - 1)), 0, steps - 1).long()
    alpha_bar = self.alphas_cumprod[k]
    ab = alpha_bar[:, None, None, None]
    with torch.no_grad():
      z_t = torch.sqrt(ab) * z + torch.sqrt(1.0 - ab) * noise
      eps_hat = self.predict_noise(z_t, k, self.cond[labels], self.uncond[labels], scale)
      grad = SDS_WEIGHTS[self.spec['weighting']](alpha_bar)[:, None, None, None] * (
          eps_hat - noise)
    return torch.sum(grad * z) / b

  def step(self):
    """One training step; returns the loss as a float.

    As steps.dreamfusion_step, a step whose loss or gradient norm is not finite applies no
    update (the step count still advances).
    """
    with self.device:
      return self._step()

  def _step(self):
    """step()'s work, with self.device the default device."""
    spec, s = self.spec, self.step_count
    b, rend = spec['batch_size'], spec['render']
    cams = torch_render.sample_cameras(self.generator, b, rend['width'], spec['camera'])
    lights = torch_render.sample_lights(self.generator, cams['c2w'][:, :3, 3])
    modes = torch_render.sample_modes(self.generator, s, b, spec['shading'])
    labels = torch_render.view_labels(cams['elevation_deg'], cams['azimuth_deg'])
    scale = linear_schedule(s, *spec['guidance_scale'])
    t_range = (spec['t_range'][0], linear_schedule(s, *spec['t_max_schedule']))
    weights = spec['loss']

    self.optimizer.zero_grad(set_to_none=True)
    rgb, out, directions = self.render_views(cams['c2w'], cams['focal'], modes, lights,
                                             randomized=True, create_graph=True)
    total = (linear_schedule(s, *weights['orientation_weight'])
             * orientation_loss(out['weights'], out['sample_normals'], directions)
             + weights['opacity_weight'] * opacity_loss(out['acc']))
    if weights['entropy_weight']:
      ramp = weights['entropy_ramp_steps']
      entropy_weight = weights['entropy_weight'] * (min(1.0, s / ramp) if ramp else 1.0)
      total = total + entropy_weight * entropy_loss(out['acc'])
    if spec['sds_weight']:
      images = rgb
      if spec['resolution'] != rend['height']:
        images = resize_images(images, spec['resolution'])
      total = total + spec['sds_weight'] * self.sds_loss(images, labels, scale, t_range)
    total.backward()
    clip = spec['optim']['grad_clip'] or float('inf')
    grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
    loss = float(total.detach())
    if math.isfinite(loss) and bool(torch.isfinite(grad_norm)):
      for group in self.optimizer.param_groups:
        group['lr'] = learning_rate(self.num_updates, spec['optim'], spec['num_steps'])
      self.optimizer.step()
      self.num_updates += 1
    self.step_count += 1
    return loss


def _shade_points(albedo, normals, means, *, lights, modes, light_color, ambient):
  return torch_render.shade(albedo, normals, means, lights, modes, light_color, ambient)


def _tensor(x):
  return torch.tensor(np.array(x, np.float32))


def _copy_dense(linear, tree):
  linear.weight.copy_(_tensor(tree['kernel']).T)
  linear.bias.copy_(_tensor(tree['bias']))


def _copy_norm(norm, tree):
  norm.weight.copy_(_tensor(tree['scale']))
  norm.bias.copy_(_tensor(tree['bias']))


def synchronize(device):
  """Waits for the work queued on a CUDA device (the Adam update is queued after the loss)."""
  if torch.device(device).type == 'cuda':
    torch.cuda.synchronize(device)
