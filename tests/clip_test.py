"""Frozen CLIP: the shipped toy CLIP, retrieval metrics, gradients, loading and bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import clip
from dreamfusion_jax import models
from dreamfusion_jax import toy
from dreamfusion_jax.toy import tokenizer as tokenizer_lib
from dreamfusion_jax.toy import world

WORDS = ('a', 'red', 'blue', 'cube', 'sphere')


@pytest.fixture(scope='module')
def toy_clip():
  return clip.Clip.from_pretrained(toy.CLIP_DIR)


def tiny_config(vocab):
  import transformers  # pylint: disable=g-import-not-at-top
  transformers.utils.logging.set_verbosity_error()
  text = transformers.CLIPTextConfig(
      vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
      num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab[tokenizer_lib.BOS],
      eos_token_id=vocab[tokenizer_lib.EOS], pad_token_id=vocab[tokenizer_lib.EOS])
  vision = transformers.CLIPVisionConfig(image_size=16, patch_size=8, hidden_size=32,
                                         intermediate_size=37, num_hidden_layers=1,
                                         num_attention_heads=4)
  return transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                 projection_dim=24)


def features(model, params, images, texts, tokenizer, mean=clip.OPENAI_MEAN, std=clip.OPENAI_STD):
  """Reference embeddings straight from transformers (NumPy normalisation)."""
  pixels = ((images - np.asarray(mean)) / np.asarray(std)).transpose(0, 3, 1, 2)
  image = np.asarray(model.get_image_features(pixels, params=params))
  ids = tokenizer(texts, padding='max_length', max_length=16, return_tensors='np').input_ids
  text = np.asarray(model.get_text_features(ids, params=params))
  normalize = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  return normalize(image), normalize(text)


def test_shipped_toy_clip_loads(toy_clip):
  assert toy_clip.image_size == 32
  emb = toy_clip.embed_text(list(world.PROMPTS))
  assert emb.shape[0] == len(world.PROMPTS) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  info = json.loads((toy.CLIP_DIR / 'training.json').read_text())
  assert not set(info['train_prompts']) & set(world.HELDOUT)


def test_retrieval_identity_and_wrong_assignment():
  eye = np.eye(30, dtype=np.float32)
  ranks = clip.retrieval_ranks(eye, eye, np.arange(30))
  np.testing.assert_array_equal(ranks, 0)
  assert float(clip.r_precision(ranks)) == 1.0
  # Labelled with the wrong caption: the shown one is better and the other 28 tie with the true
  # one (similarity 0); ties count against, so the rank is the worst, 29.
  shifted = clip.retrieval_ranks(eye, eye, np.roll(np.arange(30), 1))
  np.testing.assert_array_equal(shifted, 29)
  assert float(clip.r_precision(shifted)) == 0.0


def test_retrieval_of_unrelated_embeddings_is_chance():
  key_image, key_text, key_index = jax.random.split(jax.random.key(0), 3)
  images = clip.l2_normalize(jax.random.normal(key_image, (4000, 16)))
  texts = clip.l2_normalize(jax.random.normal(key_text, (10, 16)))
  true_index = jax.random.randint(key_index, (4000,), 0, 10)
  ranks = clip.retrieval_ranks(images, texts, true_index)
  assert abs(float(clip.r_precision(ranks)) - 0.1) < 0.02
  assert abs(float(jnp.mean(ranks)) - 4.5) < 0.2


def test_retrieval_ranks_closed_form():
  texts = np.asarray([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32)
  images = np.asarray([[0.8, 0.6], [0.8, 0.6]], np.float32)  # Similarities 0.8, 0.96, 0.6.
  np.testing.assert_array_equal(clip.retrieval_ranks(images, texts, [0, 2]), [1, 2])


def test_embed_images_differentiable_and_jittable(toy_clip):
  images = jnp.asarray(world.render_dataset(jax.random.key(2024), world.HELDOUT, 1, 32)[0][:4])
  target = toy_clip.embed_text(['a red cube'])[0]
  grad = jax.grad(lambda x: jnp.sum(toy_clip.embed_images(x) @ target))(images)
  assert grad.shape == images.shape
  assert np.all(np.isfinite(grad)) and float(jnp.max(jnp.abs(grad))) > 0.0
  np.testing.assert_allclose(jax.jit(clip.Clip.embed_images)(toy_clip, images),
                             toy_clip.embed_images(images), atol=1e-5)


def test_embed_images_resizes(toy_clip):
  views = world.sample_views(jax.random.key(5), 1, 32)
  big, _ = world.render_view('blue', 'cube', views['c2w'][0], 2.0 * views['focal'][0], 64)
  small, _ = world.render_view('blue', 'cube', views['c2w'][0], views['focal'][0], 32)
  other, _ = world.render_view('red', 'torus', views['c2w'][0], views['focal'][0], 32)
  emb_big = toy_clip.embed_images(big[None])  # Resized from 64 to the CLIP's 32 px.
  emb = toy_clip.embed_images(np.stack([small, other]))
  assert emb_big.shape == (1, toy_clip.embed_text('a').shape[1])
  assert float(emb_big[0] @ emb[0]) > 0.9  # The same view at twice the resolution.
  assert float(emb_big[0] @ emb[0]) > float(emb_big[0] @ emb[1]) + 0.5  # Not another object.


def test_tiny_random_clip_round_trips(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizer_lib.save_tokenizer(tmp_path, WORDS, 16)
  model = transformers.FlaxCLIPModel(tiny_config(tokenizer.get_vocab()), seed=3)
  model.save_pretrained(str(tmp_path), params=model.params)
  loaded = clip.Clip.from_pretrained(tmp_path)
  assert loaded.image_size == 16 and loaded.mean == clip.OPENAI_MEAN
  images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  texts = ['a red cube', 'a blue sphere']
  want_image, want_text = features(model, model.params, images, texts, tokenizer)
  np.testing.assert_allclose(loaded.embed_images(images), want_image, atol=1e-5)
  np.testing.assert_allclose(loaded.embed_text(texts), want_text, atol=1e-5)
  np.testing.assert_allclose(loaded.embed_text(texts[1])[0], want_text[1], atol=1e-5)  # Cached.


def test_pytorch_safetensors_match_torch(tmp_path):
  torch = pytest.importorskip('torch')
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizer_lib.save_tokenizer(tmp_path, WORDS, 16)
  torch.manual_seed(0)
  model = transformers.CLIPModel(tiny_config(tokenizer.get_vocab())).eval()
  model.save_pretrained(str(tmp_path), safe_serialization=True)
  with pytest.raises(models.ModelError, match='from_pt=True'):
    clip.Clip.from_pretrained(tmp_path)
  loaded = clip.Clip.from_pretrained(tmp_path, from_pt=True)
  images = np.random.default_rng(1).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  pixels = (images - np.asarray(clip.OPENAI_MEAN)) / np.asarray(clip.OPENAI_STD)
  with torch.no_grad():
    want = model.get_image_features(torch.tensor(pixels.transpose(0, 3, 1, 2)).float()).numpy()
  want /= np.linalg.norm(want, axis=-1, keepdims=True)
  np.testing.assert_allclose(loaded.embed_images(images), want, atol=1e-4)


def test_missing_folder_names_the_path(tmp_path):
  missing = tmp_path / 'no_such_clip'
  with pytest.raises(models.ModelError, match='no_such_clip'):
    clip.Clip.from_pretrained(missing)


def test_bad_folders(tmp_path):
  with pytest.raises(models.ModelError, match='config.json'):
    clip.Clip.from_pretrained(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
  with pytest.raises(models.ModelError, match='not a CLIP'):
    clip.Clip.from_pretrained(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'clip', 'vision_config': {}}))
  with pytest.raises(models.ModelError, match='no CLIP weights'):
    clip.Clip.from_pretrained(tmp_path)
  (tmp_path / 'pytorch_model.bin').write_bytes(b'')
  with pytest.raises(models.ModelError, match='allow_pickle'):
    clip.Clip.from_pretrained(tmp_path, from_pt=True)


def test_empty_text_is_refused(toy_clip):
  for bad in ('', '   ', [], ['a red cube', '']):
    with pytest.raises(ValueError, match='empty'):
      toy_clip.embed_text(bad)


def test_similarity_ranks_from_a_similarity_matrix():
  """Ranks straight from similarities (an ensemble's mean), ties counting against the truth."""
  sims = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.1], [0.3, 0.4, 0.8]])
  np.testing.assert_array_equal(clip.similarity_ranks(sims, [0, 0, 1]), [0, 1, 1])
  images = np.eye(3)[:2]
  texts = np.eye(3)
  np.testing.assert_array_equal(clip.similarity_ranks(images @ texts.T, [1, 1]),
                                clip.retrieval_ranks(images, texts, [1, 1]))
