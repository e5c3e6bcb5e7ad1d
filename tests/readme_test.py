"""README.md stays a user's guide: short, its two commands first, its links and Python true."""

import pathlib
import re

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
COMMANDS = (
    'pip install -e . && python -m dreamfusion_jax.main --config configs/toy.py --workdir /tmp/toy',
    'pip install -e ".[test]" && python -m pytest -q tests',
)


def test_readme_is_short_and_opens_with_the_two_commands():
  assert len(README.encode()) <= 15_000
  blocks = re.findall(r'```bash\n(.*?)```', README, flags=re.S)
  assert [block.strip() for block in blocks[:2]] == list(COMMANDS)


def test_every_relative_link_and_named_file_exists():
  links = re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', README)
  named = re.findall(r'`((?:configs|launch|colab|benchmarks|docs)/[\w./-]+\.\w+)`', README)
  assert links and named
  missing = [path for path in links + named
             if not path.startswith('http') and not (ROOT / path).exists()]
  assert not missing


def test_every_config_is_in_the_configs_table():
  shipped = {path.name for path in (ROOT / 'configs').glob('*.py') if path.name != '__init__.py'}
  listed = set(re.findall(r'^\| `configs/(\w+\.py)` \|', README, flags=re.M))
  assert listed == shipped


def test_python_example_builds_a_run(tmp_path):
  """The README's Python block, run with its workdir in tmp_path (nothing loaded or trained)."""
  code = re.search(r'```python\n(.*?)```', README, flags=re.S).group(1)
  lines = [line for line in code.splitlines() if 'load_run' not in line]  # Needs a finished run.
  namespace = {}
  exec('\n'.join(lines).replace('/tmp/toy', str(tmp_path)), namespace)  # pylint: disable=exec-used
  state = namespace['state']
  assert int(state.step) == 0
  assert set(state.params) == {'nerf', 'background'}
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))
