"""Entry point: `python -m dreamfusion_jax.main --config configs/<name>.py --workdir DIR`.

Config fields are overridden with `--config.<field>=<value>`. Any bad input (unknown field, wrong
type, impossible value, missing data) stops with one line naming it, before anything compiles.
"""

import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dreamfusion_jax import train
from dreamfusion_jax.data import blender

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path of a configs/<name>.py file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for everything the run writes.')


def _fail(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _describe_flag_error(error, argv):
  """One line for a flag-parsing failure, naming the offending --config field."""
  text = str(error).strip().strip('"').strip("'")
  if isinstance(error, (AttributeError, KeyError)):
    field = text.splitlines()[0].strip('"\' \\')
    hint = ' '.join(line.strip() for line in text.splitlines()[1:])
    args = [a for a in argv if re.match(rf'--config(\.\w+)*\.{re.escape(field)}(=|$)', a)]
    where = f' (in {args[0]})' if args else ''
    return (f'unknown config field {field!r}{where}; {hint or "check the spelling"}'
            .replace('\\n', ' ').replace("\\'", "'"))
  return text.replace('\n', ' ')


def parse_flags(argv):
  """absl flag parsing that turns every failure into one clear line and exit status 2."""
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
  return rest


def main(argv):
  del argv
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (train.ConfigError, blender.SceneError) as e:
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
