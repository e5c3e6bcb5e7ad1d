"""The jitted training step shared by the toy prior and the toy CLIP: Optax plus an EMA copy."""

import jax
import jax.numpy as jnp
import optax


def make_ema_step(loss_fn, optimizer, ema_decay):
  """A jitted step (params, ema, opt_state, images, ids, key, step) -> (params, ema, opt_state,
  loss) for loss_fn(params, images, ids, key); the EMA decay warms up as (1 + step) / (10 + step).
  """

  def step_fn(params, ema, opt_state, images, ids, key, step):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, ids, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
    return params, ema, opt_state, loss

  return jax.jit(step_fn, donate_argnums=(0, 1, 2))
