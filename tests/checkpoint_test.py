"""Checkpoints: exact round trips, retention that spares other runs, corruption, preemption."""

import logging
import os
import pathlib
import signal
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamfusion_jax import checkpoint

# After a failed read of corrupt data, TensorStore may finish other reads of that restore once
# Orbax's asyncio loop is closed; their callbacks then fail, harmlessly, outside the test's code.
pytestmark = pytest.mark.filterwarnings(
    r'ignore:(?s).*Event loop is closed:pytest.PytestUnraisableExceptionWarning')

METADATA = {'nerf': {'width': 16, 'num_samples': (4, 8)}, 'model_id': 'tiny/unet'}


@flax.struct.dataclass
class TrainState:
  """Shaped like train.TrainState."""
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  key: jax.Array


class TinyMLP(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(self.width)(x)))


def make_state(seed, width=16, num_updates=2):
  """A TrainState after `num_updates` Adam steps, so every optimizer leaf is non-trivial."""
  model = TinyMLP(width)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  key = jax.random.key(seed)
  x = jax.random.normal(jax.random.fold_in(key, 1), (8, 3))
  params = model.init(jax.random.fold_in(key, 2), x)
  opt_state = optimizer.init(params)
  for _ in range(num_updates):
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x)**2))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return TrainState(step=jnp.asarray(num_updates, jnp.int32), params=params,
                    opt_state=opt_state, key=jax.random.fold_in(key, 3))


def assert_bitwise_equal(a, b):
  """Same tree structure (namedtuple types included), dtypes and bits, typed keys included."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    # Compare bytes, not values, so that -0.0 vs 0.0 or NaN payloads would also fail.
    assert x.tobytes() == y.tobytes()


def write_steps(directory, steps, metadata=METADATA, max_to_keep=None):
  """Saves make_state(step) at each step with a fresh Checkpointer, like one earlier run."""
  with checkpoint.Checkpointer(directory, max_to_keep=max_to_keep, metadata=metadata) as ckpt:
    for step in steps:
      assert ckpt.save(step, make_state(step))


def corrupt(step_dir, how):
  """Damages every file of a checkpoint folder (truncate) or only its array data (garble)."""
  files = [p for p in pathlib.Path(step_dir).rglob('*') if p.is_file()]
  assert files
  for path in files:
    data = path.read_bytes()
    if how == 'truncate':
      path.write_bytes(data[:len(data) // 2])
    elif '/d/' in path.as_posix():  # TensorStore chunk files; the JSON metadata stays readable.
      path.write_bytes(bytes(b ^ 0x5a for b in data))


def warnings_of(caplog):
  return [r.getMessage() for r in caplog.records
          if r.name == checkpoint.__name__ and r.levelno == logging.WARNING]


def test_round_trip_is_bitwise_exact(tmp_path):
  state = make_state(7)
  write_steps(tmp_path / 'checkpoints', [7])
  template = make_state(0)
  with checkpoint.Checkpointer(tmp_path / 'checkpoints', max_to_keep=3,
                               metadata=METADATA) as ckpt:
    restored, step = ckpt.restore_latest(template)
  assert step == 7
  assert_bitwise_equal(restored, state)
  assert isinstance(restored, TrainState)
  assert isinstance(restored.opt_state[1][0], optax.ScaleByAdamState)
  assert jnp.issubdtype(restored.key.dtype, jax.dtypes.prng_key)


def test_empty_folder_restores_nothing(tmp_path):
  with checkpoint.Checkpointer(tmp_path / 'checkpoints', max_to_keep=2,
                               metadata=METADATA) as ckpt:
    assert ckpt.restore_latest(make_state(0)) == (None, None)


def test_keeps_its_own_newest_and_never_deletes_an_earlier_runs(tmp_path):
  directory = tmp_path / 'checkpoints'
  write_steps(directory, [1, 2], max_to_keep=2)
  with checkpoint.Checkpointer(directory, max_to_keep=2, metadata=METADATA) as ckpt:
    state, step = ckpt.restore_latest(make_state(0))
    assert step == 2
    for step in range(3, 9):
      assert ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
      ckpt.wait()
      own = [s for s in ckpt.all_steps() if s > 2]
      assert own == list(range(max(3, step - 1), step + 1))
  assert sorted(int(p.name) for p in directory.iterdir()) == [1, 2, 7, 8]


def test_saving_an_existing_step_keeps_it(tmp_path, caplog):
  directory = tmp_path / 'checkpoints'
  write_steps(directory, [5])
  with checkpoint.Checkpointer(directory, max_to_keep=1, metadata=METADATA) as ckpt:
    assert not ckpt.save(5, make_state(99))
    restored, _ = ckpt.restore_latest(make_state(0))
  assert_bitwise_equal(restored, make_state(5))
  assert any('checkpoint 5 already exists' in m for m in warnings_of(caplog))


@pytest.mark.parametrize('how', ['truncate', 'garble'])
def test_corrupt_newest_falls_back_and_is_moved_aside(tmp_path, caplog, how):
  directory = tmp_path / 'checkpoints'
  write_steps(directory, [1, 2, 3])
  corrupt(directory / '3', how)
  with checkpoint.Checkpointer(directory, max_to_keep=2, metadata=METADATA) as ckpt:
    with caplog.at_level(logging.WARNING):
      restored, step = ckpt.restore_latest(make_state(0))
    assert step == 2
    assert_bitwise_equal(restored, make_state(2))
    (warning,) = warnings_of(caplog)
    assert 'checkpoint 3' in warning and 'checkpoints_corrupt' in warning
    assert not (directory / '3').exists()
    assert any((tmp_path / 'checkpoints_corrupt' / '3').rglob('*'))  # Moved, not deleted.
    # The run goes on from step 2 and reaches step 3 again.
    assert ckpt.save(3, make_state(33))
    ckpt.wait()
    restored, step = ckpt.restore_latest(make_state(0))
  assert step == 3
  assert_bitwise_equal(restored, make_state(33))


def test_all_corrupt_restores_nothing_and_warns(tmp_path, caplog):
  directory = tmp_path / 'checkpoints'
  write_steps(directory, [1, 2])
  corrupt(directory / '1', 'truncate')
  corrupt(directory / '2', 'garble')
  with checkpoint.Checkpointer(directory, max_to_keep=2, metadata=METADATA) as ckpt:
    with caplog.at_level(logging.WARNING):
      assert ckpt.restore_latest(make_state(0)) == (None, None)
    warnings = warnings_of(caplog)
    assert len(warnings) == 2
    assert 'checkpoint 2' in warnings[0] and 'checkpoint 1' in warnings[1]
    assert sorted(p.name for p in (tmp_path / 'checkpoints_corrupt').iterdir()) == ['1', '2']
    assert ckpt.save(1, make_state(1))


def test_metadata_mismatch_names_the_key_before_restoring(tmp_path):
  directory = tmp_path / 'checkpoints'
  write_steps(directory, [300])
  changed = {**METADATA, 'nerf': {**METADATA['nerf'], 'width': 32}}
  message = (r'checkpoint 300 was written with nerf\.width=16, the config now says '
             r'nerf\.width=32: use a new --workdir or the old config')
  with (checkpoint.Checkpointer(directory, max_to_keep=2, metadata=changed) as ckpt,
        pytest.raises(checkpoint.CheckpointError, match=message)):
    # A template of the new width: restoring into it would fail and look like corruption.
    ckpt.restore_latest(make_state(0, width=32))
  assert (directory / '300').is_dir()  # Not mistaken for a corrupt checkpoint.


def test_metadata_mismatch_lists_added_and_changed_keys():
  message = checkpoint.metadata_mismatch(4, {'a': 1, 'b': {'c': 'x'}},
                                         {'a': 1, 'b': {'c': 'y'}, 'd': [1]})
  assert message == ('checkpoint 4 was written with b.c="x", no d, the config now says b.c="y", '
                     'd=[1]: use a new --workdir or the old config')
  assert checkpoint.metadata_mismatch(4, {'a': [1, 2]}, {'a': [1, 2]}) is None


def test_metadata_must_be_json(tmp_path):
  with pytest.raises(TypeError, match='not JSON-able'):
    checkpoint.Checkpointer(tmp_path / 'checkpoints', max_to_keep=1, metadata={'f': object()})


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_preemption_guard_sets_a_flag_and_restores_handlers(signum):
  before = {s: signal.getsignal(s) for s in checkpoint.PreemptionGuard.SIGNALS}
  with checkpoint.PreemptionGuard() as guard:
    assert not guard.requested
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + 5
    # Python runs the handler in the main thread at its next bytecode; poll briefly.
    while not guard.requested and time.monotonic() < deadline:
      time.sleep(0.01)
    assert guard.requested
    assert guard.signal_name == signal.Signals(signum).name
  assert {s: signal.getsignal(s) for s in checkpoint.PreemptionGuard.SIGNALS} == before
