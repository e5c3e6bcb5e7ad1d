"""Training: `train_and_evaluate(config, workdir)` and the single-prompt text-to-3D fit.

The run's parts come from build.py, the checks from config_checks.py, the loop from loop.py;
many prompts (many_prompts.py) and classic NeRF (classic.py) have modules of their own.
"""

import json
import pathlib
import sys
import time

import jax

from dreamfusion_jax import build
from dreamfusion_jax import classic
from dreamfusion_jax import config_checks
from dreamfusion_jax import export
from dreamfusion_jax import loop
from dreamfusion_jax import many_prompts
from dreamfusion_jax import parallel

ConfigError = config_checks.ConfigError


def fit_dreamfusion(config, workdir):
  """DreamFusion or Dream Fields: optimises a NeRF with SDS and/or CLIP, then exports it.

  Returns:
    dict of metrics (steps, train_seconds, seconds, export_seconds), also written to
    `workdir`/metrics.json; None if the job was preempted (its checkpoint is written).
  """
  if config_checks.many_prompts(config):
    return many_prompts.fit_many_prompts(config, workdir)
  start = time.time()
  guides = build.load_guidance(config)
  texts = build.encode_prompt(guides, config, config.prompt)
  mesh = parallel.make_mesh(config_checks.num_devices(config))
  run = build.build(config)
  fresh = run.init_state()
  loop.log(build.describe_params(run, fresh.params))
  # Replicated over the mesh; the restore template's sharding is where the checkpoint lands.
  ckpt, restored, restored_step = build.open_checkpoints(config, workdir,
                                                         parallel.replicate(fresh, mesh))
  if restored is not None:
    state = restored
    loop.log(f'resumed from checkpoint {restored_step} in {workdir / "checkpoints"}')
  else:  # Only a fresh run reads config.init_from; a resumed one has its own checkpoint.
    state = parallel.replicate(build.initial_state(run, fresh), mesh)
  guides, texts = parallel.replicate((guides, texts), mesh)
  (diffusion, clip_model), (text, clip_text) = guides, texts
  loop.log(f'{config.batch_size} views per step over {mesh.size} of {jax.device_count()} '
           f'devices ({jax.process_count()} processes)')
  step_fn, fit = build.fitted_step(run, mesh, (state, diffusion, text, clip_model, clip_text))
  loop.log_fit(fit)
  summary = loop.writer(workdir / 'tensorboard')

  def preview(state):
    params = parallel.to_host(state.params)
    if parallel.is_primary():
      loop.log_previews(summary, run.renderer, params, int(state.step), config)

  gradients = loop.GradientRecord()
  state = loop.train_and_close(config, state,
                               lambda s: step_fn(s, diffusion, text, clip_model, clip_text),
                               ckpt, summary, preview, gradients)
  if state is None:
    return None  # Preempted: the checkpoint is written, the job can be restarted.
  train_seconds = time.time() - start
  params = parallel.to_host(state.params)
  metrics = {'steps': int(state.step), 'train_seconds': train_seconds, **gradients.summary()}
  if gradients.norms:
    loop.log(f'gradient norm before clipping: median {metrics["grad_norm_median"]:.3g} '
             f'(10th to 90th percentile {metrics["grad_norm_p10"]:.3g} to '
             f'{metrics["grad_norm_p90"]:.3g}); {100 * metrics["clipped_share"]:.0f}% of '
             f'{metrics["recorded_steps"]} steps clipped at config.optim.grad_clip='
             f'{config.optim.grad_clip}')
  if parallel.is_primary():
    export.export_assets(run, workdir, params)
    seconds = time.time() - start
    metrics.update(seconds=seconds, export_seconds=seconds - train_seconds)
    (workdir / 'metrics.json').write_text(json.dumps(metrics, indent=2))
  parallel.sync('export')
  return metrics


def train_and_evaluate(config, workdir):
  """Runs the method named by config.method, writing everything into `workdir`.

  Args:
    config: an ml_collections.ConfigDict (see configs/).
    workdir: path of the folder that holds everything the run writes.

  Returns:
    The final metrics dict.

  Raises:
    config_checks.ConfigError: a config value that cannot work, before anything compiles.
  """
  config_checks.validate_config(config, workdir)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if parallel.is_primary():
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
    (workdir / 'command.txt').write_text(' '.join(sys.argv) + '\n')
  if config.method in ('dreamfusion', 'dreamfields'):
    return fit_dreamfusion(config, workdir)
  return classic.fit_nerf(config, workdir)
