"""Device mesh, shardings and multi-host helpers.

Data parallelism over a 1-D mesh of every device of every process: the batch is
sharded along its first axis ("data"), parameters and optimizer state are
replicated. `jax.jit` with these shardings does what `pmap` used to do.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None):
  """A 1-D mesh over all devices (of all processes), axis name "data"."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh):
  """Shards the leading (batch) axis over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh):
  """The same full copy on every device."""
  return NamedSharding(mesh, P())


def local_batch_size(global_batch_size):
  """Rows of the global batch held by this process."""
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f"Global batch size {global_batch_size} is not divisible by "
                     f"the process count {n}.")
  return global_batch_size // n


def check_batch_divisible(global_batch_size, name="train.batch_size"):
  """Raises a clear error when a batch cannot be split evenly over devices."""
  n = jax.device_count()
  if global_batch_size <= 0 or global_batch_size % n:
    raise ValueError(f"{name}={global_batch_size} must be a positive multiple of the "
                     f"device count ({n}); e.g. {max(n, (global_batch_size // n) * n)}.")


def to_global(local_batch, mesh):
  """Assembles process-local numpy batches into global arrays sharded over `mesh`."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def fetch(tree):
  """Brings (replicated or sharded) arrays to host numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)
