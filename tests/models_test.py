"""Frozen weights land on this process's first device, whatever device a loader committed them to.

diffusers' Flax loader commits weights to the CPU; on a GPU, jit then refuses a step whose NeRF
lives on the GPU ('incompatible devices'). Two simulated CPU devices reproduce the mismatch.
"""

import os
import subprocess
import sys
import textwrap

from dreamfusion_jax import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = textwrap.dedent('''
    import jax
    import numpy as np
    from dreamfusion_jax import models
    other = jax.devices()[1]
    params = {'w': jax.device_put(np.ones(3, np.float32), other),
              'step': jax.device_put(np.ones(2, np.int32), other)}
    moved = models.cast_floats(params, np.float32)
    first = jax.local_devices()[0]
    assert all(x.devices() == {first} for x in jax.tree.leaves(moved)), moved
    assert moved['step'].dtype == np.int32
    # The jitted use that failed on a GPU: one argument from the loader, one made here.
    print(float(jax.jit(lambda a, b: (a * b).sum())(moved['w'], jax.numpy.ones(3))))
''')


def test_cast_floats_moves_weights_to_the_first_device():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  done = subprocess.run([sys.executable, '-c', CODE], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1] == '3.0'


# Stand-in hub listings (the files of these repositories, sizes left out).
SD21_BASE = [
    '.gitattributes', 'README.md', 'feature_extractor/preprocessor_config.json',
    'model_index.json', 'scheduler/scheduler_config.json', 'text_encoder/config.json',
    'text_encoder/model.fp16.safetensors', 'text_encoder/model.safetensors',
    'text_encoder/pytorch_model.bin', 'text_encoder/pytorch_model.fp16.bin',
    'tokenizer/merges.txt', 'tokenizer/special_tokens_map.json', 'tokenizer/tokenizer_config.json',
    'tokenizer/vocab.json', 'unet/config.json', 'unet/diffusion_pytorch_model.bin',
    'unet/diffusion_pytorch_model.fp16.bin', 'unet/diffusion_pytorch_model.fp16.safetensors',
    'unet/diffusion_pytorch_model.safetensors', 'unet/diffusion_flax_model.msgpack',
    'v2-1_512-ema-pruned.ckpt', 'v2-1_512-ema-pruned.safetensors',
    'v2-1_512-nonema-pruned.ckpt', 'v2-1_512-nonema-pruned.safetensors', 'vae/config.json',
    'vae/diffusion_pytorch_model.bin', 'vae/diffusion_pytorch_model.fp16.bin',
    'vae/diffusion_pytorch_model.fp16.safetensors', 'vae/diffusion_pytorch_model.safetensors',
    'vae/diffusion_flax_model.msgpack']
CLIP_B32 = [
    '.gitattributes', 'README.md', 'config.json', 'flax_model.msgpack', 'merges.txt',
    'preprocessor_config.json', 'pytorch_model.bin', 'special_tokens_map.json',
    'tf_model.h5', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'model.safetensors']


def fetched(monkeypatch, tmp_path, listing, load):
  """The files `load` asks the hub for, filtered from `listing` as snapshot_download does."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import utils  # pylint: disable=g-import-not-at-top
  asked = []

  def snapshot_download(repo_id, allow_patterns=None, **kwargs):
    del repo_id, kwargs
    asked.extend(utils.filter_repo_objects(listing, allow_patterns=allow_patterns))
    raise OSError('offline')  # Nothing to load: the test reads what was asked for.

  monkeypatch.setattr(huggingface_hub, 'snapshot_download', snapshot_download)
  monkeypatch.chdir(tmp_path)  # No local folder named like the hub id.
  try:
    load()
  except models.ModelError:
    pass
  return set(asked)


def test_only_the_files_a_load_reads_are_downloaded(monkeypatch, tmp_path):
  from dreamfusion_jax import clip  # pylint: disable=g-import-not-at-top
  from dreamfusion_jax import guidance  # pylint: disable=g-import-not-at-top
  config = {'model_index.json', 'scheduler/scheduler_config.json', 'unet/config.json',
            'vae/config.json', 'text_encoder/config.json', 'tokenizer/merges.txt',
            'tokenizer/special_tokens_map.json', 'tokenizer/tokenizer_config.json',
            'tokenizer/vocab.json'}
  load = lambda **kw: lambda: guidance.Diffusion.from_pretrained(
      'stabilityai/stable-diffusion-2-1-base', **kw)
  assert fetched(monkeypatch, tmp_path, SD21_BASE, load(from_pt=True)) == config | {
      'unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors',
      'text_encoder/model.safetensors'}
  assert fetched(monkeypatch, tmp_path, SD21_BASE, load(from_pt=False)) == config | {
      'unet/diffusion_flax_model.msgpack', 'vae/diffusion_flax_model.msgpack'}
  assert fetched(monkeypatch, tmp_path, SD21_BASE, load(from_pt=True, allow_pickle=True)) == (
      config | {f'{c}/diffusion_pytorch_model.{e}' for c in ('unet', 'vae')
                for e in ('safetensors', 'bin')}
      | {'text_encoder/model.safetensors', 'text_encoder/pytorch_model.bin'})
  clip_config = {'config.json', 'preprocessor_config.json', 'merges.txt', 'vocab.json',
                 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'}
  load_clip = lambda **kw: lambda: clip.Clip.from_pretrained('openai/clip-vit-base-patch32', **kw)
  assert fetched(monkeypatch, tmp_path, CLIP_B32, load_clip()) == clip_config | {
      'flax_model.msgpack'}
  assert fetched(monkeypatch, tmp_path, CLIP_B32, load_clip(from_pt=True)) == clip_config | {
      'model.safetensors'}
