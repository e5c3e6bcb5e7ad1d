"""Schedules as functions of the step."""

import numpy as np
import pytest

from dreamfusion_jax import schedules


def test_log_linear_endpoints_and_midpoint():
  f = lambda s: float(schedules.log_linear_warmup(s, init=1e-2, final=1e-4, num_steps=100))
  assert f(0) == pytest.approx(1e-2, rel=1e-5)
  assert f(100) == pytest.approx(1e-4, rel=1e-5)
  assert f(50) == pytest.approx(1e-3, rel=1e-5)  # Geometric mean: log-linear.
  assert f(1000) == pytest.approx(1e-4, rel=1e-5)


def test_warmup_ramps_from_the_multiplier():
  f = lambda s: float(schedules.log_linear_warmup(s, init=1.0, final=1.0, num_steps=100,
                                                  warmup_steps=10, warmup_multiplier=0.01))
  assert f(0) == pytest.approx(0.01)
  assert f(5) == pytest.approx(0.01 + 0.99 * np.sin(0.25 * np.pi))
  assert f(10) == pytest.approx(1.0)
  values = [f(s) for s in range(11)]
  assert all(a < b for a, b in zip(values, values[1:]))


def test_linear_schedule():
  f = lambda s: float(schedules.linear(s, start=100.0, end=20.0, num_steps=40))
  assert f(0) == 100.0 and f(40) == 20.0 and f(400) == 20.0
  assert f(10) == pytest.approx(80.0)
  assert float(schedules.linear(123, start=100.0, end=100.0, num_steps=10)) == 100.0


def test_exponential_warmup_is_dream_fields_schedule():
  """Dream Fields' schedule.py: 1e-5 -> 1e-4 exponentially over 1500 steps, then flat."""
  f = lambda s: float(schedules.log_linear_warmup(
      s, init=1e-4, final=1e-4, num_steps=10_000, warmup_steps=1500, warmup_multiplier=0.1,
      warmup_shape='exponential'))
  for step in (0, 300, 750, 1500, 5000):
    reference = 1e-5 * (1e-4 / 1e-5)**min(step / 1500, 1.0)
    assert f(step) == pytest.approx(reference, rel=1e-5), step
