"""Schedules: values as pure functions of the training step."""

import jax.numpy as jnp


WARMUP_SHAPES = ('sine', 'exponential')


def log_linear_warmup(step, *, init, final, num_steps, warmup_steps=0, warmup_multiplier=0.01,
                      warmup_shape='sine'):
  """Log-linear interpolation from `init` to `final` over `num_steps`, with a warm-up.

  This is mip-NeRF's learning-rate schedule: during the first `warmup_steps` the value is also
  multiplied by a factor rising from `warmup_multiplier` to 1, along a quarter sine (mip-NeRF)
  or exponentially, warmup_multiplier^(1 - step / warmup_steps) (Dream Fields' schedule.py:
  1e-5 -> 1e-4 is multiplier 0.1).

  Args:
    step: int or int32 scalar, the current step.
    init, final: positive floats, the values at step 0 and at `num_steps`.
    num_steps: int > 0, the length of the schedule.
    warmup_steps: int >= 0.
    warmup_multiplier: float in (0, 1], the multiplier at step 0.
    warmup_shape: one of WARMUP_SHAPES.

  Returns:
    float32 scalar.
  """
  progress = jnp.clip(step / num_steps, 0.0, 1.0)
  value = jnp.exp(jnp.log(init) * (1.0 - progress) + jnp.log(final) * progress)
  if warmup_steps > 0:
    ramp = jnp.clip(step / warmup_steps, 0.0, 1.0)
    if warmup_shape == 'exponential':
      value *= jnp.exp(jnp.log(warmup_multiplier) * (1.0 - ramp))
    else:
      value *= warmup_multiplier + (1.0 - warmup_multiplier) * jnp.sin(0.5 * jnp.pi * ramp)
  return value


def linear(step, *, start, end, num_steps):
  """Linear interpolation from `start` (step 0) to `end` (step >= num_steps); constant if equal.

  Used for the guidance scale (DreamFusion: constant 100) and annealed loss weights.

  Args:
    step: int or int32 scalar.
    start, end: floats.
    num_steps: int > 0.

  Returns:
    float32 scalar.
  """
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / num_steps, 0.0, 1.0)
  return jnp.asarray(start + (end - start) * progress, jnp.float32)
