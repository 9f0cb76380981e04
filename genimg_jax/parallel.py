"""Device mesh, shardings and multi-host helpers.

Data parallelism over a 1-D mesh of every device of every process: the batch is
sharded along its first axis ("data"), parameters and optimizer state are
replicated. `jax.jit` with these shardings does what `pmap` used to do.
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None):
  """A 1-D mesh over all devices (of all processes), axis name "data"."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh, stacked=False):
  """Shards the batch axis over the data axis: the leading one, or the second one of
  stacked batches [steps, batch, ...] (train.steps_per_call > 1)."""
  return NamedSharding(mesh, P(None, DATA_AXIS) if stacked else P(DATA_AXIS))


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


def check_batch_divisible(global_batch_size, n, name="train.batch_size"):
  """Raises a clear error when a batch cannot be split evenly over n devices."""
  if global_batch_size <= 0 or global_batch_size % n:
    raise ValueError(f"{name}={global_batch_size} must be a positive multiple of the "
                     f"device count ({n}); e.g. {max(n, (global_batch_size // n) * n)}.")


def to_global(local_batch, mesh, stacked=False):
  """Assembles process-local numpy batches into global arrays sharded over `mesh`."""
  sharding = batch_sharding(mesh, stacked)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def global_shapes(local_spec, mesh, stacked=False):
  """The global arrays' ShapeDtypeStructs (with their shardings) that to_global makes from
  local batches of the shapes in `local_spec` (every process holds as many rows)."""
  sharding, axis = batch_sharding(mesh, stacked), 1 if stacked else 0

  def one(s):
    shape = list(s.shape)
    shape[axis] *= jax.process_count()
    return jax.ShapeDtypeStruct(tuple(shape), s.dtype, sharding=sharding)

  return jax.tree.map(one, local_spec)


def fetch(tree):
  """Brings (replicated or sharded) global arrays to host numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  def one(x):
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_replicated:  # every process holds the whole value
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)


def initialize_distributed(coordinator_address="", num_processes=0, process_id=-1):
  """Starts JAX's distributed runtime when the run spans several processes.

  Explicit values (flags, or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID environment variables) are used when given; on a Cloud TPU pod
  slice (TPU_WORKER_HOSTNAMES lists several workers) and under SLURM or Open MPI,
  jax.distributed.initialize() finds them itself. A single process does nothing.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
  if process_id < 0:
    process_id = int(os.environ.get("JAX_PROCESS_ID", "-1"))
  if coordinator_address:
    if num_processes <= 0 or process_id < 0:
      raise ValueError("A coordinator address needs the process count and this process's id "
                       "(--num_processes, --process_id or JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  tpu_workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in tpu_workers or "SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1 \
      or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    jax.distributed.initialize()
    return True
  return False
