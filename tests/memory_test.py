"""memory: the fewest remat chunks whose compiled plan fits, or one line saying why none does."""

import types

import pytest

from configs import dreamfusion as dreamfusion_config
from dreamfusion_jax import config_checks
from dreamfusion_jax import memory

GIB = memory.GIB


class FakeStep:
  """A compiled step whose plan is `planned` bytes."""

  def __init__(self, planned):
    self.planned = planned

  def memory_analysis(self):
    return types.SimpleNamespace(argument_size_in_bytes=self.planned, output_size_in_bytes=0,
                                 temp_size_in_bytes=0, alias_size_in_bytes=0)


def paper_config(**fields):
  config = dreamfusion_config.get_config()
  config.render.parallel_chunks = 1
  config.update_from_flattened_dict(fields)
  return config


def planner(per_view_gib=8.0, fixed_gib=2.0):
  """compile_step of a step planning fixed + per view / (1 + chunks / 4) GiB; records calls."""
  calls = []

  def compile_step(config):
    calls.append((config.render.remat_chunks, config.batch_size))
    chunks = config.render.remat_chunks
    return FakeStep((fixed_gib + config.batch_size * per_view_gib / (1 + chunks / 4)) * GIB)
  return compile_step, calls


def test_candidates_divide_the_rays_and_the_parallel_groups():
  assert memory.candidates(paper_config()) == [0, 2, 4, 8, 16, 32, 64]
  # 3 views of 10 x 10: 300 rays; 3 parallel groups must divide each chunk's rays too.
  config = paper_config(**{'batch_size': 3, 'render.height': 10, 'render.width': 10,
                           'render.parallel_chunks': 3})
  assert memory.candidates(config) == [0, 2, 4]


@pytest.mark.parametrize('available_gib, chunks', [
    (40.0, 0), (20.0, 4), (9.0, 16), (4.0, 64)])
def test_fewest_chunks_that_fit_by_bisection(available_gib, chunks):
  # 4 views: 34, 23.3, 18, 12.7, 8.4, 5.6, 3.9 GiB with 0, 2, ..., 64 chunks.
  compile_step, calls = planner()
  fit = memory.fit_step(paper_config(), compile_step, available=available_gib * GIB)
  assert fit.chunks == chunks and fit.planned <= available_gib * GIB
  assert fit.step.planned == fit.planned and fit.available == available_gib * GIB
  tried = [c for c, _ in calls]
  assert len(tried) == len(set(tried)) <= 5  # Bisection: each count compiled at most once.
  assert all(views == 4 for _, views in calls)


def test_no_fit_is_one_line_with_the_views_that_would_fit():
  compile_step, calls = planner()
  with pytest.raises(config_checks.ConfigError) as error:
    memory.fit_step(paper_config(), compile_step, available=3.0 * GIB)
  line = str(error.value)
  assert '\n' not in line
  # One view plans 2.47 GiB at 64 chunks, each more 0.47: two fit in 3.
  assert line.startswith('the step does not fit: 3.88 GiB planned with render.remat_chunks=64 '
                         '(the most tried), 3.00 GiB available; set config.batch_size=2 '
                         '(planned 2.94 GiB)')
  assert calls[-1] == (64, 1)  # The plan of one view at the most chunks.
  with pytest.raises(config_checks.ConfigError, match='even 1 view plans 2.47 GiB; lower'):
    memory.fit_step(paper_config(), planner()[0], available=2.0 * GIB)


def test_available_memory_is_the_limit_or_what_the_host_has():
  assert memory.available_bytes(paper_config(memory_limit_gib=1.5)) == 1.5 * GIB
  host = memory.available_bytes(paper_config())  # CPU: MemAvailable.
  assert 0 < host == pytest.approx(memory.host_available_bytes(), rel=0.2)
