"""Tests of the toy world: geometry against closed forms, captions, held-out set, tokenizer."""

import math
import json

import jax
import numpy as np
import pytest
import transformers

from dreamfusion_jax import camera
from dreamfusion_jax import toy
from dreamfusion_jax.data import primitives
from dreamfusion_jax.data import synthetic
from dreamfusion_jax.toy import tokenizer as tokenizer_lib
from dreamfusion_jax.toy import world


@pytest.mark.parametrize('distance,focal', [(1.0, 40.0), (1.5, 90.0)])
def test_sphere_silhouette_has_analytic_area(distance, focal):
  """The toy world's sphere (radius 0.3) and the synthetic scenes' renderer (data/synthetic.py)
  both cover the analytic area: a sphere of radius r seen from d subtends asin(r / d)."""
  size = 96
  c2w = np.asarray(camera.look_at(np.array([distance, 0.0, 0.0]), np.zeros(3)))
  _, alpha = world.render_view('red', 'sphere', c2w, focal, size, supersample=4)
  expected = world.sphere_silhouette_area(distance, focal)
  assert alpha.sum() == pytest.approx(expected, rel=0.01)
  assert expected > math.pi * (focal * 0.3 / distance)**2
  r, dist, f = 0.5, 4.0, 200.0  # The synthetic renderer, 1 sample per pixel, from an angle.
  sphere = primitives.Sphere((0.0, 0.0, 0.0), r, (0.9, 0.2, 0.1))
  rgba = synthetic.render_view([sphere], synthetic.orbit_pose(dist, 25.0, 40.0), f, 128, 128)
  area = np.sum(rgba[..., 3] > 0.5)
  exact = math.pi * (f * r / math.sqrt(dist**2 - r**2)) ** 2
  assert abs(area - exact) / exact < 0.02


def test_unlit_object_has_its_albedo_and_lit_one_is_darker():
  c2w = np.asarray(camera.look_at(np.array([0.0, -1.2, 0.4]), np.zeros(3)))
  rgb, alpha = world.render_view('blue', 'cube', c2w, 30.0, 32)
  inside = alpha == 1.0
  assert inside.sum() > 50
  np.testing.assert_allclose(rgb[inside], np.broadcast_to(world.COLORS['blue'], rgb[inside].shape),
                             atol=1e-6)
  np.testing.assert_allclose(rgb[alpha == 0.0], 1.0)  # The white background.
  lit, _ = world.render_view('blue', 'cube', c2w, 30.0, 32, light=np.array([0.0, -3.0, 0.0]))
  assert np.all(lit[inside] <= rgb[inside] + 1e-6)
  # The face looking at the light gets ambient + light colour = full albedo.
  assert np.max(lit[inside][:, 2]) == pytest.approx(world.COLORS['blue'][2], abs=0.02)


def test_captions_follow_the_camera_view_labels():
  images, alphas, captions, index = world.render_dataset(jax.random.key(3), ['a red cone'], 40, 8)
  views = world.sample_views(jax.random.split(jax.random.fold_in(jax.random.key(3), 0))[0], 40, 8)
  labels = np.asarray(camera.view_labels(views['elevation_deg'], views['azimuth_deg']))
  assert captions == [f'a red cone, {camera.VIEW_NAMES[i]} view' for i in labels]
  assert set(labels) == {0, 1, 2, 3}
  assert images.shape == (40, 8, 8, 3) and alphas.shape == (40, 8, 8)
  assert np.all(index == 0)
  assert np.all((images >= 0) & (images <= 1))


def test_every_object_is_framed_by_the_paper_cameras():
  views = world.sample_views(jax.random.key(0), 12, 32)
  for shape in world.SHAPES:
    coverage = [world.render_view('green', shape, views['c2w'][i], float(views['focal'][i]),
                                  32)[1].sum() for i in range(12)]
    assert min(coverage) > 10  # Never out of view or a speck.


def test_target_jitter_moves_objects_off_centre_and_zero_keeps_the_paper_views():
  key = jax.random.key(4)
  plain = world.sample_views(key, 16, 32)
  same = world.sample_views(key, 16, 32, target_jitter=0.0)
  jittered = world.sample_views(key, 16, 32, target_jitter=0.06)
  for name in plain:
    np.testing.assert_array_equal(plain[name], same[name])
  # Same orbit angles, distances and lenses; only where the cameras look moves.
  for name in ('focal', 'elevation_deg', 'azimuth_deg'):
    np.testing.assert_array_equal(plain[name], jittered[name])
  targets = [np.asarray(v['c2w'][:, :3, 3]) - np.asarray(camera.spherical_to_position(
      v['elevation_deg'], v['azimuth_deg'], np.linalg.norm(plain['c2w'][:, :3, 3], axis=-1)))
             for v in (plain, jittered)]
  np.testing.assert_allclose(targets[0], 0.0, atol=1e-5)
  assert np.all(np.abs(targets[1]) <= 0.06 + 1e-5) and np.abs(targets[1]).max() > 0.03

  def centroids(views):  # Silhouette centres in pixels from the image centre.
    out = []
    for i in range(16):
      alpha = world.render_view('red', 'sphere', views['c2w'][i], float(views['focal'][i]),
                                32)[1]
      rows, cols = np.mgrid[:32, :32] + 0.5
      out.append([np.sum(alpha * rows) / alpha.sum() - 16, np.sum(alpha * cols) / alpha.sum() - 16])
    return np.abs(np.asarray(out))

  assert centroids(plain).max() < 0.05
  assert centroids(jittered).max() > 0.5


def test_heldout_prompts_are_kept_out_but_their_words_are_seen():
  assert toy.HELDOUT == world.HELDOUT and len(set(world.HELDOUT)) == 5
  assert set(world.HELDOUT) <= set(world.PROMPTS)
  assert not set(world.HELDOUT) & set(world.TRAIN_PROMPTS)
  assert len(world.PROMPTS) == len(world.COLORS) * len(world.SHAPES) >= 30
  for text in world.HELDOUT:
    color, shape = world.parse_prompt(text)
    assert any(p.endswith(f' {shape}') for p in world.TRAIN_PROMPTS)
    assert any(p.startswith(f'a {color} ') for p in world.TRAIN_PROMPTS)


def test_parse_prompt():
  assert world.parse_prompt('a red cube') == ('red', 'cube')
  assert world.parse_prompt('A Red Cube, side view') == ('red', 'cube')
  assert world.parse_prompt('a DSLR photo of a peacock') is None
  assert world.parse_prompt('a pink cube') is None
  with pytest.raises(ValueError, match='unknown toy shape'):
    world.make_primitive('red', 'pyramid')


@pytest.mark.parametrize('which', ['fresh', 'shipped prior'])
def test_toy_tokenizer_keeps_every_caption_word_whole(tmp_path, which):
  """A tokenizer saved from world.WORDS, and the shipped prior's: one token per caption word."""
  if which == 'fresh':
    tokenizer = tokenizer_lib.save_tokenizer(tmp_path, world.WORDS, 16)
  else:
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(toy.PRIOR_DIR / 'tokenizer'))
  for text in world.PROMPTS:
    for view in camera.VIEW_NAMES:
      words = f'{text}, {view} view'.replace(',', ' ,').split()
      ids = tokenizer(f'{text}, {view} view').input_ids
      assert len(ids) == len(words) + 2 <= 16  # BOS, one token per word or comma, EOS.


def test_shipped_tokenizers_list_the_words_they_were_made_from(tmp_path):
  """words.json beside each shipped vocabulary: world.WORDS, from which that vocabulary comes."""
  fresh = tmp_path / 'fresh'
  tokenizer_lib.save_tokenizer(fresh, world.WORDS, 16)
  assert tokenizer_lib.known_words(fresh) == list(world.WORDS)
  vocab = json.loads((fresh / 'vocab.json').read_text())
  for folder in (toy.PRIOR_DIR / 'tokenizer', *toy.EVAL_CLIP_DIRS):
    assert tokenizer_lib.known_words(folder) == list(world.WORDS), folder
    assert json.loads((folder / 'vocab.json').read_text()) == vocab, folder
  assert tokenizer_lib.known_words(tmp_path) is None  # Any other tokenizer: no word list.
  assert tokenizer_lib.unknown_words('A pink cube, front view', world.WORDS) == ['pink']
