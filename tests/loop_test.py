"""loop: the training loop's skips, checkpoints and clean stops, with a counting step."""

import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from dreamfusion_jax import loop
from dreamfusion_jax import steps


class FakeCheckpointer:
  """Records the steps saved; `on_wait(self)` runs in each `wait`."""

  def __init__(self, on_wait=lambda ckpt: None):
    self.saved, self.on_wait = [], on_wait

  def save(self, step, state, force=False):  # pylint: disable=unused-argument
    self.saved.append(step)

  def wait(self):
    self.on_wait(self)


def loop_config():
  return ml_collections.ConfigDict(dict(
      method='dreamfusion', num_steps=50, log_every=10, preview_every=100, checkpoint_every=100,
      max_consecutive_skips=3))


def counting_step(skipped):
  def step_fn(state):
    return state.replace(step=state.step + 1), {'skipped': jnp.float32(skipped),
                                                'loss': jnp.float32(1.0), 't': jnp.float32(0.5)}
  return step_fn


def empty_state():
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params={}, opt_state=(),
                          key=jax.random.key(0))


class NullWriter:
  def add_scalar(self, *args):
    pass


def test_too_many_skips_stop_the_run():
  ckpt = FakeCheckpointer()
  with pytest.raises(FloatingPointError, match='3 steps in a row'):
    loop.train_loop(loop_config(), empty_state(), counting_step(1.0), ckpt, None, None)
  assert not ckpt.saved


def test_signal_while_the_last_checkpoint_commits_is_a_clean_stop(capsys):
  """SIGTERM in the final checkpoint's wait: the commit finishes and the loop reports it."""
  guarded = []

  def on_wait(ckpt):
    # Send the signal only while a guard holds it: unguarded, it would end the test process.
    guarded.append(signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None))
    if guarded[-1]:
      os.kill(os.getpid(), signal.SIGTERM)

  ckpt = FakeCheckpointer(on_wait)
  result = loop.train_loop(loop_config(), empty_state(), counting_step(0.0), ckpt, NullWriter(),
                             None)
  assert guarded == [True], 'the last checkpoint wait ran without the preemption guard'
  assert result is None and ckpt.saved == [50]
  assert 'preempted (SIGTERM) after the last step: checkpoint 50' in capsys.readouterr().err


class Scalars:
  """A writer that keeps every scalar."""

  def __init__(self):
    self.values = {}

  def add_scalar(self, name, value, step):
    self.values.setdefault(name, []).append((step, value))


def test_gradient_record_counts_norms_and_clipped_steps():
  """Steps 1..50 with gradient norm = step and a clip at 10: the first 10 are not clipped."""
  def step_fn(state):
    step = state.step + 1
    norm = step.astype(jnp.float32)
    return state.replace(step=step), {
        'skipped': jnp.float32(0.0), 'loss': jnp.float32(1.0), 'grad_norm': norm,
        'clipped': (norm > 10.0).astype(jnp.float32)}

  record, writer = loop.GradientRecord(), Scalars()
  loop.train_loop(loop_config(), empty_state(), step_fn, FakeCheckpointer(), writer, None,
                  record)
  assert record.norms == [float(n) for n in range(1, 51)]
  summary = record.summary()
  assert summary['clipped_share'] == 0.8 and summary['recorded_steps'] == 50
  assert summary['grad_norm_median'] == 25.5
  assert summary['grad_norm_p10'] == pytest.approx(5.9)
  assert summary['grad_norm_p90'] == pytest.approx(45.1)
  # Logged every 10 steps: the share so far (steps 1..10 unclipped, then all clipped).
  assert writer.values['train/clipped_share'] == [(10, 0.0), (20, 0.5), (30, 20 / 30),
                                                  (40, 0.75), (50, 0.8)]
  assert loop.GradientRecord().summary() == {}
