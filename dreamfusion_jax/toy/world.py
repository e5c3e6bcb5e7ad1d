"""The toy world: one coloured primitive at the origin, seen from DreamFusion's cameras.

Every object sits at the origin in a fixed canonical pose (cube axis-aligned, cone apex up along
+z, cylinder axis along z, torus in the xy plane) and fits in a sphere of radius 0.4, so the
paper's camera distribution (distance 1 to 1.5, focal 0.7 to 1.35 image widths) frames it. Views
are rendered analytically (exact ray-primitive intersection from `data.primitives`) over a plain
white background, either unlit (albedo) or Lambertian under a point light near the camera, the two
ways DreamFusion's renders look. A caption is "a {colour} {shape}, {view} view" with the view
label of the camera (DreamFusion's view-dependent prompt).

HELDOUT pairs are never shown to the toy prior or the toy CLIP: text-to-3D on them measures
generalisation, not recall.
"""

import math

import jax
import numpy as np

from dreamfusion_jax import camera
from dreamfusion_jax import shading
from dreamfusion_jax.data import primitives
from dreamfusion_jax.data import synthetic

COLORS = {
    'red': (0.85, 0.12, 0.12),
    'green': (0.15, 0.65, 0.2),
    'blue': (0.15, 0.3, 0.9),
    'yellow': (0.95, 0.8, 0.1),
    'purple': (0.55, 0.2, 0.75),
    'orange': (0.95, 0.5, 0.08),
}
SHAPES = ('sphere', 'cube', 'cone', 'cylinder', 'torus')
# One held-out pair per shape, each with a different colour, so every colour and every shape is
# still seen in training with other partners.
HELDOUT = ('a red cube', 'a green torus', 'a blue cone', 'a yellow sphere', 'a purple cylinder')
BACKGROUND = (1.0, 1.0, 1.0)
# Lambertian renders: colour = albedo * (AMBIENT + LIGHT_COLOR * max(0, n . l)); shading.shade's
# formula, so a DreamFusion run with these values sees the same lighting.
AMBIENT = 0.3
LIGHT_COLOR = 0.7
# Side stream of the camera key for look-at jitter (sample_views).
TARGET_JITTER_STREAM = 1
# DreamFusion's camera distribution (configs/dreamfusion.py); the toy world is framed for it.
CAMERA_RANGES = dict(elevation_range_deg=(-10.0, 90.0), azimuth_range_deg=(0.0, 360.0),
                     distance_range=(1.0, 1.5), focal_range=(0.7, 1.35))


def prompt(color, shape):
  """The toy prompt "a {color} {shape}"."""
  return f'a {color} {shape}'


PROMPTS = tuple(prompt(c, s) for s in SHAPES for c in COLORS)
TRAIN_PROMPTS = tuple(p for p in PROMPTS if p not in HELDOUT)
WORDS = ('a', 'view', *COLORS, *SHAPES, *camera.VIEW_NAMES)


def parse_prompt(text):
  """(color, shape) of a toy prompt "a {color} {shape}" (a view suffix is allowed), else None."""
  words = text.strip().lower().split(',')[0].split()
  if len(words) == 3 and words[0] == 'a' and words[1] in COLORS and words[2] in SHAPES:
    return words[1], words[2]
  return None


def caption(text, view_label):
  """The caption of a view: "{prompt}, {view} view" (guidance.view_prompts' format)."""
  return f'{text}, {camera.VIEW_NAMES[int(view_label)]} view'


def make_primitive(color, shape):
  """The data.primitives object of a toy (color, shape) pair, at the origin."""
  albedo = COLORS[color]
  if shape == 'sphere':
    return primitives.Sphere(center=(0.0, 0.0, 0.0), radius=0.3, albedo=albedo)
  if shape == 'cube':
    return primitives.Box(center=(0.0, 0.0, 0.0), half_sizes=(0.22, 0.22, 0.22), angle=0.0,
                          albedo=albedo)
  if shape == 'cone':
    return primitives.Cone(base_center=(0.0, 0.0, -0.25), radius=0.28, height=0.55, albedo=albedo)
  if shape == 'cylinder':
    return primitives.Cylinder(center=(0.0, 0.0, 0.0), radius=0.22, half_height=0.26,
                               albedo=albedo)
  if shape == 'torus':
    return primitives.Torus(center=(0.0, 0.0, 0.0), major_radius=0.26, minor_radius=0.1,
                            albedo=albedo)
  raise ValueError(f'unknown toy shape {shape!r}: choose one of {", ".join(SHAPES)}')


def render_view(color, shape, c2w, focal, size, light=None, supersample=2, albedo=None):
  """Renders a toy object over the white background.

  Args:
    color, shape: a COLORS key and a SHAPES entry.
    c2w: float [4, 4] camera-to-world (OpenGL, camera looks down -z).
    focal: float focal length in pixels.
    size: int image height and width H = W.
    light: float [3] point-light position for Lambertian shading, or None for unlit albedo.
    supersample: int s, s x s rays per pixel (anti-aliasing).
    albedo: float [3] in place of the colour's (e.g. white, for a textureless render).

  Returns:
    rgb float32 [H, W, 3] in [0, 1] over BACKGROUND; alpha float32 [H, W] pixel coverage.
  """
  prim = make_primitive(color, shape)
  s = int(supersample)
  origins, directions = synthetic.camera_rays(c2w, focal, size, size, s)
  t, normals = primitives.intersect_primitive(prim, origins, directions)
  hit = np.isfinite(t)
  albedo = np.asarray(prim.albedo if albedo is None else albedo, np.float64)
  if light is None:
    rgb = np.broadcast_to(albedo, origins.shape)
  else:
    points = origins + np.where(hit, t, 0.0)[:, None] * directions
    to_light = primitives.normalize(np.asarray(light, np.float64) - points)
    cosine = np.maximum(np.sum(normals * to_light, -1, keepdims=True), 0.0)
    rgb = albedo * (AMBIENT + LIGHT_COLOR * cosine)
  alpha = hit.astype(np.float64)[:, None]
  rgb = alpha * rgb + (1.0 - alpha) * np.asarray(BACKGROUND)
  rgb = rgb.reshape(size, s, size, s, 3).mean(axis=(1, 3))
  alpha = alpha.reshape(size, s, size, s).mean(axis=(1, 3))
  return np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha.astype(np.float32)


def sample_views(key, num_views, size, target_jitter=0.0):
  """Cameras, point lights and view labels drawn like DreamFusion's training views.

  Args:
    key: a PRNG key.
    num_views: int N.
    size: int image width (focal lengths scale with it).
    target_jitter: float j >= 0; each camera looks at a point drawn uniformly from the cube
      [-j, j]^3 instead of the origin, so the object appears off the image centre (as a NeRF
      that grew off the origin does). 0 draws exactly DreamFusion's views.

  Returns:
    dict of NumPy arrays: c2w float32 [N, 4, 4], focal float32 [N], light float32 [N, 3],
    label int32 [N] (camera.VIEW_NAMES index), elevation_deg and azimuth_deg float32 [N].
  """
  key_cam, key_light = jax.random.split(key)
  target = np.zeros(3, np.float32)
  if target_jitter > 0:  # A new key only here: 0 keeps the earlier draws bit for bit.
    target = jax.random.uniform(jax.random.fold_in(key_cam, TARGET_JITTER_STREAM), (num_views, 3),
                                minval=-target_jitter, maxval=target_jitter)
  cams = camera.sample_cameras(key_cam, num_views, width=size, target=target, **CAMERA_RANGES)
  lights = jax.vmap(shading.sample_light)(jax.random.split(key_light, num_views),
                                          cams.c2w[:, :3, 3])
  labels = camera.view_labels(cams.elevation_deg, cams.azimuth_deg)
  return jax.tree.map(np.asarray, dict(
      c2w=cams.c2w, focal=cams.focal, light=lights, label=labels,
      elevation_deg=cams.elevation_deg, azimuth_deg=cams.azimuth_deg))


def render_dataset(key, prompts, views_per_prompt, size, lit_fraction=0.5, target_jitter=0.0):
  """Renders of toy prompts from random DreamFusion cameras, with their captions.

  Args:
    key: a PRNG key (cameras, lights and which views are lit).
    prompts: sequence of P toy prompts "a {color} {shape}".
    views_per_prompt: int V views of each.
    size: int H = W.
    lit_fraction: float share of Lambertian views (the rest are unlit albedo).
    target_jitter: float, sample_views' look-at jitter (0: cameras look at the origin).

  Returns:
    images float32 [P*V, H, W, 3] in [0, 1]; alphas float32 [P*V, H, W]; captions list of P*V
    strings "{prompt}, {view} view"; prompt_index int32 [P*V].
  """
  images, alphas, captions, index = [], [], [], []
  for i, text in enumerate(prompts):
    parsed = parse_prompt(text)
    if parsed is None:
      raise ValueError(f'{text!r} is not a toy prompt "a {{color}} {{shape}}"')
    key_views, key_lit = jax.random.split(jax.random.fold_in(key, i))
    views = sample_views(key_views, views_per_prompt, size, target_jitter)
    lit = np.asarray(jax.random.uniform(key_lit, (views_per_prompt,)) < lit_fraction)
    for v in range(views_per_prompt):
      rgb, alpha = render_view(*parsed, views['c2w'][v], float(views['focal'][v]), size,
                               views['light'][v] if lit[v] else None)
      images.append(rgb)
      alphas.append(alpha)
      captions.append(caption(text, views['label'][v]))
      index.append(i)
  return np.stack(images), np.stack(alphas), captions, np.asarray(index, np.int32)


def sphere_silhouette_area(distance, focal, radius=0.3):
  """Exact image-plane area (pixels^2) of a sphere's silhouette seen from `distance` on its axis.

  The silhouette is the circle of tangent rays: half-angle asin(r / d), so a disc of radius
  focal * tan(asin(r / d)) in pixels.
  """
  half_angle = math.asin(radius / distance)
  return math.pi * (focal * math.tan(half_angle))**2
