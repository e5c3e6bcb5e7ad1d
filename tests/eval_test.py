"""Evaluation: metric closed forms, the eval cameras, the render pipeline, and the entry point."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamfusion_jax import build, camera, checkpoint, clip, config_checks, many_prompts, render, toy
from dreamfusion_jax import eval as eval_lib
from dreamfusion_jax.data import synthetic
from dreamfusion_jax.toy import tokenizer as tokenizer_lib
from dreamfusion_jax.toy import world

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_silhouette_iou_closed_forms():
  a = np.zeros((10, 10), np.float32)
  b = np.zeros((10, 10), np.float32)
  a[:, :6] = 1.0  # 60 pixels.
  b[:, 3:] = 0.9  # 70 pixels, 30 shared: IoU 30 / 100.
  assert eval_lib.silhouette_iou(a, a) == 1.0
  assert eval_lib.silhouette_iou(a[:, :3], b[:, :3]) == 0.0  # Disjoint.
  np.testing.assert_allclose(eval_lib.silhouette_iou(a, b), 0.3, rtol=1e-6)
  # Batched over leading axes; values at the threshold are outside; two empty masks agree.
  np.testing.assert_allclose(eval_lib.silhouette_iou(np.stack([a, a]), np.stack([a, b])),
                             [1.0, 0.3], rtol=1e-6)
  assert eval_lib.silhouette_iou(0.5 * a, a) == 0.0
  assert eval_lib.silhouette_iou(0 * a, 0 * b) == 1.0


def test_mean_and_nearest_color():
  for name, rgb in world.COLORS.items():
    assert eval_lib.nearest_color(rgb) == name
  albedo = np.zeros((2, 4, 4, 3))
  albedo[0] = (1.0, 0.0, 0.0)
  albedo[1] = (0.0, 0.0, 1.0)
  alpha = np.zeros((2, 4, 4))
  alpha[0, :2] = 1.0  # 8 red pixels and 8 blue pixels, pooled over both images.
  alpha[1, 2:] = 0.8
  np.testing.assert_allclose(eval_lib.mean_color(albedo, alpha), (0.5, 0.0, 0.5))
  assert eval_lib.mean_color(albedo, 0 * alpha) is None


def test_caption_set():
  captions, index = eval_lib.caption_set('A Blue Cone, front view')
  assert captions == list(world.PROMPTS) and captions[index] == 'a blue cone'
  captions, index = eval_lib.caption_set('a peacock', ['a dog', '', 'a cat', 'a dog'])
  assert captions == ['a dog', 'a cat', 'a peacock'] and index == 2
  captions, index = eval_lib.caption_set('a cat', ['a dog', 'a cat'])
  assert captions == ['a dog', 'a cat'] and index == 1


@pytest.fixture(scope='module')
def true_views():
  """{shape: (color, rgb [8, 64, 64, 3], alpha [8, 64, 64])} from the default eval cameras."""
  cameras = eval_lib.eval_cameras(8, 64)
  views = {}
  for shape, color in zip(world.SHAPES, world.COLORS):
    views[shape] = (color, *eval_lib.true_renders(color, shape, cameras, 64))
  return views


def test_eval_cameras_frame_every_toy_shape(true_views):
  cameras = eval_lib.eval_cameras(8, 64)
  np.testing.assert_allclose(cameras.azimuth_deg, np.arange(8) * 45.0)
  np.testing.assert_allclose(cameras.elevation_deg, eval_lib.ELEVATION_DEG)
  np.testing.assert_allclose(np.linalg.norm(cameras.c2w[:, :3, 3], axis=-1), eval_lib.DISTANCE,
                             rtol=1e-6)
  for shape, (_, _, alpha) in true_views.items():
    assert (alpha.sum(axis=(1, 2)) > 0.1 * 64 * 64).all(), shape  # Seen, and not tiny.
    border = np.concatenate([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], -1)
    assert not border.any(), f'the {shape} touches the image border'


def test_true_object_scores_perfectly_and_other_shapes_do_not(true_views):
  for shape, (color, rgb, alpha) in true_views.items():
    scores = eval_lib.toy_scores(rgb, alpha, alpha, color)
    np.testing.assert_array_equal(scores['ious'], 1.0)
    assert scores['iou'] == 1.0 and scores['color'] == color and scores['color_correct']
    for other, (_, _, other_alpha) in true_views.items():
      if other != shape:
        iou = eval_lib.toy_scores(rgb, alpha, other_alpha, color)['iou']
        assert iou < 0.9, (shape, other, iou)


def test_nerf_and_toy_world_cast_the_same_rays():
  """The NeRF renderer's rays and the true object's rays agree pixel for pixel."""
  size = 16
  cameras = eval_lib.eval_cameras(3, size)
  rays = camera.generate_rays(cameras.c2w, cameras.focal, size, size)  # [3, H, W]
  for i, (c2w, focal) in enumerate(zip(cameras.c2w, cameras.focal)):
    origins, directions = synthetic.camera_rays(np.asarray(c2w), float(focal), size, size)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    np.testing.assert_allclose(rays.origins[i].reshape(-1, 3), origins, atol=1e-5)
    np.testing.assert_allclose(rays.directions[i].reshape(-1, 3), directions, atol=1e-5)


class ConeField(nn.Module):
  """A stand-in for nerf.NeRF: the toy world's red cone as a dense solid (no parameters)."""
  dir_max_deg: int = 0

  def __call__(self, means, variances, directions=None):
    del variances, directions
    cone = world.make_primitive('red', 'cone')
    x, y, z = jnp.moveaxis(means - jnp.asarray(cone.base_center), -1, 0)
    radius_at_z = cone.radius * (1.0 - z / cone.height)
    inside = jnp.minimum(jnp.minimum(radius_at_z - jnp.sqrt(x**2 + y**2 + 1e-12), z),
                         cone.height - z)  # > 0 inside, roughly the distance to the surface.
    density = 300.0 * jax.nn.sigmoid(inside / 0.001)  # A sharp edge: no halo outside.
    return density, jnp.broadcast_to(jnp.asarray(cone.albedo, jnp.float32), means.shape)


def toy_config(**overrides):
  from configs import toy  # pylint: disable=g-import-not-at-top
  config = toy.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def test_analytic_cone_through_the_render_pipeline():
  """A NeRF that is the true cone scores near 1 through Renderer, cameras and thresholds."""
  size = 32
  config = toy_config()
  cameras = eval_lib.eval_cameras(4, size)
  params = {'nerf': {}, 'background': {}}
  run = build.build(config)
  renderer = render.Renderer(ConeField(), run.background_model, run.render_fn,
                             chunk_size=config.render.chunk_size,
                             light_color=config.shading.light_color, ambient=config.shading.ambient)
  renders = eval_lib.render_scene(renderer, params, cameras, size)
  albedo, opacity = renders['albedo'], renders['opacity']
  assert albedo.shape == (4, size, size, 3) and opacity.shape == (4, size, size)
  _, true_alpha = eval_lib.true_renders('red', 'cone', cameras, size)
  # The colour render is the true cone lit from the camera (the toy world's light and ambient);
  # textureless is the same light on white. Compared inside the silhouette, edges aside.
  inside = (opacity > 0.99) & (true_alpha > 0.99)
  for i, (c2w, focal) in enumerate(zip(cameras.c2w, cameras.focal)):
    c2w = np.asarray(c2w)
    lit, _ = world.render_view('red', 'cone', c2w, float(focal), size, light=c2w[:3, 3])
    err = np.abs(renders['color'][i] - lit)[inside[i]]
    assert np.median(err) < 0.03, (i, np.median(err))
    light = renders['textureless'][i][inside[i]]
    np.testing.assert_allclose(light[:, 0], light[:, 1], atol=1e-5)  # Grey: no albedo.
    np.testing.assert_allclose(renders['color'][i][inside[i]],
                               light * np.asarray(world.COLORS['red']), atol=0.02)
  scores = eval_lib.toy_scores(albedo, opacity, true_alpha, 'red')
  assert scores['iou'] > 0.9 and scores['color_correct'], scores
  np.testing.assert_allclose(scores['color_rgb'], world.COLORS['red'], atol=0.05)
  # Upside down (a flipped image convention) it would score far lower.
  flipped = eval_lib.toy_scores(albedo, opacity[:, ::-1], true_alpha, 'red')
  assert flipped['iou'] < 0.7, flipped


def test_retrieve_averages_the_similarities_of_an_ensemble(tiny_clip):
  """Two copies of one CLIP retrieve as that CLIP; the ensemble's top caption is its mean's."""
  _, model = tiny_clip
  images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  captions = list(world.PROMPTS[:6])
  single = eval_lib.retrieve(model, images, captions, 2)
  double = eval_lib.retrieve([model, model], images, captions, 2)
  np.testing.assert_array_equal(single[0], double[0])
  np.testing.assert_array_equal(single[1], double[1])


def test_retrieve_ranks_by_the_mean_similarity_of_different_clips(heldout_colour_renders,
                                                                    eval_clips):
  """Two different CLIPs: retrieve's ranks and top captions are those of their mean similarity."""
  _, renders = heldout_colour_renders
  captions = list(world.PROMPTS)
  # Shifted 3 px, where the shipped CLIP alone misreads some views and the ensemble does not.
  images = np.concatenate([np.roll(lit, 3, axis=1) for lit in renders.values()])
  truth = np.repeat([captions.index(p) for p in renders], 8)
  pair = eval_clips[:2]
  sims = np.mean([np.asarray(m.embed_images(images)) @ np.asarray(m.embed_text(captions)).T
                  for m in pair], axis=0)
  ranks, top = eval_lib.retrieve(pair, images, captions, truth)
  alone, _ = eval_lib.retrieve(pair[0], images, captions, truth)
  assert np.any(alone != ranks)  # The two CLIPs disagree here, so the mean is what is tested.
  np.testing.assert_array_equal(top, np.argmax(sims, axis=-1))
  np.testing.assert_array_equal(ranks, clip.similarity_ranks(sims, truth))


def test_load_clips_names_the_toy_ensemble_and_refuses_an_empty_name(monkeypatch):
  monkeypatch.setattr(eval_lib, '_load_clip', lambda name: name)
  assert eval_lib._load_clips('toy') == [str(d) for d in toy.EVAL_CLIP_DIRS]  # pylint: disable=protected-access
  assert all((d / 'flax_model.msgpack').is_file() for d in toy.EVAL_CLIP_DIRS)
  assert eval_lib._load_clips('a, b') == ['a', 'b']  # pylint: disable=protected-access
  with pytest.raises(eval_lib.EvalError, match='empty CLIP'):
    eval_lib._load_clips('a,,b')  # pylint: disable=protected-access


def save_tiny_clip(folder, size=16, width=32):
  """Saves a random FlaxCLIPModel (16 px, toy-world tokenizer) and returns it as a clip.Clip."""
  import transformers  # pylint: disable=g-import-not-at-top
  transformers.utils.logging.set_verbosity_error()
  tokenizer = tokenizer_lib.save_tokenizer(folder, world.WORDS, 16)
  vocab = tokenizer.get_vocab()
  small = {'hidden_size': width, 'intermediate_size': 2 * width, 'num_hidden_layers': 1,
           'num_attention_heads': 2, 'projection_dim': width}
  text = transformers.CLIPTextConfig(
      vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=vocab[tokenizer_lib.BOS],
      eos_token_id=vocab[tokenizer_lib.EOS], pad_token_id=vocab[tokenizer_lib.EOS], **small)
  vision = transformers.CLIPVisionConfig(image_size=size, patch_size=4, **small)
  config = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                   projection_dim=width)
  model = transformers.FlaxCLIPModel(config, _do_init=False)
  params = jax.jit(model.init_weights, static_argnums=1)(jax.random.PRNGKey(0),
                                                         model.input_shape)
  model.save_pretrained(str(folder), params=params)
  return clip.Clip(params=params, module=model, tokenizer=tokenizer, image_size=size)


@pytest.fixture(scope='module')
def tiny_clip(tmp_path_factory):
  """(folder, clip.Clip) of a tiny random CLIP; the Clip is built, not loaded, to save time."""
  folder = tmp_path_factory.mktemp('tiny_clip')
  return folder, save_tiny_clip(folder)


@pytest.fixture
def clip_loader(tiny_clip, monkeypatch):
  """eval's CLIP loading answers the tiny CLIP's folder with the already built model.

  Clip.from_pretrained itself is tested in clip_test.py and by the slow test below.
  """
  folder, model = tiny_clip

  def load(path_or_id):
    assert path_or_id == str(folder)
    return model

  monkeypatch.setattr(eval_lib, '_load_clip', load)
  return folder


RUN_OVERRIDES = {'prompt': 'a red cube', 'nerf.num_blocks': 1, 'nerf.width': 16,
                 'render.num_samples': (8, 8)}


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A run folder as fit_dreamfusion leaves it: config.json and a checkpoint of step 3.

  The state is freshly initialised (a density blob), which is all the evaluation needs; the
  slow test below evaluates a run trained through the real entry point.
  """
  config = toy_config(**RUN_OVERRIDES)
  workdir = tmp_path_factory.mktemp('run')
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  state = build.build(config).init_state()
  with checkpoint.Checkpointer(workdir / 'checkpoints', max_to_keep=1,
                               metadata=config_checks.run_metadata(config)) as ckpt:
    ckpt.save(3, state)
  return workdir


KEYS = {'prompt', 'iou', 'volume_iou', 'chamfer', 'shape_precision_geometry', 'color',
        'color_rgb', 'color_correct', 'r_precision',
        'r_precision_geometry', 'r_precision_albedo', 'clip',
        'num_captions', 'checkpoint_step', 'cameras', 'views', 'note'}


def check_common(results, num_views, num_captions):
  assert set(results) == KEYS
  assert results['checkpoint_step'] == 3 and results['num_captions'] == num_captions
  assert 0.0 <= results['r_precision'] <= 1.0
  assert results['cameras']['azimuth_deg'] == [i * 360.0 / num_views for i in range(num_views)]
  assert len(results['views']) == num_views
  for view in results['views']:
    assert set(view) == {'azimuth_deg', 'elevation_deg', 'iou', 'rank', 'rank_geometry',
                         'rank_albedo', 'rank_shape', 'top_caption'}
    assert 0 <= view['rank'] < num_captions and view['elevation_deg'] == 30.0
  ranks = np.asarray([v['rank'] for v in results['views']])
  assert results['r_precision'] == pytest.approx(np.mean(ranks == 0))
  assert results['color_rgb'] is None or all(0 <= c <= 1 for c in results['color_rgb'])


def test_main_evaluates_a_toy_run(run_dir, clip_loader, capsys):
  argv = ['--workdir', str(run_dir), '--clip', str(clip_loader), '--num_views', '2',
          '--size', '16']
  assert eval_lib.main(argv) == 0
  results = json.loads((run_dir / 'eval.json').read_text())
  check_common(results, num_views=2, num_captions=len(world.PROMPTS))
  assert results['prompt'] == 'a red cube' and results['clip'] == str(clip_loader)
  assert 0.0 <= results['iou'] <= 1.0 and results['note'] is None
  assert 0.0 <= results['volume_iou'] <= 1.0
  assert results['chamfer'] is None or results['chamfer'] > 0
  ranks = [v['rank_shape'] for v in results['views']]
  assert all(0 <= r < 5 for r in ranks)
  assert results['shape_precision_geometry'] == pytest.approx(np.mean(np.array(ranks) == 0))
  assert results['color'] in world.COLORS
  assert results['color_correct'] == (results['color'] == 'red')
  assert all(0.0 <= v['iou'] <= 1.0 for v in results['views'])
  assert all(v['top_caption'] in world.PROMPTS for v in results['views'])
  assert (run_dir / 'eval_views.png').is_file()
  assert 'CLIP R-precision' in capsys.readouterr().out


def test_main_evaluates_a_non_toy_prompt(run_dir, clip_loader, tmp_path, capsys):
  captions = tmp_path / 'captions.txt'
  captions.write_text('a dog\na red cube\n\na cat\n')
  argv = ['--workdir', str(run_dir), '--clip', str(clip_loader), '--num_views', '2',
          '--size', '16', '--prompt', 'a peacock on a surfboard', '--captions', str(captions)]
  assert eval_lib.main(argv) == 0
  results = json.loads((run_dir / 'eval.json').read_text())
  check_common(results, num_views=2, num_captions=4)
  assert results['prompt'] == 'a peacock on a surfboard'
  assert results['iou'] is None and results['color'] is None
  assert results['volume_iou'] is None and results['shape_precision_geometry'] is None
  assert results['color_correct'] is None and 'real CLIP' in results['note']
  assert all(v['iou'] is None for v in results['views'])
  assert 'real CLIP' in capsys.readouterr().out


def error_line(code, capsys):
  assert code == 2
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


def listing(folder):
  return sorted(str(p.relative_to(folder)) for p in folder.rglob('*'))


def test_refuses_missing_or_unfinished_runs(run_dir, tmp_path, capsys):
  missing = tmp_path / 'missing'
  line = error_line(eval_lib.main(['--workdir', str(missing)]), capsys)
  assert 'is not a folder' in line and not missing.exists()
  not_a_run = tmp_path / 'not_a_run'
  not_a_run.mkdir()
  (not_a_run / 'notes.txt').write_text('x')
  line = error_line(eval_lib.main(['--workdir', str(not_a_run)]), capsys)
  assert 'config.json not found' in line and listing(not_a_run) == ['notes.txt']
  unfinished = tmp_path / 'unfinished'  # Configured, but no checkpoint yet.
  unfinished.mkdir()
  (unfinished / 'config.json').write_text((run_dir / 'config.json').read_text())
  line = error_line(eval_lib.main(['--workdir', str(unfinished)]), capsys)
  assert 'holds no checkpoint' in line and listing(unfinished) == ['config.json']
  (unfinished / 'checkpoints').mkdir()
  line = error_line(eval_lib.main(['--workdir', str(unfinished)]), capsys)
  assert 'holds no checkpoint' in line and listing(unfinished) == ['checkpoints', 'config.json']


def test_refuses_a_bad_clip(run_dir, tmp_path, capsys):
  before = listing(run_dir)
  line = error_line(eval_lib.main(['--workdir', str(run_dir), '--clip', str(tmp_path)]), capsys)
  assert '--clip' in line and 'config.json' in line
  assert listing(run_dir) == before


def run(args, cache):
  """Runs `python -m <args>` in the repository with a shared JAX compilation cache."""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900, check=False)


@pytest.mark.slow
def test_real_run_through_the_entry_points(tmp_path, tiny_clip):
  """DreamFusion with a tiny 16 px pixel model through main, then eval through its entry point."""
  from dreamfusion_jax.testing import tiny_models  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'tiny_pixel'
  tiny_models.save_flax_model(model_dir, pixel=True)
  workdir, cache = tmp_path / 'run', tmp_path / 'cache'
  values = {'model': model_dir, 'prompt': 'a red cube', 'render.height': 16,
            'render.width': 16, 'render.num_samples': '8,8', 'nerf.max_deg': 3,
            'nerf.width': 16, 'num_steps': 4, 'checkpoint_every': 2, 'preview_every': 100,
            'log_every': 1, 'shading.warmup_steps': 0, 'export.video_frames': 2,
            'export.video_size': 16, 'export.mesh_resolution': 16}
  result = run(['dreamfusion_jax.main', '--config', 'configs/toy.py', '--workdir', str(workdir),
                *[f'--config.{k}={v}' for k, v in values.items()]], cache)
  assert result.returncode == 0, result.stderr[-3000:]
  result = run(['dreamfusion_jax.eval', '--workdir', str(workdir), '--clip', str(tiny_clip[0]),
                '--num_views', '4', '--size', '32'], cache)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'IoU' in result.stdout and 'R-precision' in result.stdout
  results = json.loads((workdir / 'eval.json').read_text())
  assert results['checkpoint_step'] == 4 and len(results['views']) == 4
  assert 0.0 <= results['iou'] <= 1.0 and results['color'] in world.COLORS
  missing = run(['dreamfusion_jax.eval', '--workdir', str(tmp_path / 'missing')], cache)
  assert missing.returncode == 2 and 'error: --workdir' in missing.stderr, missing.stderr


def test_coco_captions_are_the_153_of_the_benchmark():
  captions = eval_lib.coco_captions()
  assert len(captions) == len(set(captions)) == 153
  assert captions[0] == 'a blue bicycle parked by a metal gate.'
  assert captions[-1] == 'a worn toothbrush sits on a windowsill near the screen.'
  assert 'a blue jug in a garden filled with mud.' in captions  # Trailing spaces stripped.
  assert all(c == eval_lib.normalize_caption(c) for c in captions)
  assert eval_lib.normalize_caption(' A Red Cube. ') == 'a red cube.'


def test_main_retrieves_among_the_coco_captions(run_dir, clip_loader):
  argv = ['--workdir', str(run_dir), '--clip', str(clip_loader), '--num_views', '2', '--size',
          '16', '--captions', 'coco', '--prompt', 'A blue bicycle parked by a metal gate']
  assert eval_lib.main(argv) == 0
  results = json.loads((run_dir / 'eval.json').read_text())
  check_common(results, num_views=2, num_captions=153)  # The prompt is one of them.
  assert results['prompt'] == 'a blue bicycle parked by a metal gate.'


def test_many_prompt_run_is_scored_per_prompt_with_a_table(run_dir, clip_loader, tmp_path,
                                                           capsys):
  prompts = ('a red cube', 'a blue sphere')
  workdir = tmp_path / 'many'
  for folder, prompt in zip(many_prompts.prompt_dirs(workdir, prompts), prompts):
    shutil.copytree(run_dir / 'checkpoints', folder / 'checkpoints')
    config = json.loads((run_dir / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps(dict(config, prompt=prompt)))
  argv = ['--workdir', str(workdir), '--clip', str(clip_loader), '--num_views', '2',
          '--size', '16']
  assert eval_lib.main(argv) == 0
  scores = json.loads((workdir / 'eval.json').read_text())
  assert [row['prompt'] for row in scores['prompts']] == list(prompts)
  per_prompt = [json.loads((f / 'eval.json').read_text())
                for f in many_prompts.prompt_dirs(workdir, prompts)]
  for row, result in zip(scores['prompts'], per_prompt):
    assert row['r_precision'] == result['r_precision']
    assert row['ranks'] == [v['rank'] for v in result['views']]
  assert scores['r_precision'] == pytest.approx(np.mean([r['r_precision'] for r in per_prompt]))
  assert scores['iou'] == pytest.approx(np.mean([r['iou'] for r in per_prompt]))
  assert 'mean R-precision' in capsys.readouterr().out
  line = error_line(eval_lib.main(argv + ['--prompt', 'a cat']), capsys)
  assert 'holds 2 prompts' in line and 'drop --prompt' in line


def test_table_of_exact_and_shuffled_matches():
  """R-precision over runs: 1 when every view retrieves its caption, chance when shuffled."""
  rng = np.random.default_rng(0)
  captions = 20
  embeddings = np.eye(captions, dtype=np.float32)
  def result(i, image_index):
    ranks = clip.retrieval_ranks(embeddings[image_index], embeddings,
                                 np.full(len(image_index), i))
    views = [{'rank': int(r), 'rank_geometry': int(r)} for r in ranks]
    r = float(clip.r_precision(ranks))
    return {'prompt': f'caption {i}', 'r_precision': r, 'r_precision_geometry': r,
            'iou': None, 'color_correct': None, 'views': views}
  exact = eval_lib.table([result(i, np.full(8, i)) for i in range(captions)])
  assert exact['r_precision'] == 1.0 and exact['iou'] is None
  shuffled = eval_lib.table([result(i, rng.integers(0, captions, 8)) for i in range(captions)])
  assert abs(shuffled['r_precision'] - 1 / captions) < 0.05
