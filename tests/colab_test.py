"""The notebooks of colab/, executed cell by cell in a Jupyter kernel running this Python."""

import json
import pathlib
import sys

import nbclient
import nbformat
import pytest

from dreamfusion_jax.testing import tiny_models

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / 'colab'
KERNEL = 'dreamfusion-jax-test'
EVAL_KEYS = ('iou', 'color', 'color_correct', 'r_precision')
# The small toy run: one level of 8 samples per ray, a short small video, a coarse mesh, and an
# evaluation from 2 views.
SMALL_RUN = ['--config.render.num_samples=8,', '--config.render.chunk_size=1024',
             '--config.export.video_frames=4', '--config.export.video_size=32',
             '--config.export.mesh_resolution=32']
SMALL_EVAL = ['--num_views=2', '--size=32']


@pytest.fixture
def kernel(tmp_path, monkeypatch):
  """A kernel spec for sys.executable (a fresh virtual environment has none registered)."""
  spec_dir = tmp_path / 'jupyter' / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  spec = {'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
          'display_name': 'dreamfusion_jax tests', 'language': 'python'}
  (spec_dir / 'kernel.json').write_text(json.dumps(spec))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  monkeypatch.setenv('JUPYTER_RUNTIME_DIR', str(tmp_path / 'jupyter' / 'runtime'))
  monkeypatch.setenv('JUPYTER_PLATFORM_DIRS', '1')
  monkeypatch.setenv('IPYTHONDIR', str(tmp_path / 'ipython'))
  return KERNEL


def tagged(nb, tag):
  """Index of the one cell of a notebook carrying a tag."""
  found = [i for i, cell in enumerate(nb.cells) if tag in cell.metadata.get('tags', [])]
  assert len(found) == 1, f'{len(found)} cells tagged {tag!r}'
  return found[0]


def execute(name, parameters, kernel, cwd, until_tag=None, timeout=1200):
  """Runs colab/<name> with parameters overridden, up to and including the cell `until_tag`.

  The parameters cell keeps its text and gets the overrides appended (each must be one of its
  names), as papermill does. Any error in a cell fails the test with the cell and traceback.
  """
  nb = nbformat.read(COLAB / name, as_version=4)
  assert all(not cell.get('outputs') for cell in nb.cells), f'{name} is committed with outputs'
  params = nb.cells[tagged(nb, 'parameters')]
  for key in parameters:
    assert f'\n{key} = ' in f'\n{params.source}', f'{name} has no parameter {key}'
  params.source += '\n# Test overrides.\n' + ''.join(
      f'{key} = {value!r}\n' for key, value in parameters.items())
  if until_tag:
    nb.cells = nb.cells[:tagged(nb, until_tag) + 1]
  client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=timeout,
                                   resources={'metadata': {'path': str(cwd)}})
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f'{name}: {str(e)[-6000:]}')
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert cell.execution_count is not None, cell.source
      assert not [o for o in cell.outputs if o.output_type == 'error'], cell.source
  return nb


def outputs(nb, kind):
  """Every display or result output of a notebook carrying the MIME type `kind`."""
  return [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.outputs
          if kind in o.get('data', {})]


def run_toy_notebook(kernel, tmp_path, num_steps, extra_flags=(), eval_flags=()):
  workdir = tmp_path / 'toy'
  parameters = dict(PROMPT='a red sphere', NUM_STEPS=num_steps, WORKDIR=str(workdir),
                    EXTRA_FLAGS=list(extra_flags), EVAL_FLAGS=list(eval_flags))
  nb = execute('toy_dreamfusion.ipynb', parameters, kernel, tmp_path)
  assert (workdir / 'turntable.mp4').stat().st_size > 0
  assert (workdir / 'mesh.glb').stat().st_size > 0
  assert json.loads((workdir / 'metrics.json').read_text())['steps'] == num_steps
  assert json.loads((workdir / 'config.json').read_text())['prompt'] == 'a red sphere'
  scores = json.loads((workdir / 'eval.json').read_text())
  assert set(EVAL_KEYS) <= set(scores), scores
  # The inline video, the still image of the mesh and the three.js viewer were displayed.
  assert any('<video' in o.data['text/html'] for o in outputs(nb, 'text/html'))
  assert any('<iframe' in o.data['text/html'] for o in outputs(nb, 'text/html'))
  assert outputs(nb, 'image/png')
  return nb


@pytest.mark.slow  # Both notebooks run in CI's slow stage, to keep the default suite short.
def test_toy_notebook_runs_end_to_end(kernel, tmp_path):
  """Install check, 3 small steps with the shipped prior, video, mesh and scores."""
  run_toy_notebook(kernel, tmp_path, num_steps=3, extra_flags=SMALL_RUN, eval_flags=SMALL_EVAL)


@pytest.mark.full  # Not in CI (its time budget): python -m pytest -m full tests.
def test_toy_notebook_runs_end_to_end_40_steps(kernel, tmp_path):
  """40 steps of the toy config as shipped, a 12-frame 64 px video, a 64^3 mesh, 8 eval views."""
  run_toy_notebook(kernel, tmp_path, num_steps=40, extra_flags=[
      '--config.export.video_frames=12', '--config.export.video_size=64',
      '--config.export.mesh_resolution=64'])


@pytest.mark.slow
def test_stable_diffusion_notebook_builds_and_runs_a_step(kernel, tmp_path):
  """Up to the build-step cell with a tiny random latent model in place of Stable Diffusion."""
  model = tmp_path / 'sd'
  tiny_models.save_flax_model(model, pixel=False)
  overrides = {
      'model_dtype': 'float32', 'from_pt': False, 'batch_size': 1, 'render.height': 8,
      'render.width': 8, 'render.num_samples': (8,), 'nerf.width': 16, 'nerf.num_blocks': 1,
      'nerf.max_deg': 4}
  parameters = dict(MODEL=str(model), PROMPT='a red cube', NUM_STEPS=4,
                    WORKDIR=str(tmp_path / 'run'), CONFIG_OVERRIDES=overrides, JAX_EXTRA=None)
  nb = execute('stable_diffusion.ipynb', parameters, kernel, tmp_path, until_tag='build-step')
  printed = ''.join(o.get('text', '') for o in nb.cells[-1].outputs)
  assert 'step 1 (compile and run)' in printed, printed
  assert '"loss"' in printed, printed
