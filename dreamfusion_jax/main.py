"""Entry point: `python -m dreamfusion_jax.main --config configs/<name>.py --workdir DIR`.

Config fields are overridden with `--config.<field>=<value>`. Any bad input (unknown field, wrong
type, impossible value, missing data) stops with one line naming it, before anything compiles.

Multi-host: every host runs the same command with `--multihost` (JAX finds the other processes
of a TPU pod or a SLURM allocation), or with `--coordinator_address`, `--num_processes` and
`--process_id` for a cluster it cannot detect (launch/ has the scripts).
"""

import difflib
import importlib.util
import pathlib
import re
import sys

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from dreamfusion_jax import export
from dreamfusion_jax import host_memory
from dreamfusion_jax import parallel
from dreamfusion_jax import config_checks
from dreamfusion_jax import train
from dreamfusion_jax.data import blender

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path of a configs/<name>.py file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for everything the run writes.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Join a multi-host run found from the environment (TPU pod workers, '
    'SLURM tasks) with jax.distributed.initialize().')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 of a multi-host run (with '
    '--num_processes and --process_id), for clusters JAX does not detect.')
_KEEP_MEMORY = flags.DEFINE_bool(
    'keep_freed_memory', True, 'Keep freed host memory for reuse (one glibc malloc arena, no '
    'unmapping below 1 GiB): XLA:CPU then stops refaulting its temporaries every step '
    '(dreamfusion_jax/host_memory.py). --nokeep_freed_memory leaves malloc as it is.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes of the multi-host run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index, 0 to '
                                   'num_processes - 1.')


def _fail(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_file(argv):
  """The value of --config in argv, or None."""
  for i, arg in enumerate(argv):
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


def _unknown_field(argv):
  """(argument, field, suggestion) of the first --config.<path> override naming no field."""
  path = _config_file(argv)
  if not path or not pathlib.Path(path).is_file():
    return None
  spec = importlib.util.spec_from_file_location('_config_for_errors', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for arg in argv:
    match = re.match(r'--config\.([\w.]+)', arg)
    if not match:
      continue
    node = config
    for name in match.group(1).split('.'):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        options = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(name, options, n=1)
        return arg, name, close[0] if close else None
      node = node[name]
  return None


def _describe_flag_error(error, argv):
  """One line for a flag-parsing failure, naming the offending --config field."""
  unknown = _unknown_field(argv) if isinstance(error, (AttributeError, KeyError)) else None
  if unknown:
    arg, field, suggestion = unknown
    hint = f'did you mean {suggestion!r}?' if suggestion else 'see the fields of the config file'
    return f'unknown config field {field!r} in {arg}: {hint}'
  return ' '.join(str(error).split())


def parse_flags(argv):
  """absl flag parsing that turns every failure into one clear line and exit status 2."""
  config_file = _config_file(argv)
  if config_file and not pathlib.Path(config_file.split(':')[0]).is_file():
    _fail(f'--config {config_file}: no such file; pass one of configs/*.py')
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    _fail(_describe_flag_error(e, argv))
  if len(rest) > 1:
    _fail(f'unexpected arguments {rest[1:]}: fields are set as --config.<field>=<value>')
  if _CONFIG.value is None:
    _fail('--config is required, e.g. --config configs/nerf_small.py')
  if not _WORKDIR.value:
    _fail('--workdir is required: the folder that receives everything the run writes')
  explicit = [_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value]
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    _fail('--coordinator_address, --num_processes and --process_id go together: pass all three '
          '(or --multihost to detect them)')
  if _NUM_PROCESSES.value is not None and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
    _fail(f'--process_id={_PROCESS_ID.value} must be in [0, --num_processes='
          f'{_NUM_PROCESSES.value})')
  return rest


def main(argv):
  del argv
  if _KEEP_MEMORY.value:
    host_memory.keep_freed_memory()  # Before JAX starts its CPU worker threads.
  if _MULTIHOST.value or _COORDINATOR.value:
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, blender.SceneError, export.ExportError,
          FloatingPointError) as e:
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
