"""Small DreamFusion runs for tests: a config sized for a CPU, in-process or as a subprocess."""

import os
import pathlib
import subprocess
import sys

from configs import dreamfusion as dreamfusion_config
from dreamfusion_jax import build
from dreamfusion_jax import export
from dreamfusion_jax import texture

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_values(model_dir, **extra):
  """Overrides of configs/dreamfusion.py: 8x8 renders, a small NeRF, 6 steps, small exports."""
  values = {
      'model': str(model_dir), 'model_dtype': 'float32', 'from_pt': False,
      'prompt': 'a red cube', 'num_steps': 6, 'batch_size': 1, 'checkpoint_every': 2,
      'log_every': 1, 'preview_every': 3, 'render.height': 8, 'render.width': 8,
      'render.num_samples': (8, 8), 'nerf.width': 16, 'nerf.num_blocks': 1, 'nerf.max_deg': 4,
      'shading.warmup_steps': 2, 'export.video_frames': 4, 'export.video_size': 16,
      'export.mesh_resolution': 32, 'export.mesh_threshold': 10.0, 'export.texture_size': 512,
  }
  values.update(extra)
  return values


def tiny_config(model_dir, **extra):
  """configs/dreamfusion.py with tiny_values: what main builds from main_command's flags."""
  config = dreamfusion_config.get_config()
  config.update_from_flattened_dict(tiny_values(model_dir, **extra))
  return config


def _flag(value):
  return ','.join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def main_command(workdir, model_dir, **extra):
  """The `python -m dreamfusion_jax.main` command of tiny_config(model_dir, **extra)."""
  return [sys.executable, '-m', 'dreamfusion_jax.main', '--config', 'configs/dreamfusion.py',
          '--workdir', str(workdir),
          *[f'--config.{k}={_flag(v)}' for k, v in tiny_values(model_dir, **extra).items()]]


def env(cache):
  """The environment of a test subprocess: the repo importable, one compilation cache."""
  return dict(os.environ, PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


def run(cmd, cache, **kwargs):
  """subprocess.run of cmd in the repo root with env(cache), output captured."""
  return subprocess.run(cmd, cwd=REPO, env=env(cache), capture_output=True, text=True,
                        timeout=900, **kwargs)


def error_line(result):
  """The single `error:` line of a failed run (asserting exit status 2 and no traceback)."""
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  return lines[0]


def restore(workdir):
  """(state, step) of the newest checkpoint of a run, rebuilt from its saved config.json."""
  loaded = build.load_run(workdir)
  return loaded.state, loaded.step


def texture_error(workdir):
  """Max |texture at each vertex's UV - the field's albedo there| of a run's mesh.glb and .obj.

  Reloads both files with trimesh, samples the texture at every vertex's UV (the nearest texel,
  glTF's texel centres at (i + 0.5) / size) and compares it with the trained NeRF's albedo at the
  vertex (the newest checkpoint).

  Returns:
    dict 'glb', 'obj' -> float, in [0, 1] colour units.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import trimesh  # pylint: disable=g-import-not-at-top
  loaded = build.load_run(workdir)
  params = loaded.state.params['nerf']
  _, albedo_fn = export.field_fns(loaded.run)
  albedo = lambda x: albedo_fn(params, x)
  errors = {}
  for fmt in ('glb', 'obj'):
    mesh = trimesh.load(pathlib.Path(workdir) / f'mesh.{fmt}', force='mesh')
    sampled = texture.texture_at_vertices(mesh)
    truth = np.asarray(albedo(jnp.asarray(mesh.vertices, jnp.float32)))
    errors[fmt] = float(np.max(np.abs(sampled - truth)))
  return errors


def step_setup(model_dir, **overrides):
  """(jitted step, fresh state, diffusion, text) of a 2-view 8x8 config with a tiny model."""
  config = dreamfusion_config.get_config()
  config.update_from_flattened_dict({
      'model': str(model_dir), 'model_dtype': 'float32', 'from_pt': False, 'batch_size': 2,
      'render.height': 8, 'render.width': 8, 'render.num_samples': (8, 8), 'nerf.width': 16,
      'nerf.num_blocks': 1, 'nerf.max_deg': 4, 'shading.warmup_steps': 0, **overrides})
  diffusion = build.load_diffusion(config)
  text = diffusion.encode_views(config.prompt)
  run = build.build(config)
  return run.make_step(donate=False), run.init_state(), diffusion, text
