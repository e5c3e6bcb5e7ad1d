"""Evaluating a DreamFusion run: silhouette IoU, colour and CLIP R-precision of its checkpoint.

  python -m dreamfusion_jax.eval --workdir W [--prompt P] [--clip toy|PATH_OR_ID[,...]] \
      [--captions FILE] [--num_views 8] [--size 64]

W is a DreamFusion or Dream Fields run folder, or the folder of a many-prompt run (its
prompts/*/ are each evaluated, and W/eval.json gets the table over them: `prompts`, one row of
ranks per prompt, and the means `r_precision`, `r_precision_geometry`, `iou`, `volume_iou`,
`chamfer`, `shape_precision_geometry`, `color_accuracy`).
`--captions coco` retrieves among the 153 COCO captions of the Dream Fields benchmark.

The newest checkpoint of the run in W (rebuilt from W/config.json) is rendered from fixed
evaluation cameras, the same for every run: `num_views` cameras on a circle at elevation 30 deg,
azimuths 0, 360 / num_views, ... deg (azimuth 0 is the front, `camera`'s convention), distance
1.25 from the origin, looking at it, with a 45 deg horizontal field of view over `size` x `size`
pixels. The toy objects (inside a sphere of radius 0.4) fill about two thirds of the frame.
Renders use the run's own sampling settings, composited over white whatever the run's
background (the toy world is drawn on white, and the object, not a learned background, should
earn the CLIP score), in three shadings: albedo (silhouette and colour), and for CLIP the paper's
colour renders (albedo lit by a point light at the camera with the run's light colour and
ambient) and textureless "geometry" renders (white under the same light).

Metrics:
- toy prompts ("a {colour} {shape}", `toy.world`), against the true object from the same cameras:
  `iou`, the mean over views of |pred & true| / |pred | true| with pred = NeRF opacity > 0.5 and
  true = the true object's pixel coverage > 0.5; `color_rgb`, the mean albedo of the pixels with
  opacity > 0.5, all views pooled; `color`, its nearest toy colour (Euclidean RGB distance);
  `color_correct`, whether that is the prompt's colour; in 3D (`shape_metrics`), `volume_iou`, the
  NeRF's occupancy (density >= export.mesh_threshold) against the true solid's on a 90^3 grid,
  and `chamfer`, the symmetric Chamfer distance of the exported surface to the true one in units
  of the true object's bounding radius; `shape_precision_geometry`, the share of textureless
  renders whose most similar caption among the five shape-only ones ("a sphere", ... "a
  torus", which the toy CLIPs were trained on) is the true shape's. Other prompts have no
  truth: null.
- every prompt: CLIP R-precision (DreamFusion Sec. 4, after Dream Fields), the share of views
  whose most similar caption (cosine similarity of CLIP embeddings) is the prompt, among the toy
  prompts (default) or the lines of --captions, the prompt added if missing: `r_precision` on the
  colour renders, `r_precision_geometry` on the textureless ones, `r_precision_albedo` on the
  unlit albedo (a flat disc of colour: a sphere and a cylinder seen from above look alike). The
  default `--clip toy` scores with the mean similarity of five shipped toy CLIPs
  (toy.EVAL_CLIP_DIRS: the one Dream Fields trains with and four trained with off-centre
  cameras), which know only the toy world: a non-toy prompt needs a real CLIP. One toy CLIP
  alone misreads a true sphere moved 2.5 px up as a cube; each has its own blind spots on NeRF
  renders, and their mean has fewer (README).

W/eval.json holds prompt, iou, volume_iou, chamfer, shape_precision_geometry, color, color_rgb,
color_correct, r_precision,
r_precision_geometry, r_precision_albedo, clip, num_captions, checkpoint_step, cameras
{elevation_deg, azimuth_deg, distance, fov_deg, size}, views (one {azimuth_deg, elevation_deg,
iou, rank, rank_geometry, rank_albedo, rank_shape, top_caption} per camera; rank 0 = the prompt
retrieved first, top_caption from the colour render) and note (why a non-toy prompt's numbers are limited,
else null). W/eval_views.png shows the albedo and colour renders and, for toy prompts, the
silhouettes compared (see view_strip).

Letters: V views, H = W = size pixels, N captions, D embedding width.
"""

import argparse
import json
import pathlib
import sys

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np

from dreamfusion_jax import build, camera, clip, export, host_memory, models, render, shading
from dreamfusion_jax import shape_metrics, toy
from dreamfusion_jax.toy import world

ELEVATION_DEG = 30.0
DISTANCE = 1.25
FOV_DEG = 45.0
THRESHOLD = 0.5  # Opacity (or coverage) above which a pixel belongs to the object.
COCO_CAPTIONS = pathlib.Path(__file__).parent / 'data' / 'coco_val_captions.txt'
# The five shape-only captions the toy CLIPs were trained on (toy.train_clip.attribute_captions).
SHAPE_CAPTIONS = tuple(f'a {shape}' for shape in world.SHAPES)
NON_TOY_NOTE = ('not a toy prompt: no true object, so iou and color are null; R-precision '
                'needs a real CLIP (--clip) and real captions (--captions) to mean anything')


class EvalError(ValueError):
  """An evaluation that cannot run, with a one-line reason and what to change."""


def eval_cameras(num_views, size, *, elevation_deg=ELEVATION_DEG, distance=DISTANCE,
                 fov_deg=FOV_DEG):
  """The fixed evaluation cameras (see the module docstring).

  Args:
    num_views: int, number of views V, evenly spaced in azimuth from 0.
    size: int, image height and width in pixels (the focal length scales with it).
    elevation_deg: float, elevation of the camera circle in degrees.
    distance: float, camera distance from the origin.
    fov_deg: float, horizontal field of view in degrees.

  Returns:
    camera.Cameras with arrays of leading size V.
  """
  focal = float(camera.focal_from_fov(fov_deg, size))
  return camera.orbit_cameras(num_views, elevation_deg=elevation_deg, distance=distance,
                              focal=focal)


def silhouette_iou(pred_alpha, true_alpha, threshold=THRESHOLD):
  """Intersection over union of two silhouettes, per image.

  Args:
    pred_alpha: float [..., H, W] predicted opacity in [0, 1].
    true_alpha: float [..., H, W] true coverage in [0, 1].
    threshold: float, a pixel is inside a silhouette where its value is > threshold.

  Returns:
    float32 [...] |pred & true| / |pred | true|, and 1 where both silhouettes are empty.
  """
  pred = np.asarray(pred_alpha) > threshold
  true = np.asarray(true_alpha) > threshold
  intersection = np.sum(pred & true, axis=(-2, -1))
  union = np.sum(pred | true, axis=(-2, -1))
  return np.where(union > 0, intersection / np.maximum(union, 1), 1.0).astype(np.float32)


def mean_color(albedo, alpha, threshold=THRESHOLD):
  """Mean colour of the object's pixels.

  Args:
    albedo: float [..., H, W, 3] colours in [0, 1].
    alpha: float [..., H, W] opacity in [0, 1].
    threshold: float, pixels with alpha > threshold are averaged.

  Returns:
    float64 [3] mean RGB over those pixels (all images pooled), or None if there are none.
  """
  mask = np.asarray(alpha) > threshold
  if not mask.any():
    return None
  return np.asarray(albedo, np.float64)[mask].mean(axis=0)


def nearest_color(rgb, colors=None):
  """Name of the colour nearest to `rgb` in Euclidean RGB distance.

  Args:
    rgb: float [3] colour in [0, 1].
    colors: dict name -> (r, g, b); default the toy world's world.COLORS.

  Returns:
    str, a key of `colors`.
  """
  colors = world.COLORS if colors is None else colors
  names = list(colors)
  table = np.asarray([colors[n] for n in names], np.float64)  # [K, 3]
  return names[int(np.argmin(np.linalg.norm(table - np.asarray(rgb, np.float64), axis=-1)))]


def true_renders(color, shape, cameras, size):
  """Albedo renders of the true toy object from each camera.

  Args:
    color, shape: a world.COLORS key and a world.SHAPES entry.
    cameras: camera.Cameras of V views.
    size: int, H = W.

  Returns:
    rgb float32 [V, H, W, 3] over white; alpha float32 [V, H, W] pixel coverage.
  """
  views = [world.render_view(color, shape, np.asarray(c2w), float(focal), size)
           for c2w, focal in zip(cameras.c2w, cameras.focal)]
  return np.stack([v[0] for v in views]), np.stack([v[1] for v in views])


def render_scene(renderer, params, cameras, size):
  """Albedo, colour (Lambertian) and textureless renders and opacity over a white background.

  The run's own sampling settings, deterministic (its build.Run's renderer); all views are
  rendered together in chunks of at most renderer.chunk_size rays. The shaded renders use the
  run's light colour and ambient with a point light at the camera (as the exported turntable).

  Args:
    renderer: a render.Renderer (build.build(config).renderer, or one around any field with the
      NeRF's interface).
    params: the train state's params; only params['nerf'] is used.
    cameras: camera.Cameras of V views.
    size: int, H = W.

  Returns:
    dict of float32 arrays in [0, 1]: albedo, color (albedo under the light), textureless
    (white under the light) [V, H, W, 3]; opacity [V, H, W].
  """
  white = jnp.asarray(world.BACKGROUND, jnp.float32)
  rays = camera.generate_rays(cameras.c2w, cameras.focal, size, size)  # [V, H, W]
  chunk_size = min(renderer.chunk_size, len(cameras.c2w) * size * size)
  renders = {}
  for name, mode in (('albedo', shading.ALBEDO), ('color', shading.LAMBERTIAN),
                     ('textureless', shading.TEXTURELESS)):
    rgb, _, opacity = render.render_image(
        lambda r, mode=mode: renderer.chunk(
            params['nerf'], r, jnp.broadcast_to(white, r.origins.shape), mode, False),
        rays, chunk_size)
    renders[name] = np.clip(np.asarray(rgb, np.float32), 0, 1)
  renders['opacity'] = np.clip(np.asarray(opacity, np.float32), 0, 1)
  return renders


def toy_scores(albedo, opacity, true_alpha, true_color, threshold=THRESHOLD):
  """Silhouette and colour scores of renders against the true toy object.

  Args:
    albedo: float [V, H, W, 3] rendered albedo in [0, 1].
    opacity: float [V, H, W] rendered opacity.
    true_alpha: float [V, H, W] the true object's coverage from the same cameras.
    true_color: str, the prompt's colour (a world.COLORS key).
    threshold: float silhouette threshold.

  Returns:
    dict: ious float32 [V]; iou float, their mean; color_rgb float64 [3] or None (nothing
    opaque); color str or None, its nearest toy colour; color_correct bool.
  """
  ious = silhouette_iou(opacity, true_alpha, threshold)
  rgb = mean_color(albedo, opacity, threshold)
  color = None if rgb is None else nearest_color(rgb)
  return {'ious': ious, 'iou': float(np.mean(ious)), 'color_rgb': rgb, 'color': color,
          'color_correct': color == true_color}


def caption_set(prompt, captions=None):
  """The captions to retrieve among, and which one is the prompt.

  Args:
    prompt: str, the run's prompt; a toy prompt is matched in its canonical form
      "a {colour} {shape}".
    captions: sequence of str, or None for the toy prompts world.PROMPTS. Blank and repeated
      entries are dropped.

  Returns:
    (list of N str, int index of the prompt in it); the prompt is appended if missing.
  """
  parsed = world.parse_prompt(prompt)
  target = world.prompt(*parsed) if parsed else prompt.strip()
  pool = world.PROMPTS if captions is None else captions
  unique = list(dict.fromkeys(c.strip() for c in pool if c.strip()))
  if target not in unique:
    unique.append(target)
  return unique, unique.index(target)


def retrieve(clip_models, images, captions, true_index):
  """CLIP retrieval of captions from images, by one CLIP or the mean similarity of several.

  Args:
    clip_models: a clip.Clip, or a sequence of them (an ensemble: each image-caption similarity
      is the mean of the CLIPs' cosine similarities).
    images: float32 [V, H, W, 3] in [0, 1].
    captions: sequence of N str.
    true_index: int, the index of the correct caption, or int [V], one per image.

  Returns:
    ranks int32 [V] of the correct caption (0 = retrieved first, ties counting against it);
    top int [V] index of each view's most similar caption.
  """
  models = [clip_models] if isinstance(clip_models, clip.Clip) else list(clip_models)
  embed_images = jax.jit(clip.Clip.embed_images)  # Faster than op by op, even compiled once.
  images = np.asarray(images, np.float32)
  sims = []
  for model in models:
    image_emb = np.asarray(embed_images(model, images))  # [V, D]
    text_emb = np.asarray(model.embed_text(list(captions)))  # [N, D]
    sims.append(image_emb @ text_emb.T)
  sims = np.mean(sims, axis=0)  # [V, N]
  truth = np.full((len(images),), true_index, np.int32)
  ranks = np.asarray(clip.similarity_ranks(sims, truth), np.int32)
  return ranks, np.argmax(sims, axis=-1)


def view_strip(albedo, opacity, true_alpha=None, threshold=THRESHOLD, color=None):
  """A PNG-ready strip: the albedo renders, the colour renders, and the silhouettes compared.

  Args:
    albedo: float [V, H, W, 3] renders in [0, 1].
    opacity: float [V, H, W] predicted opacity.
    true_alpha: float [V, H, W] true coverage, or None (no comparison row).
    threshold: float silhouette threshold.
    color: float [V, H, W, 3] shaded renders, or None (no second row).

  Returns:
    uint8 [R H, V * W, 3] with R = 1 to 3 rows; in the comparison row black where both
    silhouettes agree on the object, red where only the true one is (missed), blue where only the
    prediction is (extra), white elsewhere.
  """
  rows = [np.concatenate(list(np.asarray(albedo)), axis=1)]
  if color is not None:
    rows.append(np.concatenate(list(np.asarray(color)), axis=1))
  if true_alpha is not None:
    pred = np.asarray(opacity) > threshold
    true = np.asarray(true_alpha) > threshold
    compare = np.ones(pred.shape + (3,), np.float32)
    compare[pred & true] = 0.0
    compare[true & ~pred] = (1.0, 0.0, 0.0)
    compare[pred & ~true] = (0.0, 0.0, 1.0)
    rows.append(np.concatenate(list(compare), axis=1))
  return np.round(np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)


def load_config(workdir):
  """The ml_collections.ConfigDict of the text-to-3D run in `workdir`; raises EvalError."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise EvalError(f'--workdir {workdir} is not a folder: pass the folder of a DreamFusion run')
  try:
    config = build.read_config(workdir)
  except build.ConfigError as e:
    raise EvalError(f'{e} (--workdir must be a text-to-3D run folder)') from e
  if config.get('method') not in ('dreamfusion', 'dreamfields'):
    raise EvalError(f'{workdir / "config.json"} is a config.method={config.get("method")!r} '
                    'run: only text-to-3D (DreamFusion, Dream Fields) runs can be evaluated')
  return config


def shape_scores(run, params, parsed, clip_model, textureless):
  """The 3D scores of a toy run: volume IoU, Chamfer distance and shape-only retrieval.

  Args:
    run: the build.Run; params: its trained params.
    parsed: (colour, shape) of the toy prompt.
    clip_model: the CLIP(s) of retrieve.
    textureless: float32 [V, H, W, 3] the run's textureless renders.

  Returns:
    dict volume_iou, chamfer (shape_metrics), shape_precision_geometry (the share of views whose
    textureless render retrieves the true shape first among SHAPE_CAPTIONS) and ranks_shape.
  """
  ex = run.config.export
  density, _ = export.field_fns(run)
  scores = shape_metrics.shape_scores(
      lambda x: density(params['nerf'], x), world.make_primitive(*parsed),
      threshold=ex.mesh_threshold, mesh_resolution=ex.mesh_resolution, mesh_bound=ex.mesh_bound)
  ranks, _ = retrieve(clip_model, textureless, SHAPE_CAPTIONS, world.SHAPES.index(parsed[1]))
  return dict(scores, shape_precision_geometry=float(clip.r_precision(ranks)),
              ranks_shape=[int(r) for r in ranks])


def evaluate(config, workdir, prompt, clip_model, captions=None, *, clip_name='',
             num_views=8, size=64):
  """Evaluates the newest checkpoint of a DreamFusion run.

  Args:
    config: the run's ml_collections.ConfigDict (load_config).
    workdir: path of the run folder (its checkpoints/ are read, nothing is written).
    prompt: str, the text the scene should show.
    clip_model: a clip.Clip, or a sequence of them (an ensemble, see retrieve), for R-precision.
    captions: sequence of str to retrieve among (see caption_set), or None for the toy prompts.
    clip_name: str recorded as the CLIP's path or id.
    num_views: int V.
    size: int, H = W.

  Returns:
    (results, strip): the eval.json dict (keys as in the module docstring; `views` one dict
    per camera) and the uint8 view_strip image.
  """
  try:
    loaded = build.load_run(workdir, config)
  except build.ConfigError as e:
    raise EvalError(str(e)) from e
  params, step = loaded.state.params, loaded.step
  cameras = eval_cameras(num_views, size)
  renders = render_scene(loaded.run.renderer, params, cameras, size)
  albedo, opacity = renders['albedo'], renders['opacity']
  caption_list, true_index = caption_set(prompt, captions)
  ranks, top = retrieve(clip_model, renders['color'], caption_list, true_index)
  ranks_geometry, _ = retrieve(clip_model, renders['textureless'], caption_list, true_index)
  ranks_albedo, _ = retrieve(clip_model, albedo, caption_list, true_index)
  parsed = world.parse_prompt(prompt)
  true_alpha = None
  scores = {'ious': [None] * num_views, 'iou': None, 'color': None, 'color_correct': None,
            'color_rgb': mean_color(albedo, opacity)}
  shape = {'volume_iou': None, 'chamfer': None, 'shape_precision_geometry': None,
           'ranks_shape': [None] * num_views}
  if parsed is not None:
    _, true_alpha = true_renders(*parsed, cameras, size)
    scores = toy_scores(albedo, opacity, true_alpha, parsed[0])
    shape = shape_scores(loaded.run, params, parsed, clip_model, renders['textureless'])
  rgb = scores['color_rgb']
  views = [{'azimuth_deg': float(cameras.azimuth_deg[i]),
            'elevation_deg': float(cameras.elevation_deg[i]),
            'iou': None if parsed is None else float(scores['ious'][i]), 'rank': int(ranks[i]),
            'rank_geometry': int(ranks_geometry[i]), 'rank_albedo': int(ranks_albedo[i]),
            'rank_shape': shape['ranks_shape'][i],
            'top_caption': caption_list[int(top[i])]} for i in range(num_views)]
  return {
      'prompt': prompt,
      'iou': scores['iou'],
      'volume_iou': shape['volume_iou'],
      'chamfer': shape['chamfer'],
      'shape_precision_geometry': shape['shape_precision_geometry'],
      'color': scores['color'],
      'color_rgb': None if rgb is None else [round(float(c), 4) for c in rgb],
      'color_correct': scores['color_correct'],
      'r_precision': float(clip.r_precision(ranks)),
      'r_precision_geometry': float(clip.r_precision(ranks_geometry)),
      'r_precision_albedo': float(clip.r_precision(ranks_albedo)),
      'clip': clip_name,
      'num_captions': len(caption_list),
      'checkpoint_step': step,
      'cameras': {'elevation_deg': ELEVATION_DEG, 'azimuth_deg': [v['azimuth_deg'] for v in views],
                  'distance': DISTANCE, 'fov_deg': FOV_DEG, 'size': size},
      'views': views,
      'note': None if parsed is not None else NON_TOY_NOTE,
  }, view_strip(albedo, opacity, true_alpha, color=renders['color'])


def summary(results, path):
  """One line describing an eval.json dict written to `path`."""
  parts = [f'eval of {results["prompt"]!r} (checkpoint {results["checkpoint_step"]}):']
  if results['iou'] is not None:
    verdict = 'correct' if results['color_correct'] else 'wrong'
    parts.append(f'IoU {results["iou"]:.3f}, colour {results["color"]} ({verdict}), volume '
                 f'IoU {results["volume_iou"]:.3f}, Chamfer '
                 f'{"none" if results["chamfer"] is None else format(results["chamfer"], ".3f")}, '
                 f'shape precision {results["shape_precision_geometry"]:.3f},')
  parts.append(f'CLIP R-precision {results["r_precision"]:.3f} (geometry '
               f'{results["r_precision_geometry"]:.3f}, albedo {results["r_precision_albedo"]:.3f})'
               f' among {results["num_captions"]} captions; wrote {path}')
  if results['note']:
    parts.append(f'({results["note"]})')
  return ' '.join(parts)


def normalize_caption(text):
  """Dream Fields' form of a caption: lower case, no spaces, dots or commas at the ends, one dot."""
  return text.lower().strip(' .,') + '.'


def coco_captions():
  """The 153 object-centric COCO validation captions of Dream Fields' benchmark, normalised."""
  return [normalize_caption(c) for c in _read_captions(COCO_CAPTIONS)]


def _read_captions(path):
  """Lines of a captions file, without blank lines and # comments; raises EvalError."""
  try:
    lines = pathlib.Path(path).read_text().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise EvalError(f'--captions {path}: cannot read it ({e}); pass a text file, one caption '
                    'per line, or coco for the 153 COCO captions') from e
  return [line for line in lines if line.strip() and not line.lstrip().startswith('#')]


def prompt_runs(workdir):
  """The per-prompt folders of a many-prompt run (many_prompts.prompt_dirs order), or [] for one run."""
  folder = pathlib.Path(workdir) / 'prompts'
  if (pathlib.Path(workdir) / 'checkpoints').is_dir() or not folder.is_dir():
    return []
  return sorted(p for p in folder.iterdir() if (p / 'config.json').is_file())


def table(results):
  """The R-precision table of several runs: per prompt, then the means (the paper's figures).

  Args:
    results: list of eval.json dicts, one per prompt.

  Returns:
    dict with `prompts` (one {prompt, r_precision, r_precision_geometry, iou, color_correct,
    volume_iou, chamfer, shape_precision_geometry, ranks, ranks_geometry} per run) and the means
    `r_precision`, `r_precision_geometry` and, over the toy prompts, `iou`, `volume_iou`,
    `chamfer`, `shape_precision_geometry` and `color_accuracy` (None without toy prompts).
  """
  rows = [{'prompt': r['prompt'], 'r_precision': r['r_precision'],
           'r_precision_geometry': r['r_precision_geometry'], 'iou': r['iou'],
           'volume_iou': r.get('volume_iou'), 'chamfer': r.get('chamfer'),
           'shape_precision_geometry': r.get('shape_precision_geometry'),
           'color_correct': r['color_correct'], 'ranks': [v['rank'] for v in r['views']],
           'ranks_geometry': [v['rank_geometry'] for v in r['views']]} for r in results]
  toy_rows = [row for row in rows if row['iou'] is not None]
  mean = lambda values: float(np.mean(values)) if values else None
  return {
      'prompts': rows,
      'r_precision': mean([row['r_precision'] for row in rows]),
      'r_precision_geometry': mean([row['r_precision_geometry'] for row in rows]),
      'iou': mean([row['iou'] for row in toy_rows]),
      'volume_iou': mean([row['volume_iou'] for row in toy_rows]),
      'chamfer': mean([row['chamfer'] for row in toy_rows if row['chamfer'] is not None]),
      'shape_precision_geometry': mean([row['shape_precision_geometry'] for row in toy_rows]),
      'color_accuracy': mean([float(row['color_correct']) for row in toy_rows]),
  }


def _load_clips(spec):
  """The CLIPs named by --clip: 'toy' (toy.EVAL_CLIP_DIRS) or comma-separated folders or ids."""
  names = [str(d) for d in toy.EVAL_CLIP_DIRS] if spec == 'toy' else spec.split(',')
  if not all(n.strip() for n in names):
    raise EvalError(f'--clip {spec!r} names an empty CLIP: give folders or hub ids separated by '
                    'commas, or "toy"')
  return [_load_clip(n.strip()) for n in names]


def _load_clip(path_or_id):
  """clip.Clip.from_pretrained with its failures as EvalError."""
  try:
    return clip.Clip.from_pretrained(path_or_id)
  except (models.ModelError, OSError, ValueError) as e:
    raise EvalError(f'--clip {path_or_id}: cannot load it as a CLIP model '
                    f'({" ".join(str(e).split())})') from e


def main(argv=None):
  """`python -m dreamfusion_jax.eval --workdir W`: IoU, colour and R-precision into W/eval.json."""
  host_memory.keep_freed_memory()  # Before JAX's first computation.
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument('--workdir', required=True, help='the folder of a DreamFusion run')
  parser.add_argument('--prompt', default=None, help='default: the run\'s config.prompt')
  parser.add_argument('--clip', default='toy',
                      help='CLIP folder or hub id, or several separated by commas (scored by '
                      'their mean similarity); default "toy": the five shipped toy CLIPs')
  parser.add_argument('--captions', default=None,
                      help='text file, one caption per line, or "coco" for the 153 COCO '
                      'captions of the Dream Fields benchmark (default: the 30 toy prompts); '
                      'the prompt is added if missing')
  parser.add_argument('--num_views', type=int, default=8)
  parser.add_argument('--size', type=int, default=64)
  args = parser.parse_args(argv)
  try:
    if args.num_views < 1 or args.size < 8:
      raise EvalError(f'--num_views={args.num_views} must be >= 1 and --size={args.size} >= 8')
    runs = prompt_runs(args.workdir) or [pathlib.Path(args.workdir)]
    if len(runs) > 1 and args.prompt is not None:
      raise EvalError(f'--workdir {args.workdir} holds {len(runs)} prompts\' runs, each scored '
                      'with its own prompt: drop --prompt')
    configs = [load_config(run) for run in runs]
    prompts = [c.prompt if args.prompt is None else args.prompt for c in configs]
    if any(not p.strip() for p in prompts):
      raise EvalError('the prompt is empty: pass --prompt')
    if args.captions == 'coco':
      captions = coco_captions()
      prompts = [normalize_caption(p) for p in prompts]
    else:
      captions = None if args.captions is None else _read_captions(args.captions)
    for run in runs:
      build.check_checkpoints(run)  # Before the slow CLIP load.
    clip_models = _load_clips(args.clip)
    results = []
    for run, config, prompt in zip(runs, configs, prompts):
      result, strip = evaluate(config, run, prompt, clip_models, captions, clip_name=args.clip,
                               num_views=args.num_views, size=args.size)
      path = run / 'eval.json'
      path.write_text(json.dumps(result, indent=2))
      iio.imwrite(path.with_name('eval_views.png'), strip)
      print(summary(result, path))
      results.append(result)
  except (EvalError, build.ConfigError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if len(runs) > 1:
    path = pathlib.Path(args.workdir) / 'eval.json'
    scores = table(results)
    path.write_text(json.dumps(scores, indent=2))
    for row in scores['prompts']:
      print(f'  {row["r_precision"]:.3f}  {row["r_precision_geometry"]:.3f}  {row["prompt"]}')
    print(f'mean R-precision {scores["r_precision"]:.3f} (geometry '
          f'{scores["r_precision_geometry"]:.3f}) over {len(runs)} prompts; wrote {path}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
