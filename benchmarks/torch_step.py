"""Steps per second of DreamFusion's training step written plainly in PyTorch, for comparison.

  python benchmarks/torch_step.py                     # CPU-sized paper step, tiny latent model
  python benchmarks/torch_step.py --model tiny-pixel  # tiny random pixel-space model
  python benchmarks/torch_step.py --steps 10 --threads 2
  python benchmarks/torch_step.py --full              # as shipped: 64 px, 64+64, 4 views
  python benchmarks/torch_step.py --full --model sd21 --dtype bfloat16 --device cuda  # on a GPU

The step of steps.dreamfusion_step (JAX, jitted) as a PyTorch user would write it: an nn.Module
NeRF whose normals come from torch.autograd.grad(create_graph=True), diffusers' torch
UNet2DConditionModel and AutoencoderKL built from their configs with random weights,
torch.optim.Adam after clip_grad_norm_. Each step does the JAX step's work: B random cameras,
point lights and shading modes; mip-NeRF cone rays restricted to the scene sphere; hierarchical
sampling with the NeRF and its normals at every level, composited over the learned background;
the orientation and opacity losses; a bilinear resize to the model's resolution; SDS with the
conditional and unconditional UNet passes in one call; backward, clipping and Adam. Without
--full the config is shrunk to common.CPU_SIZE, as benchmarks/step.py does: run it with the same
flags on the same machine for the JAX row. With --device cuda every tensor, the generator of the
draws and the modules live on the GPU (torch's default device is set around each step).

Letters: B views, H, W render size, R = B H W rays, S samples per ray, h, w, C the model's input
(latent or pixel) size, L tokens, D text embedding width.
"""

import argparse
import functools
import math
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'benchmarks'), str(ROOT / 'tests')]

SHADING_MODES = ('albedo', 'lambertian', 'textureless')
ALBEDO, LAMBERTIAN, TEXTURELESS = range(3)
# Stable Diffusion's DDPM schedule (also the tiny test models').
DEFAULT_SCHEDULER = {'num_train_timesteps': 1000, 'beta_start': 0.00085, 'beta_end': 0.012,
                     'beta_schedule': 'scaled_linear', 'prediction_type': 'epsilon'}


# The spec: everything the step needs, read once from the config.


def _pair(x):
  return tuple(float(v) for v in x)


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
      shading=dict(modes=tuple(SHADING_MODES.index(m) for m in shade.modes),
                   probs=_pair(shade.probs), warmup_mode=SHADING_MODES.index(shade.warmup_mode),
                   warmup_steps=int(shade.warmup_steps), light_color=float(shade.light_color),
                   ambient=float(shade.ambient)),
      loss=dict(orientation_weight=(float(loss.orientation_weight),
                                    float(loss.get('orientation_weight_end',
                                                   loss.orientation_weight)),
                                    int(loss.get('orientation_anneal_steps', 1))),
                opacity_weight=float(loss.opacity_weight),
                entropy_weight=float(loss.get('entropy_weight', 0.0))),
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


# The NeRF and its background (nerf.py).


class TruncExp(torch.autograd.Function):
  """exp(x) whose derivative is clipped at exp(15); twice differentiable (for the normals)."""

  @staticmethod
  def forward(ctx, x):  # pylint: disable=arguments-differ
    ctx.save_for_backward(x)
    return torch.exp(x)

  @staticmethod
  def backward(ctx, grad):  # pylint: disable=arguments-differ
    (x,) = ctx.saved_tensors
    return grad * torch.exp(torch.clamp(x, max=15.0))


def integrated_pos_enc(means, variances, min_deg, max_deg):
  """mip-NeRF's IPE of diagonal Gaussians [..., 3]: [..., 6 (max_deg - min_deg)].

  Layout as nerf.integrated_pos_enc: sines of every (frequency, axis), then the cosines.
  """
  scales = 2.0**torch.arange(min_deg, max_deg, dtype=means.dtype, device=means.device)
  scaled_means = (means[..., None, :] * scales[:, None]).flatten(-2)
  scaled_vars = (variances[..., None, :] * scales[:, None]**2).flatten(-2)
  x = torch.cat([scaled_means, scaled_means + 0.5 * math.pi], dim=-1)
  var = torch.cat([scaled_vars, scaled_vars], dim=-1)
  return torch.exp(-0.5 * var) * torch.sin(x)


def lecun_normal_(linear):
  """Flax's default Dense init: truncated-normal kernel of variance 1 / fan_in, zero bias."""
  std = (1.0 / linear.in_features)**0.5 / 0.87962566103423978
  nn.init.trunc_normal_(linear.weight, std=std, a=-2.0 * std, b=2.0 * std)
  nn.init.zeros_(linear.bias)
  return linear


def dense(in_features, out_features):
  return lecun_normal_(nn.Linear(in_features, out_features))


class NeRF(nn.Module):
  """DreamFusion's NeRF MLP: IPE, residual LayerNorm-swish-Dense blocks, density and albedo."""

  def __init__(self, width, num_blocks, min_deg, max_deg, scene_radius, density_activation,
               density_bias, blob_density, blob_radius):
    super().__init__()
    self.min_deg, self.max_deg, self.scene_radius = min_deg, max_deg, scene_radius
    self.density_activation, self.density_bias = density_activation, density_bias
    self.blob_density, self.blob_radius = blob_density, blob_radius
    self.input = dense(6 * (max_deg - min_deg), width)
    # Flax's LayerNorm epsilon.
    self.norms = nn.ModuleList(nn.LayerNorm(width, eps=1e-6) for _ in range(num_blocks))
    self.blocks = nn.ModuleList(dense(width, width) for _ in range(num_blocks))
    self.norm_out = nn.LayerNorm(width, eps=1e-6)
    self.density = dense(width, 1)
    self.albedo = dense(width, 3)

  def forward(self, means, variances):
    """Density [R, S] (>= 0) and albedo [R, S, 3] in [0, 1] of Gaussians [R, S, 3]."""
    scale = 1.0 / self.scene_radius
    h = self.input(integrated_pos_enc(means * scale, variances * scale**2, self.min_deg,
                                      self.max_deg))
    for norm, block in zip(self.norms, self.blocks):
      h = h + block(F.silu(norm(h)))
    h = F.silu(self.norm_out(h))
    raw = self.density(h)[..., 0] + self.density_bias
    if self.blob_density:
      blob = torch.exp(-torch.sum(means**2, dim=-1) / (2.0 * self.blob_radius**2))
      raw = raw + self.blob_density * blob
    density = TruncExp.apply(raw) if self.density_activation == 'exp' else F.softplus(raw)
    return density, torch.sigmoid(self.albedo(h))


class Background(nn.Module):
  """DreamFusion's background: a small MLP from the ray direction to a colour (or a constant)."""

  def __init__(self, width, max_deg, color=()):
    super().__init__()
    self.max_deg = max_deg
    self.color = tuple(color)
    if not self.color:
      self.hidden = dense(6 * max_deg, width)
      self.out = dense(width, 3)

  def forward(self, directions):
    """Colours [R, 3] in [0, 1] of unit directions [R, 3]."""
    if self.color:
      return torch.tensor(self.color, dtype=directions.dtype).expand(directions.shape)
    h = integrated_pos_enc(directions, torch.zeros_like(directions), 0, self.max_deg)
    return torch.sigmoid(self.out(F.silu(self.hidden(h))))


def field_with_normals(model, means, variances, create_graph):
  """The NeRF at Gaussians [R, S, 3] with normals -grad(density) / ||grad(density)||.

  Returns:
    density [R, S], albedo [R, S, 3], normals [R, S, 3].
  """
  with torch.enable_grad():
    means = means.detach().requires_grad_(True)
    density, albedo = model(means, variances)
    (grad,) = torch.autograd.grad(density, means, torch.ones_like(density),
                                  create_graph=create_graph)
  norm = torch.sqrt(torch.clamp(torch.sum(grad**2, dim=-1, keepdim=True), min=1e-20))
  return density, albedo, -grad / norm


# Cameras and rays (camera.py), lights and shading (shading.py).


def _normalize(x, eps=1e-12):
  return x / torch.sqrt(torch.clamp(torch.sum(x**2, dim=-1, keepdim=True), min=eps))


def look_at(eye, target):
  """OpenGL camera-to-world matrices [B, 4, 4] of cameras at eye [B, 3] looking at target, z up."""
  up = torch.tensor([0.0, 0.0, 1.0]).expand(eye.shape)
  back = _normalize(eye - target)
  right = torch.linalg.cross(up, back)
  degenerate = torch.sum(right**2, dim=-1, keepdim=True) < 1e-10
  fallback = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]).expand(eye.shape), back)
  right = _normalize(torch.where(degenerate, fallback, right))
  cam_up = torch.linalg.cross(back, right)
  c2w = torch.zeros(eye.shape[0], 4, 4)
  c2w[:, :3, :3] = torch.stack([right, cam_up, back], dim=-1)
  c2w[:, :3, 3] = eye
  c2w[:, 3, 3] = 1.0
  return c2w


def _uniform(generator, n, bounds):
  return torch.empty(n).uniform_(bounds[0], bounds[1], generator=generator)


def sample_cameras(generator, batch_size, width, ranges):
  """DreamFusion's random cameras looking at the origin (camera.sample_cameras).

  Returns:
    dict: c2w [B, 4, 4], focal [B] in pixels, elevation_deg [B], azimuth_deg [B].
  """
  elevation = _uniform(generator, batch_size, ranges['elevation_range_deg'])
  azimuth = torch.remainder(_uniform(generator, batch_size, ranges['azimuth_range_deg']), 360.0)
  distance = _uniform(generator, batch_size, ranges['distance_range'])
  focal = _uniform(generator, batch_size, ranges['focal_range']) * width
  el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
  eye = distance[:, None] * torch.stack(
      [torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], dim=-1)
  return dict(c2w=look_at(eye, torch.zeros_like(eye)), focal=focal, elevation_deg=elevation,
              azimuth_deg=azimuth)


def view_labels(elevation_deg, azimuth_deg):
  """Index [B] into (front, side, back, overhead) of each camera (camera.view_labels)."""
  away = torch.abs(torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0)
  label = torch.where(away <= 45.0, 0, torch.where(away >= 135.0, 2, 1))
  return torch.where(elevation_deg > 60.0, 3, label)


def sample_lights(generator, positions, distance_range=(0.8, 1.5), spread_deg=45.0):
  """Point lights [B, 3] scattered around the camera positions [B, 3] (shading.sample_light)."""
  norm = torch.linalg.norm(positions, dim=-1, keepdim=True)
  direction = positions / norm
  offset = torch.randn(positions.shape, generator=generator) * math.radians(spread_deg)
  direction = direction + offset - torch.sum(offset * direction, -1, keepdim=True) * direction
  direction = direction / torch.linalg.norm(direction, dim=-1, keepdim=True)
  scale = _uniform(generator, positions.shape[0], distance_range)
  return direction * scale[:, None] * norm


def sample_modes(generator, step, batch_size, shading):
  """Shading mode per view [B]: the warm-up mode, then a draw from the modes' probabilities."""
  if step < shading['warmup_steps']:
    return torch.full((batch_size,), shading['warmup_mode'], dtype=torch.long)
  draw = torch.multinomial(torch.tensor(shading['probs']), batch_size, replacement=True,
                           generator=generator)
  return torch.tensor(shading['modes'])[draw]


def shade(albedo, normals, points, lights, modes, light_color, ambient):
  """shading.shade: albedo, Lambertian or textureless colours [R, S, 3].

  Args:
    albedo, normals, points: [R, S, 3].
    lights: [R, 3] light position of each ray.
    modes: [R] shading mode of each ray.
    light_color, ambient: floats.
  """
  to_light = _normalize(lights[:, None, :] - points, eps=1e-20)
  diffuse = torch.clamp(torch.sum(normals * to_light, dim=-1, keepdim=True), min=0.0)
  light = light_color * diffuse + ambient
  mode = modes[:, None, None]
  return torch.where(mode == ALBEDO, albedo,
                     torch.where(mode == LAMBERTIAN, albedo * light, light.expand_as(albedo)))


def generate_rays(c2w, focal, height, width):
  """Rays through pixel centres with mip-NeRF cone radii (camera.generate_rays).

  Args:
    c2w: [B, 4, 4] or [B, 3, 4] camera-to-world matrices.
    focal: [B] focal lengths in pixels.

  Returns:
    origins [B, H, W, 3], unit directions [B, H, W, 3], radii [B, H, W, 1].
  """
  y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                        torch.arange(width, dtype=torch.float32) + 0.5, indexing='ij')
  f = focal[:, None, None]
  cam_dirs = torch.stack([(x - 0.5 * width) / f, -(y - 0.5 * height) / f,
                          -torch.ones_like(x).expand(f.shape[0], height, width)], dim=-1)
  world_dirs = torch.einsum('bij,bhwj->bhwi', c2w[:, :3, :3], cam_dirs)
  norm = torch.linalg.norm(cam_dirs, dim=-1, keepdim=True)
  directions = world_dirs / norm
  origins = c2w[:, None, None, :3, 3].expand(directions.shape)
  radii = (2.0 / math.sqrt(12.0)) / (f[..., None] * norm)
  return origins, directions, radii


# Volume rendering (render.py).


def intersect_sphere(origins, directions, radius):
  """Entry and exit distances [R] of rays [R, 3] through a sphere at the origin (0 if missed)."""
  b = torch.sum(origins * directions, dim=-1)
  c = torch.sum(origins**2, dim=-1) - radius**2
  disc = b**2 - c
  root = torch.sqrt(torch.clamp(disc, min=0.0))
  t_enter = torch.clamp(-b - root, min=0.0)
  t_exit = torch.maximum(-b + root, t_enter)
  hit = disc > 0
  return torch.where(hit, t_enter, 0.0), torch.where(hit, t_exit, 0.0)


def stratified_edges(near, far, num_samples, randomized, generator=None):
  """Edges [R, S + 1] evenly spaced in [near, far] (each [R]), jittered inside their bins."""
  u = torch.linspace(0.0, 1.0, num_samples + 1).expand(near.shape[0], num_samples + 1)
  if randomized:
    jitter = torch.rand(near.shape[0], num_samples - 1, generator=generator) - 0.5
    interior = torch.sort(u[:, 1:-1] + jitter / num_samples, dim=-1).values
    u = torch.cat([u[:, :1], interior, u[:, -1:]], dim=-1)
  return near[:, None] + (far - near)[:, None] * u


def sample_from_weights(t_edges, weights, num_samples, randomized, generator=None,
                        padding=0.01):
  """Edges [R, S' + 1] by inverse-CDF sampling of the blurred, padded weights [R, S]."""
  t_edges, weights = t_edges.detach(), weights.detach()
  padded = torch.cat([weights[:, :1], weights, weights[:, -1:]], dim=-1)
  blurred = torch.maximum(padded[:, :-1], padded[:, 1:])
  blurred = 0.5 * (blurred[:, :-1] + blurred[:, 1:]) + padding
  pdf = blurred / torch.sum(blurred, dim=-1, keepdim=True)
  cumulative = torch.clamp(torch.cumsum(pdf, dim=-1), max=1.0)
  zeros, ones = torch.zeros_like(pdf[:, :1]), torch.ones_like(pdf[:, :1])
  cdf = torch.cat([zeros, cumulative[:, :-1], ones], dim=-1)  # [R, S + 1]
  n = num_samples + 1
  if randomized:
    u = (torch.arange(n) + torch.rand(weights.shape[0], n, generator=generator)) / n
  else:
    u = torch.linspace(0.0, 1.0 - 1e-6, n).expand(weights.shape[0], n).contiguous()
  idx = torch.searchsorted(cdf[:, 1:-1].contiguous(), u, right=True)  # Bin of each quantile.
  cdf0, cdf1 = torch.gather(cdf, 1, idx), torch.gather(cdf, 1, idx + 1)
  t0, t1 = torch.gather(t_edges, 1, idx), torch.gather(t_edges, 1, idx + 1)
  frac = torch.clamp((u - cdf0) / torch.clamp(cdf1 - cdf0, min=1e-10), 0.0, 1.0)
  samples = t0 + frac * (t1 - t0)
  edges = torch.cat([t_edges[:, :1], samples[:, 1:-1], t_edges[:, -1:]], dim=-1)
  return torch.sort(edges, dim=-1).values


def conical_frustum_gaussians(origins, directions, radii, t_edges):
  """Means and diagonal variances [R, S, 3] of the conical frustums between edges [R, S + 1]."""
  t0, t1 = t_edges[:, :-1], t_edges[:, 1:]
  mu, hw = 0.5 * (t0 + t1), 0.5 * (t1 - t0)
  denom = torch.clamp(3.0 * mu**2 + hw**2, min=1e-10)
  t_mean = mu + 2.0 * mu * hw**2 / denom
  t_var = hw**2 / 3.0 - (4.0 / 15.0) * hw**4 * (12.0 * mu**2 - hw**2) / denom**2
  r_var = radii**2 * (mu**2 / 4.0 + (5.0 / 12.0) * hw**2 - (4.0 / 15.0) * hw**4 / denom)
  d = directions[:, None, :]
  means = origins[:, None, :] + t_mean[..., None] * d
  variances = t_var[..., None] * d**2 + r_var[..., None] * (1.0 - d**2)
  return means, variances


def compositing_weights(density, t_edges):
  """Weights [R, S] T_i (1 - exp(-sigma_i delta_i)) of densities [R, S]."""
  optical_depth = density * (t_edges[:, 1:] - t_edges[:, :-1])
  cumulative = torch.cat([torch.zeros_like(optical_depth[:, :1]),
                          torch.cumsum(optical_depth, dim=-1)], dim=-1)
  return torch.exp(-cumulative[:, :-1]) * (1.0 - torch.exp(-optical_depth))


def render_rays(model, origins, directions, radii, background, shade_fn, *, near, far,
                num_samples, scene_radius, randomized, create_graph, generator=None):
  """Hierarchical mip-NeRF rendering, the NeRF (with normals) at every level.

  Args:
    model: NeRF.
    origins, directions: [R, 3]; radii [R, 1].
    background: [R, 3] colour behind the scene.
    shade_fn: (albedo, normals, means) [R, S, 3] -> colours [R, S, 3].
    near, far: floats; scene_radius: float (0: unbounded).
    num_samples: tuple, intervals per level.
    randomized: jitter the samples.
    create_graph: keep the normals differentiable (training).
    generator: torch.Generator of the jitter.

  Returns:
    list with one dict per level: rgb [R, 3], acc [R], weights [R, S], t_edges [R, S + 1],
    sample_normals [R, S, 3].
  """
  r = origins.shape[0]
  near_t, far_t = torch.full((r,), near), torch.full((r,), far)
  if scene_radius:
    t_enter, t_exit = intersect_sphere(origins, directions, scene_radius)
    near_t = torch.clamp(t_enter, near, far)
    far_t = torch.minimum(torch.maximum(t_exit, near_t), far_t)
  outputs = []
  for level, count in enumerate(num_samples):
    if level == 0:
      t_edges = stratified_edges(near_t, far_t, count, randomized, generator)
    else:
      t_edges = sample_from_weights(t_edges, outputs[-1]['weights'], count, randomized,
                                    generator)
    means, variances = conical_frustum_gaussians(origins, directions, radii, t_edges)
    density, albedo, normals = field_with_normals(model, means, variances, create_graph)
    weights = compositing_weights(density, t_edges)
    acc = torch.sum(weights, dim=-1)
    colors = shade_fn(albedo, normals, means)
    rgb = torch.sum(weights[..., None] * colors, dim=-2) + (1.0 - acc[:, None]) * background
    outputs.append(dict(rgb=rgb, acc=acc, weights=weights, t_edges=t_edges,
                        sample_normals=normals))
  return outputs


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
    self.nerf = NeRF(**spec['nerf'])
    self.background = Background(**spec['background'])
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
                                  for x in generate_rays(c2w, focal, h, w))
    per_ray = lambda x: torch.repeat_interleave(x, h * w, dim=0)
    shading = self.spec['shading']
    shade_fn = functools.partial(_shade_points, lights=per_ray(lights), modes=per_ray(modes),
                                 light_color=shading['light_color'], ambient=shading['ambient'])
    outputs = render_rays(self.nerf, origins, directions, radii, self.background(directions),
                          shade_fn, near=rend['near'], far=rend['far'],
                          num_samples=rend['num_samples'], scene_radius=rend['scene_radius'],
                          randomized=randomized, create_graph=create_graph,
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
      modes = (torch.full((b,), ALBEDO) if modes is None
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
    """Surrogate sum(stopgrad(w (eps_hat - eps)) z) whose gradient is SDS's.

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
    t = _uniform(self.generator, b, t_range)
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
    return torch.sum(grad * z)

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
    cams = sample_cameras(self.generator, b, rend['width'], spec['camera'])
    lights = sample_lights(self.generator, cams['c2w'][:, :3, 3])
    modes = sample_modes(self.generator, s, b, spec['shading'])
    labels = view_labels(cams['elevation_deg'], cams['azimuth_deg'])
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
      total = total + weights['entropy_weight'] * entropy_loss(out['acc'])
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
  return shade(albedo, normals, means, lights, modes, light_color, ambient)


def _tensor(x):
  return torch.tensor(np.array(x, np.float32))


def _copy_dense(linear, tree):
  linear.weight.copy_(_tensor(tree['kernel']).T)
  linear.bias.copy_(_tensor(tree['bias']))


def _copy_norm(norm, tree):
  norm.weight.copy_(_tensor(tree['scale']))
  norm.bias.copy_(_tensor(tree['bias']))


def time_torch_step(spec, num_steps, seed=0, threads=None, dtype=torch.float32, device='cpu'):
  """Times TorchDreamFusion.step.

  Args:
    spec: make_spec's dict.
    num_steps: steps timed after the first.
    seed: int seed of the weights and the draws.
    threads: torch.set_num_threads(threads) when given.
    dtype: the UNet's and VAE's dtype.
    device: where the step runs ('cpu', 'cuda').

  Returns:
    dict(first_step_s=..., steps_per_s=..., loss=...): the first step timed on its own, then
    the rate over num_steps steps and the last loss.
  """
  if threads:
    torch.set_num_threads(threads)
  model = TorchDreamFusion(spec, seed=seed, dtype=dtype, device=device)
  start = time.perf_counter()
  loss = model.step()
  synchronize(model.device)
  first_step_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_steps):
    loss = model.step()
  synchronize(model.device)
  steps_per_s = num_steps / (time.perf_counter() - start) if num_steps else float('nan')
  return dict(first_step_s=first_step_s, steps_per_s=steps_per_s, loss=loss)


def synchronize(device):
  """Waits for the work queued on a CUDA device (the Adam update is queued after the loss)."""
  if torch.device(device).type == 'cuda':
    torch.cuda.synchronize(device)


def get_config(full=False, batch_size=None):
  """configs/dreamfusion.py, shrunk to common.CPU_SIZE unless `full` (as step.py does)."""
  import common  # pylint: disable=g-import-not-at-top
  overrides = {} if full else dict(common.CPU_SIZE)
  if batch_size:
    overrides['batch_size'] = batch_size
  return common.get_config('dreamfusion', overrides)


def model_spec(config, model):
  """make_spec for a model named as in common.MODELS ('tiny-latent', 'tiny-pixel', 'sd21')."""
  if model == 'sd21':
    import sds_grad  # pylint: disable=g-import-not-at-top
    return make_spec(config, sds_grad.SD21_UNET, sds_grad.SD21_VAE, 1024, 77)
  import tiny_models  # pylint: disable=g-import-not-at-top
  pixel = model == 'tiny-pixel'
  return make_spec(config, tiny_models.unet_config(pixel),
                   None if pixel else tiny_models.vae_config(), tiny_models.TEXT_WIDTH,
                   tiny_models.TOKEN_LENGTH, scheduler=tiny_models.SCHEDULER)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='tiny-latent', choices=('tiny-latent', 'tiny-pixel', 'sd21'),
                      help='sd21: random weights with Stable Diffusion 2.1-base shapes')
  parser.add_argument('--full', action='store_true', help='the config as shipped (paper size)')
  parser.add_argument('--batch_size', type=int, default=None, help='views per step (paper: 4)')
  parser.add_argument('--steps', type=int, default=10, help='steps timed after the first')
  parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help='UNet and VAE dtype (the NeRF stays float32)')
  parser.add_argument('--device', default='cpu', help="torch device ('cpu', 'cuda')")
  args = parser.parse_args()
  config = get_config(args.full, args.batch_size)
  spec = model_spec(config, args.model)
  result = time_torch_step(spec, args.steps, threads=args.threads,
                           dtype=getattr(torch, args.dtype), device=args.device)
  rend, net = spec['render'], spec['nerf']
  where = (torch.cuda.get_device_name(args.device) if torch.device(args.device).type == 'cuda'
           else f'{torch.get_num_threads()} threads')
  print(f'torch {torch.__version__}, {where}')
  print('| model | dtype | views/step | render | samples | MLP | first step s | steps/s |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  print(f'| {args.model} (PyTorch) | {args.dtype} | {spec["batch_size"]} | {rend["height"]} px '
        f'-> {spec["resolution"]} px | {rend["num_samples"]} | {net["width"]} x '
        f'{net["num_blocks"]} | {result["first_step_s"]:.2f} | {result["steps_per_s"]:.2f} |')


if __name__ == '__main__':
  main()
