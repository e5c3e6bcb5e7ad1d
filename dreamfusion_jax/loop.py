"""The training loop shared by every text-to-3D run: logging, previews, checkpoints, preemption.

`train_loop` runs a jitted step to config.num_steps, resuming wherever the state's step is, and
stops cleanly (checkpoint written) when the job is asked to stop (checkpoint.PreemptionGuard).
"""

import sys
import time

import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from dreamfusion_jax import camera
from dreamfusion_jax import checkpoint
from dreamfusion_jax import memory
from dreamfusion_jax import parallel


def log(*args, **kwargs):
  """print on process 0 only."""
  if parallel.is_primary():
    print(*args, **kwargs)


class NullWriter:
  """The summary writer of the processes other than 0: writes nothing."""

  def add_scalar(self, *args, **kwargs):
    pass

  def add_image(self, *args, **kwargs):
    pass

  def close(self):
    pass


def log_fit(fit):
  """Logs the remat chunk count an automatic render.remat_chunks chose (fit: memory.Fit)."""
  if fit is not None:
    log(f'render.remat_chunks={fit.chunks} (automatic): the step plans '
        f'{fit.planned / memory.GIB:.2f} GiB of {fit.available / memory.GIB:.2f} GiB available')


class GradientRecord:
  """The global gradient norm before clipping of every step a launch ran, and which were clipped.

  With many prompts a step's norm is the mean over prompts, and it counts as clipped when any
  prompt's gradient was.
  """

  def __init__(self):
    self.norms, self.clipped = [], []

  def add(self, metrics):
    """Records one step's metrics (a no-op for steps without `clipped`, e.g. classic NeRF)."""
    if 'clipped' not in metrics:
      return
    host = parallel.to_host({'grad_norm': metrics['grad_norm'], 'clipped': metrics['clipped']})
    self.norms.append(float(np.mean(host['grad_norm'])))
    self.clipped.append(float(np.max(host['clipped'])))

  def clipped_share(self):
    return float(np.mean(self.clipped)) if self.clipped else 0.0

  def summary(self):
    """{grad_norm_median, grad_norm_p10, grad_norm_p90, clipped_share, recorded_steps}."""
    if not self.norms:
      return {}
    p10, median, p90 = np.percentile(self.norms, [10, 50, 90])
    return {'grad_norm_median': float(median), 'grad_norm_p10': float(p10),
            'grad_norm_p90': float(p90), 'clipped_share': self.clipped_share(),
            'recorded_steps': len(self.norms)}


def writer(folder):
  """A TensorBoard SummaryWriter of `folder` on process 0, a NullWriter elsewhere."""
  return SummaryWriter(str(folder)) if parallel.is_primary() else NullWriter()


def log_previews(summary, renderer, params, step, config):
  """Albedo, normals, textureless and opacity previews of one orbit camera into TensorBoard."""
  size = config.render.width
  c2w = camera.orbit_cameras(1, elevation_deg=15.0, distance=float(
      np.mean(config.camera.distance_range)), focal=float(size))
  images = renderer(params, c2w.c2w[0], c2w.focal[0], size)
  for name, image in zip(('rgb', 'normals', 'textureless', 'opacity'), images):
    summary.add_image(f'preview/{name}', image, step, dataformats='HWC')


def train_and_close(config, state, step_fn, ckpt, summary, preview_fn, gradients=None):
  """train_loop, then closes the checkpointer(s) and writer(s); None if preempted."""
  state = train_loop(config, state, step_fn, ckpt, summary, preview_fn, gradients)
  ckpt.close()
  summary.close()
  return state


def _step_of(state):
  return int(np.asarray(parallel.to_host(state.step)).reshape(-1)[0])


def _log_metrics(summary, bar, metrics, step, skipped, seconds, config, gradients):
  metrics = dict(parallel.to_host(metrics))
  metrics.update(skipped_total=skipped, steps_per_second=config.log_every / max(seconds, 1e-9))
  if gradients.clipped:
    metrics['clipped_share'] = gradients.clipped_share()  # Over this launch's steps so far.
  postfix = {'loss': f'{np.mean(metrics["loss"]):.4g}'}
  for name in ('t', 'clip'):
    if name in metrics:
      postfix[name] = f'{np.mean(metrics[name]):.3f}'
  bar.set_postfix(**postfix)
  for name, value in metrics.items():
    summary.add_scalar(f'train/{name}', value if np.ndim(value) else float(value), step)


def train_loop(config, state, step_fn, ckpt, summary, preview_fn, gradients=None):
  """Runs steps to config.num_steps with logging and checkpoints; None if preempted.

  Args:
    config: the run's config (num_steps, log_every, preview_every, checkpoint_every,
      max_consecutive_skips, method).
    state: the TrainState to start from (its step says where).
    step_fn: state -> (state, metrics).
    ckpt: a checkpoint.Checkpointer (or anything with save, wait and close).
    summary: a SummaryWriter (or anything with add_scalar and close).
    preview_fn: None or state -> None, called every config.preview_every steps.
    gradients: a GradientRecord that receives every step's metrics (None: a fresh one).

  With many prompts the state and metrics carry a leading prompt axis; a step counts as skipped
  when any prompt's was, and the bar shows the mean over prompts.
  """
  first = _step_of(state)
  bar = tqdm.tqdm(total=config.num_steps, initial=first, desc=config.method,
                  dynamic_ncols=True, file=sys.stderr, disable=not parallel.is_primary())
  consecutive, skipped, tick = 0, 0, time.time()
  gradients = GradientRecord() if gradients is None else gradients
  with checkpoint.PreemptionGuard() as guard:
    step = first
    while step < config.num_steps:
      state, metrics = step_fn(state)
      step = _step_of(state)  # Waits for the step: the bar's rate stays true.
      bar.update(1)
      gradients.add(metrics)
      if float(np.max(parallel.to_host(metrics['skipped']))):
        consecutive, skipped = consecutive + 1, skipped + 1
        print(f'step {step}: non-finite loss or gradient, step skipped ({skipped} so far)',
              file=sys.stderr)
        if consecutive >= config.max_consecutive_skips:
          ckpt.wait()
          raise FloatingPointError(
              f'{consecutive} steps in a row had a non-finite loss or gradient; the last good '
              'checkpoint is kept. Lower config.optim.lr_init or config.guidance_scale.')
      else:
        consecutive = 0
      if step % config.log_every == 0 or step == config.num_steps:
        _log_metrics(summary, bar, metrics, step, skipped, time.time() - tick, config, gradients)
        tick = time.time()
      if step % config.preview_every == 0 and preview_fn is not None:
        preview_fn(state)
      saved = step % config.checkpoint_every == 0 or step == config.num_steps
      if saved:
        ckpt.save(step, state)
      if parallel.any_process(guard.requested):  # All processes stop at the same step.
        if not saved:
          ckpt.save(step, state, force=True)
        ckpt.wait()
        print(f'preempted ({guard.signal_name or "a signal to another process"}): saved '
              f'checkpoint {step}; run the same command to resume', file=sys.stderr)
        return None
    ckpt.wait()  # Guarded too: a signal now must not cut the last checkpoint's commit short.
    bar.close()
    if parallel.any_process(guard.requested):
      print(f'preempted ({guard.signal_name or "a signal to another process"}) after the last '
            f'step: checkpoint {step} is complete; run the same command to export',
            file=sys.stderr)
      return None
  return state
