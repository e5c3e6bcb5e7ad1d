"""Quality gates on the shipped toy weights (marker `quality`, run by CI after the default suite).

Each bar is what the shipped prior or CLIPs measured when they were trained, with a margin; a
retrained model that falls below one is worse at what the toy world's evaluation relies on.
"""

import jax
import numpy as np
import pytest

from dreamfusion_jax import clip
from dreamfusion_jax import eval as eval_lib
from dreamfusion_jax import guidance
from dreamfusion_jax import toy
from dreamfusion_jax.toy import sample_prior
from dreamfusion_jax.toy import world

pytestmark = pytest.mark.quality


def shifted_r_precision(clip_models, renders, shift_px):
  """R-precision of the renders rolled by shift_px along each image axis, both ways."""
  captions, ranks = list(world.PROMPTS), []
  for prompt, lit in renders.items():
    assert np.all(lit[:, :4] == 1.0) and np.all(lit[:, -4:] == 1.0)  # White borders: roll.
    for axis, shift in ((1, shift_px), (1, -shift_px), (2, shift_px), (2, -shift_px)):
      moved = np.roll(lit, shift, axis=axis)
      ranks.append(eval_lib.retrieve(clip_models, moved, captions, captions.index(prompt))[0])
  return float(clip.r_precision(np.concatenate(ranks)))


def test_toy_clip_reads_heldout_truth(heldout_colour_renders):
  """The shipped toy CLIP retrieves the true held-out objects among the 30 toy prompts.

  From eval's cameras, as eval renders them, the colour renders of every held-out object are
  retrieved right; measured 1.0, and 0.9 on the unlit albedo (the red cube from 4 of 8 views).
  From 200 random DreamFusion cameras (a key training never used), the protocol of train_clip's
  own held-out figure (chance 1/30), half of them unlit: measured 0.97 on this draw (0.96 on
  train_clip's own).
  """
  toy_clip, renders = heldout_colour_renders
  images, _, _, index = world.render_dataset(jax.random.key(2024), world.HELDOUT, 40, 32)
  true_index = np.asarray([world.PROMPTS.index(p) for p in world.HELDOUT])[index]
  ranks = clip.retrieval_ranks(toy_clip.embed_images(images),
                               toy_clip.embed_text(list(world.PROMPTS)), true_index)
  assert float(clip.r_precision(ranks)) >= 0.9, np.asarray(ranks)
  captions = list(world.PROMPTS)
  ranks = [eval_lib.retrieve(toy_clip, lit, captions, captions.index(prompt))[0]
           for prompt, lit in renders.items()]
  assert float(clip.r_precision(np.concatenate(ranks))) >= 0.95, ranks


def test_toy_clip_reads_heldout_truth_off_centre(heldout_colour_renders):
  """A NeRF never puts its object exactly at the origin: the truth shifted by 2 px of 64 (one
  pixel of the CLIP's 32) in each of four directions, read by the shipped toy CLIP.

  Measured 0.85 (cube, sphere and cylinder 0.75, torus and cone 1.0), against 1.0 centred: the
  CLIP has only seen objects at the origin and reads the yellow sphere 2 px higher as "a yellow
  cube" from all 8 views, as it reads a smooth NeRF ball sitting 2 px high. This guards that
  level; the default evaluator (the ensemble, next test) reads them all.
  """
  toy_clip, renders = heldout_colour_renders
  assert shifted_r_precision(toy_clip, renders, 2) >= 0.8


def test_eval_clips_read_heldout_truth_centred_and_off_centre(heldout_colour_renders, eval_clips):
  """The default evaluator (mean similarity of the five toy CLIPs) on the same true renders.

  Measured 1.0 centred, 1.0 shifted 2 px (the shipped CLIP alone 0.85) and 0.925 shifted 3 px
  (alone 0.60: the yellow sphere 0.25).
  """
  _, renders = heldout_colour_renders
  assert len(eval_clips) == 5
  captions = list(world.PROMPTS)
  ranks = [eval_lib.retrieve(eval_clips, lit, captions, captions.index(prompt))[0]
           for prompt, lit in renders.items()]
  assert float(clip.r_precision(np.concatenate(ranks))) >= 0.95, ranks
  assert shifted_r_precision(eval_clips, renders, 2) >= 0.95
  assert shifted_r_precision(eval_clips, renders, 3) >= 0.85


def test_prior_samples_have_the_prompts_colour_and_shape():
  prior = guidance.Diffusion.from_pretrained(str(toy.PRIOR_DIR))
  prompts = ['a green cube', 'a orange cone', 'a blue torus', 'a yellow sphere']  # Last: held out.
  samples = sample_prior.sample_prompts(prior, prompts, jax.random.key(0), num_steps=25)
  assert samples.shape == (4, 4, 32, 32, 3)
  accuracy, per_prompt = sample_prior.color_accuracy(samples, prompts)
  assert accuracy >= 0.75, per_prompt  # Chance is 1/6.
  clip_model = clip.Clip.from_pretrained(str(toy.CLIP_DIR))
  r, per_prompt = sample_prior.clip_r_precision(clip_model, samples, prompts, world.PROMPTS)
  assert r >= 0.5, per_prompt  # Chance is 1/30; measured 0.62 (the yellow sphere's 0.0 included).
