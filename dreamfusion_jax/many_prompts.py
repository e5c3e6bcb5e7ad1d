"""Many prompts at once: one independent NeRF per prompt, vmapped and split over the devices.

Each prompt trains exactly as it would alone with the same config and seed (up to float
reduction order) and gets its own folder (prompt_dirs) with config.json, checkpoints,
tensorboard, turntable and mesh, so `eval` and export work on it as on a single run.
"""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from dreamfusion_jax import build
from dreamfusion_jax import checkpoint
from dreamfusion_jax import config_checks
from dreamfusion_jax import export
from dreamfusion_jax import loop
from dreamfusion_jax import parallel


def _slug(prompt, limit=48):
  """A folder-name form of a prompt: lowercase words joined by '_'."""
  words = ''.join(c if c.isalnum() else ' ' for c in prompt.lower()).split()
  return '_'.join(words)[:limit] or 'prompt'


def prompt_dirs(workdir, prompts):
  """Each prompt's own folder of a many-prompt run: `<workdir>/prompts/<index>_<slug>`."""
  return [pathlib.Path(workdir) / 'prompts' / f'{i:03d}_{_slug(p)}' for i, p in enumerate(prompts)]


def prompt_config(config, prompt):
  """The config of one prompt of a many-prompt run, as that prompt trained alone would have it."""
  single = config.copy_and_resolve_references()
  single.prompt = prompt
  single.prompts = ()
  single.prompts_file = ''
  return single


class Checkpointers:
  """One Checkpointer per prompt, saving the slices of a stacked state together."""

  def __init__(self, checkpointers, take):
    self.checkpointers = checkpointers
    self._take = take  # (stacked state, index) -> that prompt's state, replicated.

  def save(self, step, state, force=False):
    return all([c.save(step, self._take(state, i), force=force)
                for i, c in enumerate(self.checkpointers)])

  def wait(self):
    for c in self.checkpointers:
      c.wait()

  def close(self):
    for c in self.checkpointers:
      c.close()


class Writers:
  """Summary writers, one per prompt: a metric of shape [P] gives each writer its own value."""

  def __init__(self, writers):
    self.writers = writers

  def add_scalar(self, tag, value, step):
    values = np.broadcast_to(np.asarray(value), (len(self.writers),))
    for writer, v in zip(self.writers, values):
      writer.add_scalar(tag, float(v), step)

  def close(self):
    for writer in self.writers:
      writer.close()


def restore_aligned(checkpointers, template):
  """Each prompt's newest readable checkpoint, all at the same step (the oldest of them).

  A run stopped between two prompts' saves leaves some prompts one checkpoint ahead; they go
  back to the common step so that the stacked state is one step.

  Returns:
    (list of states or None, step or None): None when some prompt has no checkpoint.
  """
  limit = None
  while True:
    found = [c.restore_latest(template, max_step=limit) for c in checkpointers]
    found_steps = [step for _, step in found]
    if any(step is None for step in found_steps):
      return None, None
    if len(set(found_steps)) == 1:
      return [state for state, _ in found], found_steps[0]
    limit = min(found_steps)


def _open_prompts(run, dirs, prompts, fresh, mesh):
  """Each prompt's folder, config.json and Checkpointer, and the states to start from.

  Args:
    run: the build.Run.
    dirs, prompts: the prompts and their folders.
    fresh: a fresh TrainState (run.init_state()).
    mesh: the device mesh; the states are replicated over it.
  """
  config = run.config
  template = parallel.replicate(fresh, mesh)
  checkpointers = []
  for folder, prompt in zip(dirs, prompts):
    folder.mkdir(parents=True, exist_ok=True)
    if parallel.is_primary():
      (folder / 'config.json').write_text(
          prompt_config(config, prompt).to_json_best_effort(indent=2))
    checkpointers.append(checkpoint.Checkpointer(
        folder / 'checkpoints', max_to_keep=config.max_to_keep,
        metadata=config_checks.run_metadata(config)))
  try:
    states, restored_step = restore_aligned(checkpointers, template)
  except checkpoint.CheckpointError as e:
    for c in checkpointers:
      c.close()
    raise config_checks.ConfigError(str(e)) from e
  if states is None:
    states = [parallel.replicate(build.initial_state(run, fresh), mesh)] * len(prompts)
  else:
    loop.log(f'resumed {len(prompts)} prompts from checkpoint {restored_step}')
  return checkpointers, states


def fit_many_prompts(config, workdir):
  """Trains one NeRF per prompt of config.prompts (or prompts_file), then exports each.

  Returns:
    The summary dict written to `workdir`/metrics.json, or None if preempted.
  """
  start = time.time()
  prompts = config_checks.prompt_list(config)
  guides = build.load_guidance(config)
  texts = [build.encode_prompt(guides, config, p, f'prompt {i} ({p!r})')
           for i, p in enumerate(prompts)]
  mesh = parallel.make_mesh(config_checks.num_devices(config))
  padded = len(prompts) + (-len(prompts)) % mesh.size  # Copies of the last prompt fill the mesh.
  texts = texts + [texts[-1]] * (padded - len(prompts))
  run = build.build(config)
  dirs = prompt_dirs(workdir, prompts)
  fresh = run.init_state()
  loop.log(build.describe_params(run, fresh.params) + ', each prompt')
  checkpointers, states = _open_prompts(run, dirs, prompts, fresh, mesh)
  states = states + [states[-1]] * (padded - len(prompts))
  stack = jax.jit(lambda *xs: jax.tree.map(lambda *leaves: jnp.stack(leaves), *xs),
                  out_shardings=parallel.split(mesh))
  state = stack(*states)
  take = jax.jit(lambda s, i: jax.tree.map(lambda x: x[i], s),
                 out_shardings=parallel.replicated(mesh))
  text, clip_text = parallel.shard_leading(
      jax.tree.map(lambda *xs: np.stack(xs), *texts), mesh)
  diffusion, clip_model = parallel.replicate(guides, mesh)
  loop.log(f'{len(prompts)} prompts ({padded} with padding) over {mesh.size} of '
           f'{jax.device_count()} devices ({jax.process_count()} processes)')
  step_fn, fit = build.fitted_step(run, mesh, (state, diffusion, text, clip_model, clip_text),
                                   vmapped=True)
  loop.log_fit(fit)
  summary = Writers([loop.writer(folder / 'tensorboard') for folder in dirs]
                    + [loop.NullWriter()] * (padded - len(prompts)))

  def preview(state):
    for i, w in enumerate(summary.writers[:len(prompts)]):
      params = parallel.to_host(take(state, i).params)
      if parallel.is_primary():
        loop.log_previews(w, run.renderer, params, int(state.step[0]), config)

  state = loop.train_and_close(config, state,
                               lambda s: step_fn(s, diffusion, text, clip_model, clip_text),
                               Checkpointers(checkpointers, take), summary, preview)
  if state is None:
    return None
  return _export_prompts(run, workdir, dirs, prompts, lambda i: take(state, i), start)


def _export_prompts(run, workdir, dirs, prompts, state_of, start):
  """Each prompt's assets and metrics.json, then the run's summary metrics.json."""
  train_seconds = time.time() - start
  steps = run.config.num_steps
  summary = {'prompts': prompts, 'steps': steps, 'train_seconds': train_seconds,
             'folders': [str(d) for d in dirs]}
  for i, folder in enumerate(dirs):
    params = parallel.to_host(state_of(i).params)
    if parallel.is_primary():
      export.export_assets(run, folder, params)
      (folder / 'metrics.json').write_text(json.dumps(
          {'prompt': prompts[i], 'steps': steps, 'train_seconds': train_seconds}, indent=2))
  if parallel.is_primary():
    summary['seconds'] = time.time() - start
    (pathlib.Path(workdir) / 'metrics.json').write_text(json.dumps(summary, indent=2))
  parallel.sync('export')
  return summary
