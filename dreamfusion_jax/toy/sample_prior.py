"""Samples the toy prior for every toy prompt and view, and scores the samples' colours.

  python -m dreamfusion_jax.toy.sample_prior --out docs/toy_prior_samples.png

Writes a grid (rows: shapes; columns: colours; each cell the front, side, back and overhead
views, held-out pairs framed in black) and, next to it, a JSON file with the colour accuracy of
the samples (the share whose object pixels have the prompt's colour; chance 1 / 6) and their
R-precision with the toy CLIP (the share of samples whose nearest toy prompt is their own, which
needs the shape too; chance 1 / 30).
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from dreamfusion_jax import camera
from dreamfusion_jax import guidance
from dreamfusion_jax import sampling
from dreamfusion_jax.toy import world


def object_color(image, background_distance=0.2):
  """Mean colour float [3] of the pixels of float [H, W, 3] `image` that are not background.

  A pixel is background when it lies within `background_distance` (RGB) of world.BACKGROUND;
  returns NaNs when every pixel is background.
  """
  dist = np.linalg.norm(image - np.asarray(world.BACKGROUND), axis=-1)
  mask = dist > background_distance
  if not mask.any():
    return np.full(3, np.nan)
  return image[mask].mean(axis=0)


def classify_color(rgb):
  """The toy colour name whose RGB direction is nearest to float [3] `rgb` (None for NaNs).

  Directions (unit RGB vectors) rather than values, so Lambertian shading, which scales a colour,
  does not change the answer.
  """
  rgb = np.asarray(rgb, np.float64)
  if not np.all(np.isfinite(rgb)) or np.linalg.norm(rgb) == 0:
    return None
  names = list(world.COLORS)
  table = np.array([world.COLORS[n] for n in names])
  table = table / np.linalg.norm(table, axis=1, keepdims=True)
  return names[int(np.argmax(table @ (rgb / np.linalg.norm(rgb))))]


def sample_prompts(diffusion, prompts, key, *, num_steps=50, guidance_scale=3.0):
  """DDIM samples float32 [P, 4, H, W, 3] of every prompt in each view (camera.VIEW_NAMES)."""
  texts = [f'{p}, {v} view' for p in prompts for v in camera.VIEW_NAMES]
  emb = diffusion.encode_text(texts)
  sample = jax.jit(lambda d, e, k: sampling.ddim_sample(d, e, k, num_steps=num_steps,
                                                        guidance_scale=guidance_scale))
  images = np.asarray(sample(diffusion, emb, key))
  return images.reshape(len(prompts), len(camera.VIEW_NAMES), *images.shape[1:])


def color_accuracy(samples, prompts):
  """Share of samples float [P, V, H, W, 3] whose object colour is the prompt's; per prompt too."""
  per_prompt = {}
  for text, views in zip(prompts, samples):
    color, _ = world.parse_prompt(text)
    per_prompt[text] = float(np.mean([classify_color(object_color(v)) == color for v in views]))
  return float(np.mean(list(per_prompt.values()))), per_prompt


def clip_r_precision(clip_model, samples, prompts, captions=None):
  """Share of samples [P, V, H, W, 3] of `prompts` whose prompt CLIP retrieves first.

  Retrieval is among `captions` (default: `prompts`), which must contain every prompt; also
  returns the share per prompt.
  """
  from dreamfusion_jax import eval as eval_lib  # pylint: disable=g-import-not-at-top
  captions = list(prompts if captions is None else captions)
  truth = np.repeat([captions.index(p) for p in prompts], samples.shape[1])
  ranks, _ = eval_lib.retrieve(clip_model, np.reshape(samples, (-1, *samples.shape[2:])),
                               captions, truth)
  ranks = ranks.reshape(samples.shape[:2])
  per_prompt = {text: float(np.mean(r == 0)) for text, r in zip(prompts, ranks)}
  return float(np.mean(ranks == 0)), per_prompt


def grid_image(samples, scale=2):
  """uint8 image of samples [30, 4, H, W, 3] in world.PROMPTS order, held-out cells framed."""
  s = samples.shape[2]
  cell = 2 * s + 4
  canvas = np.ones((len(world.SHAPES) * cell, len(world.COLORS) * cell, 3), np.float32)
  for i, text in enumerate(world.PROMPTS):
    color, shape = world.parse_prompt(text)
    r, c = world.SHAPES.index(shape) * cell, list(world.COLORS).index(color) * cell
    if text in world.HELDOUT:
      canvas[r:r + cell, c:c + cell] = 0.0
    quad = samples[i].reshape(2, 2, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(2 * s, 2 * s, 3)
    canvas[r + 2:r + 2 + 2 * s, c + 2:c + 2 + 2 * s] = quad
  image = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
  return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default=None, help='diffusers folder (default: the shipped '
                      'toy prior)')
  parser.add_argument('--out', required=True, help='PNG path; the scores go next to it (.json)')
  parser.add_argument('--steps', type=int, default=50, help='DDIM steps')
  parser.add_argument('--guidance_scale', type=float, default=3.0)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--clip', default=None, help='CLIP folder or hub id for the R-precision '
                      '(default: the shipped toy CLIP)')
  args = parser.parse_args(argv)
  from dreamfusion_jax import clip  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax import toy  # pylint: disable=g-import-not-at-top
  diffusion = guidance.Diffusion.from_pretrained(args.model or str(toy.PRIOR_DIR),
                                                 dtype=jnp.float32)
  samples = sample_prompts(diffusion, world.PROMPTS, jax.random.key(args.seed),
                           num_steps=args.steps, guidance_scale=args.guidance_scale)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  grid_image(samples).save(out)
  accuracy, per_prompt = color_accuracy(samples, world.PROMPTS)
  heldout = float(np.mean([per_prompt[p] for p in world.HELDOUT]))
  clip_model = clip.Clip.from_pretrained(args.clip or str(toy.CLIP_DIR))
  r_precision, r_per_prompt = clip_r_precision(clip_model, samples, world.PROMPTS)
  r_heldout = float(np.mean([r_per_prompt[p] for p in world.HELDOUT]))
  scores = dict(color_accuracy=accuracy, heldout_color_accuracy=heldout, chance=1 / 6,
                r_precision=r_precision, heldout_r_precision=r_heldout,
                r_precision_chance=1 / len(world.PROMPTS), per_prompt=per_prompt,
                r_precision_per_prompt=r_per_prompt, ddim_steps=args.steps,
                guidance_scale=args.guidance_scale, seed=args.seed)
  out.with_suffix('.json').write_text(json.dumps(scores, indent=2))
  print(f'wrote {out}: colour accuracy {accuracy:.2f} (held out {heldout:.2f}, chance 0.17), '
        f'CLIP R-precision {r_precision:.2f} (held out {r_heldout:.2f}, chance 0.03)')


if __name__ == '__main__':
  main()
