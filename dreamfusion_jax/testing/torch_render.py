"""The PyTorch reference's NeRF, cameras, lights, shading and volume rendering.

Each function is the PyTorch twin of the JAX function it names (nerf.py, camera.py, shading.py,
render.py), written as a PyTorch user would write it; torch_reference.py builds the training
step from them, and tests/torch_step_test.py checks them against the JAX code.

Letters: B views, H, W render size, R = B H W rays, S samples per ray.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

SHADING_MODES = ('albedo', 'lambertian', 'textureless')
ALBEDO, LAMBERTIAN, TEXTURELESS = range(3)


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


def uniform(generator, n, bounds):
  """n draws [n] uniform in bounds (low, high) from the generator."""
  return torch.empty(n).uniform_(bounds[0], bounds[1], generator=generator)


def sample_cameras(generator, batch_size, width, ranges):
  """DreamFusion's random cameras looking at the origin (camera.sample_cameras).

  Returns:
    dict: c2w [B, 4, 4], focal [B] in pixels, elevation_deg [B], azimuth_deg [B].
  """
  elevation = uniform(generator, batch_size, ranges['elevation_range_deg'])
  azimuth = torch.remainder(uniform(generator, batch_size, ranges['azimuth_range_deg']), 360.0)
  distance = uniform(generator, batch_size, ranges['distance_range'])
  focal = uniform(generator, batch_size, ranges['focal_range']) * width
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
  scale = uniform(generator, positions.shape[0], distance_range)
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
