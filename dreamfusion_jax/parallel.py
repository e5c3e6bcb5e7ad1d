"""Every device and every host: the 1-D `data` mesh and where each array of a step lives.

DreamFusion's step is data-parallel the way `pmap` made it (each device renders its share of the
step's views and runs SDS on them, and the NeRF gradient is the mean over devices), written with
`jax.jit` over a device mesh instead, since `pmap` is in maintenance mode and now built on the
same machinery. The train state, the frozen diffusion model and the text embeddings are
replicated; the step's rays and renders are constrained to be split along `data`, and XLA's
partitioner turns the gradient of the replicated parameters into the cross-device mean (an
all-reduce). Random draws come from the replicated state's key with partitionable Threefry, so
a step draws the same cameras, jitter and noise on 1 device or 64, and the result differs only
in float reduction order.

Many prompts at once stack one independent train state per prompt along a leading axis that is
split along `data` instead (`shard_leading`).

Multi-host: `initialize` joins the processes (`jax.distributed`) before anything touches a
device; the mesh then spans every host's devices. No host needs a key of its own, because every
draw happens inside the jitted step on replicated values; logging and export run on process 0
(`is_primary`), checkpoints are written by all processes together (Orbax).
"""

import jax
from jax.experimental import multihost_utils
import numpy as np

AXIS = 'data'


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Joins this process to a multi-host run (jax.distributed.initialize).

  With no arguments JAX detects the cluster (a TPU pod's workers, a SLURM allocation's tasks,
  Open MPI); a local or custom cluster passes all three.

  Args:
    coordinator_address: 'host:port' of process 0, or None to detect.
    num_processes: int or None.
    process_id: int or None.
  """
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def mesh_size(batch_size, requested, device_count, process_count=1):
  """How many devices a step's views are split over.

  Args:
    batch_size: views per step B.
    requested: devices asked for (config.num_devices); 0 for the default: every device on
      several hosts, else the most devices that B splits over evenly.
    device_count: devices in the run (all hosts).
    process_count: hosts (processes).

  Returns:
    int n with B % n == 0.

  Raises:
    ValueError: a message naming config.batch_size / config.num_devices and what to change.
  """
  if requested < 0 or requested > device_count:
    raise ValueError(f'config.num_devices={requested} must be in [0, {device_count}] (the run '
                     f'has {device_count} devices; 0 uses them all)')
  if requested == 0 and process_count == 1:
    return max(n for n in range(1, device_count + 1) if batch_size % n == 0)
  n = requested or device_count
  if process_count > 1 and n != device_count:
    raise ValueError(f'config.num_devices={requested}: a run on {process_count} hosts uses all '
                     f'{device_count} devices; set it to 0 or {device_count}')
  if batch_size % n:
    raise ValueError(f'config.batch_size={batch_size} views do not split evenly over {n} '
                     f'devices: set config.batch_size to a multiple of {n} (per-device batch '
                     f'{-(-batch_size // n)} gives {n * -(-batch_size // n)}) or '
                     'config.num_devices to a divisor of it')
  return n


def make_mesh(num_devices):
  """A 1-D mesh with axis `data` over the first num_devices of jax.devices() (all hosts)."""
  devices = np.asarray(jax.devices()[:num_devices])
  return jax.sharding.Mesh(devices, (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh):
  """The NamedSharding of an array held whole by every device of the mesh."""
  return jax.sharding.NamedSharding(mesh, jax.P())


def split(mesh):
  """The NamedSharding of an array whose leading axis is split along `data`."""
  return jax.sharding.NamedSharding(mesh, jax.P(AXIS))


def _put(x, sharding):
  """One leaf (the same value on every host) as a global array with `sharding`.

  It goes through host memory: a committed device array cannot move to another host's devices
  directly. Typed PRNG keys travel as their key data.
  """
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    impl = jax.random.key_impl(x)
    return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding), impl=impl)
  host = np.asarray(jax.device_get(x))
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh):
  """Puts every leaf of a pytree (the same value on every host) on every device of the mesh."""
  return jax.tree.map(lambda x: _put(x, replicated(mesh)), tree)


def shard_leading(tree, mesh):
  """Splits every leaf of a pytree (the same value on every host) along its leading axis."""
  return jax.tree.map(lambda x: _put(x, split(mesh)), tree)


def constrain_fn(mesh):
  """x -> x with its leading axis split along `data` (inside jit): the step's `shard`."""
  sharding = split(mesh)
  return lambda x: jax.lax.with_sharding_constraint(x, sharding)


def to_host(tree):
  """numpy copies of a pytree of global arrays, on every process (collective when sharded)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)


def is_primary():
  """Whether this is process 0, the one that logs and exports."""
  return jax.process_index() == 0


def any_process(flag):
  """Whether `flag` (a bool of this process) is true on any process (collective on several)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def sync(name):
  """Waits until every process reaches the barrier `name` (no-op on one host)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
