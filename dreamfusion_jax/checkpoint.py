"""Checkpoints of the train state: save, resume from the newest good one, and preemption.

A `Checkpointer` wraps one Orbax CheckpointManager over a folder (normally
`<workdir>/checkpoints`). Every checkpoint holds two items: `state`, the train-state pytree, and
`meta`, a JSON dict of what must match to resume (e.g. the NeRF config and the diffusion model
id). Two rules protect what is on disk:

* Retention only ever deletes checkpoints that this process wrote; those of an earlier run in the
  same folder (or ones it cannot read) are never deleted.
* Orbax does not notice a corrupt or truncated checkpoint until it reads it, so `restore_latest`
  tries the steps newest first, warns about each bad one, and moves it aside into a sibling
  folder `<folder>_corrupt/<step>` (moved, not deleted) so it cannot block a later save of the
  same step number.

`PreemptionGuard` turns SIGTERM/SIGINT into a flag that the train loop polls, so the loop can
save a checkpoint and exit cleanly instead of dying mid-step.
"""

import json
import logging
import pathlib
import signal

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

# Shown in a config mismatch error: the two ways to go on.
_MISMATCH_ADVICE = 'use a new --workdir or the old config'


class CheckpointError(ValueError):
  """A checkpoint that cannot be used as asked; the message says what to change."""


def _normalize(metadata):
  """Round-trips metadata through JSON, as it will be when read back from a checkpoint.

  Args:
    metadata: a JSON-able dict.

  Returns:
    A dict with tuples turned into lists and keys into strings.

  Raises:
    TypeError: metadata holds a value JSON cannot store.
  """
  if not isinstance(metadata, dict):
    raise TypeError(f'metadata must be a dict, got {type(metadata).__name__}')
  try:
    return json.loads(json.dumps(metadata))
  except (TypeError, ValueError) as e:
    raise TypeError(f'metadata is not JSON-able ({e}): pass plain dicts, lists, strings, '
                    'numbers, bools and None') from e


def _flatten(tree, prefix=''):
  """Flattens nested dicts into {'a.b.c': leaf}; lists and scalars are leaves.

  Args:
    tree: a dict of JSON values.
    prefix: str prepended to every key (used by the recursion).

  Returns:
    A flat dict from dotted str keys to JSON values.
  """
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f'{name}.'))
    else:
      flat[name] = value
  return flat


def _describe(flat, key):
  """'key=value' of one flat metadata entry, with the value as JSON (strings quoted)."""
  if key not in flat:
    return f'no {key}'
  return f'{key}={json.dumps(flat[key], sort_keys=True)}'


def metadata_mismatch(step, saved, current):
  """The error message for metadata that differs, or None if it all matches.

  Args:
    step: int, the checkpoint's step (for the message).
    saved: dict, the metadata read from the checkpoint.
    current: dict, the metadata of this run (already JSON-normalized).

  Returns:
    A one-line str naming every differing key with its saved and new value, or None.
  """
  saved, current = _flatten(saved), _flatten(current)
  # Compare as JSON text: it is what was stored, and it makes NaN equal to NaN.
  differing = sorted(key for key in saved.keys() | current.keys()
                     if key not in saved or key not in current
                     or json.dumps(saved[key], sort_keys=True)
                     != json.dumps(current[key], sort_keys=True))
  if not differing:
    return None
  was = ', '.join(_describe(saved, key) for key in differing)
  now = ', '.join(_describe(current, key) for key in differing)
  return (f'checkpoint {step} was written with {was}, the config now says {now}: '
          f'{_MISMATCH_ADVICE}')


class Checkpointer:
  """Saves and restores train states under one folder, with metadata that must match.

  Attributes:
    directory: pathlib.Path of the checkpoint folder.
    corrupt_directory: pathlib.Path where unreadable checkpoints are moved, `<directory>_corrupt`.
    max_to_keep: int or None (keep all), how many of its own checkpoints this object keeps.
    metadata: the JSON-normalized metadata dict saved with, and checked against, every checkpoint.
  """

  def __init__(self, directory, *, max_to_keep, metadata):
    """Opens (creating if needed) the checkpoint folder.

    Args:
      directory: str or path of the checkpoint folder, normally `<workdir>/checkpoints`.
      max_to_keep: int >= 1, or None to keep every checkpoint this process writes.
      metadata: JSON-able dict of what must match on resume (model config, diffusion model id).
    """
    if max_to_keep is not None and max_to_keep < 1:
      raise CheckpointError(f'max_to_keep={max_to_keep} must be >= 1 (or None to keep all)')
    self.directory = pathlib.Path(directory).absolute()
    self.corrupt_directory = self.directory.with_name(self.directory.name + '_corrupt')
    self.max_to_keep = max_to_keep
    self.metadata = _normalize(metadata)
    # Orbax's own garbage collection would also delete checkpoints of earlier runs, so it is
    # off (max_to_keep=None) and `_prune` deletes only the steps in `_written`.
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._written = []  # Steps this process saved, oldest first.

  @property
  def written_steps(self):
    """Steps saved by this object and not yet deleted by retention, oldest first (list of int)."""
    return list(self._written)

  def all_steps(self):
    """Every step in the folder, this run's and earlier ones', ascending (list of int)."""
    return sorted(self._manager.all_steps())

  def save(self, step, state, force=False):
    """Starts saving `state` as checkpoint `step`; `wait()` or `close()` finishes it.

    Nothing is written when the step already exists (it is kept as it is), or when a newer
    step exists and `force` is False (Orbax's rule: steps only go forward).

    Args:
      step: int, the step number (the folder name).
      state: the train-state pytree (jax arrays, typed PRNG keys, optax states).
      force: bool, save even if a newer step exists.

    Returns:
      bool, whether a save was started.
    """
    step = int(step)
    # Finish the previous save before deleting anything, so that a crash now still leaves
    # max_to_keep complete checkpoints of this run on disk.
    self._manager.wait_until_finished()
    self._prune()
    if step in self._manager.all_steps():
      log = logger.info if step in self._written else logger.warning
      log('checkpoint %d already exists in %s: kept as it is, not saved again', step,
          self.directory)
      return False
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(self.metadata))
    saved = self._manager.save(step, args=args, force=force)
    if saved:
      self._written.append(step)
    else:
      logger.warning('checkpoint %d not saved: %s already has the newer checkpoint %s (pass '
                     'force=True to save it anyway)', step, self.directory,
                     self._manager.latest_step())
    return saved

  def _prune(self):
    """Deletes this process's oldest checkpoints beyond max_to_keep; never anyone else's."""
    if self.max_to_keep is None:
      return
    existing = set(self._manager.all_steps())
    while len(self._written) > self.max_to_keep:
      step = self._written.pop(0)
      if step in existing:
        self._manager.delete(step)

  def restore_latest(self, template, max_step=None):
    """Restores the newest readable checkpoint, skipping (and moving aside) unreadable ones.

    Args:
      template: a pytree like the saved state (same structure, shapes, dtypes and shardings),
        e.g. a freshly initialized train state; its values are not used.
      max_step: if set, only checkpoints of steps <= max_step are considered.

    Returns:
      (state, step): the restored pytree and its int step, or (None, None) if no checkpoint
      could be read.

    Raises:
      CheckpointError: the newest readable checkpoint was written with different metadata.
    """
    self._manager.reload()  # Another process may have written or removed steps meanwhile.
    for step in sorted(self._manager.all_steps(), reverse=True):
      if max_step is not None and step > max_step:
        continue
      saved, error = self._read(step, ocp.args.Composite(meta=ocp.args.JsonRestore()))
      if error is None:
        # Check before restoring: a template for another config would fail with an obscure
        # shape error, or worse, restore into a model it does not belong to.
        message = metadata_mismatch(step, saved.meta, self.metadata)
        if message is not None:
          raise CheckpointError(message)
        restored, error = self._read(
            step, ocp.args.Composite(state=ocp.args.StandardRestore(template)))
        if error is None:
          logger.info('restored checkpoint %d from %s', step, self.directory)
          return restored.state, step
      self._set_aside(step, error)
    return None, None

  def _read(self, step, args):
    """Restores items of one step, returning the error instead of raising it.

    Args:
      step: int.
      args: ocp.args.Composite of the items to restore.

    Returns:
      (restored Composite, None), or (None, the exception) if the step cannot be read.
    """
    try:
      return self._manager.restore(step, args=args), None
    # Corruption shows up as many error types (JSONDecodeError, UnicodeDecodeError, ValueError
    # from TensorStore, KeyError for a missing item), so any Exception means unreadable.
    except Exception as e:  # noqa: BLE001  # pylint: disable=broad-except
      return None, e

  def _set_aside(self, step, error):
    """Moves an unreadable step folder into corrupt_directory and warns.

    Moving, not deleting, keeps it for inspection; removing it from the checkpoint folder lets
    the run save that step number again and stops Orbax treating it as the latest step.

    Args:
      step: int, the unreadable step.
      error: the exception its restore raised.
    """
    source = pathlib.Path(ocp.step.build_step_path(
        self.directory, ocp.step.standard_name_format(), step))
    target = self.corrupt_directory / source.name
    suffix = 1
    while target.exists():  # The same step number may go bad in more than one run.
      target = self.corrupt_directory / f'{source.name}.{suffix}'
      suffix += 1
    where = f'moved it to {target}'
    if jax.process_index() == 0:  # On several hosts process 0 moves it, the others wait.
      try:
        self.corrupt_directory.mkdir(parents=True, exist_ok=True)
        source.rename(target)
      except OSError as move_error:
        where = f'could not move it aside ({move_error}); saving step {step} again will fail'
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    logger.warning('checkpoint %d in %s cannot be restored (%s: %s); skipped it and %s', step,
                   self.directory, type(error).__name__, _one_line(error), where)
    if step in self._written:
      self._written.remove(step)
    self._manager.reload()

  def wait(self):
    """Blocks until the save in progress is complete, then applies retention."""
    self._manager.wait_until_finished()
    self._prune()

  def close(self):
    """Finishes the save in progress, applies retention and releases Orbax's resources."""
    self.wait()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def _one_line(error, limit=300):
  """str(error) on one line, cut to `limit` characters (TensorStore errors run long)."""
  text = ' '.join(str(error).split())
  return text if len(text) <= limit else text[:limit] + '...'


class PreemptionGuard:
  """Context manager turning SIGTERM and SIGINT into a flag the train loop polls.

  Inside the `with` block the signals no longer stop the process; they set `requested` (and
  `signal_name`), and the loop is expected to save a checkpoint and return. On exit the previous
  handlers come back. Must be entered in the main thread (Python only installs signal handlers
  there). To kill a run that ignores the flag, use SIGKILL.

  Example:
    with checkpoint.PreemptionGuard() as guard:
      for step in ...:
        state = train_step(state)
        if guard.requested:
          checkpointer.save(step, state, force=True)
          break
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._signum = None
    self._previous = {}

  @property
  def requested(self):
    """bool, whether a stop signal arrived while the guard was active."""
    return self._signum is not None

  @property
  def signum(self):
    """int number of the first stop signal received, or None."""
    return self._signum

  @property
  def signal_name(self):
    """str name of the first stop signal received (e.g. 'SIGTERM'), or None."""
    return None if self._signum is None else signal.Signals(self._signum).name

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    # Only record it: the loop saves at a step boundary, where the state is consistent.
    if self._signum is None:
      self._signum = signum

  def __enter__(self):
    self._signum = None
    for signum in self.SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      # None means the handler was not installed from Python; the default is the closest.
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    self._previous = {}
