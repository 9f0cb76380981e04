"""Device mesh, shardings and multi-host helpers.

Data parallelism over a 1-D mesh of every device of every process: the batch is
sharded along its first axis ("data"), parameters and optimizer state are
replicated. `jax.jit` with these shardings does what `pmap` used to do.
"""
import functools

from absl import logging
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


# XLA:CPU (jaxlib 0.10) hands matmuls, convolutions and reductions to YNNPACK by default.
# On the machine this project is benchmarked on (2 x86-64 cores with AVX-512), YNNPACK's
# convolutions are slower than XLA's own: whole train steps, same process, alternating
# rounds (benchmarks/README.md, "What each change buys"): vae_mnist_conv batch 256
# 814 / 874 -> 1,254 / 1,191 img/s, batch 1024 398 / 421 -> 1,009 / 1,097, batch 64
# 1,176 / 1,211 -> 1,410 / 1,565; the Inception-v3 of the FID metric, 50 images of
# 299x299: 5.7 / 5.9 -> 14.2 / 14.4 img/s. So on CPU every jax.jit of the project (train
# and eval steps, sampling, metric networks) keeps YNNPACK for matmuls and reductions only.
# (From the first of these options, 2026-11-22, until later that day the reductions were
# left out too, by listing only the matmuls: XLA's own reductions, BatchNorm statistics and
# bias gradients rewritten into reduce-windows, were then gan_mnist's largest cost after
# the convolutions, benchmarks/README.md "Where the time goes". Giving them back, same
# measurement: gan_mnist batch 256 813 / 758 / 787 / 947 -> 947 / 911 / 910 / 944 img/s,
# batch 1024 +5% (median of 4 paired rounds), vae_mnist batch 64 +7-15%, 256 +1-12%;
# vae_mnist_conv 0.88-1.28x per round and the Inception-v3 no clear change; gan_mnist
# batch 64 slower, 0.70-0.91x and 0.86-1.08x per round in two runs.) Other platforms: no
# options.
#
# And XLA:CPU's copy insertion with region analysis (2026-11-27). With the state donated,
# each output buffer is its input's, and XLA:CPU's default copy insertion copied every
# parameter and both Adam moments of the MLP VAE at the start of each step (21 copies of
# parameter-sized arrays, 25% of the time its profile attributes to ops at batch 256):
# the update of a parameter and that of its moments are separate fusions that each read
# the old moments, and without the analysis XLA does not order them so that the in-place
# writes come last (openxla/xla issue 20440 is this case). With it, none of those copies;
# the state after a step is the same bit for bit (tests/test_train.py). Whole steps, same
# process, alternating rounds, median of the per-round ratios (python -m
# benchmarks.options_ab NETWORK BATCH; benchmarks/README.md, "What each change buys"):
# vae_mnist 1.09x / 1.11x / 1.04x at batch 64 / 256 / 1024 and 1.11x as vae_mnist trains
# (batch 100, 10 steps per call); gan_mnist 1.04x / 0.98x / 0.98x and vae_mnist_conv
# 1.00x / 0.98x / 1.02x, within their noise (their copies also fall, 242 -> 169 and
# 204 -> 119, but the convolutions dominate their steps).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
                        "xla_cpu_copy_insertion_use_region_analysis": True}


@functools.cache
def compiler_options():
  """XLA options for this project's jitted functions on the default backend, or None.

  On CPU, those of CPU_COMPILER_OPTIONS that this jaxlib knows (each checked once by
  compiling a one-op function with it; an option this XLA lacks is left out, with a
  warning, and the others kept).
  """
  if jax.default_backend() != "cpu":
    return None
  accepted = {}
  for name, value in CPU_COMPILER_OPTIONS.items():
    try:
      jax.jit(lambda x: x + 1, compiler_options={name: value})(np.float32(0))
    except Exception as e:  # an option this XLA does not have: leave it out
      logging.warning("XLA:CPU option %s=%s not accepted (%s); leaving it out.",
                      name, value, str(e).splitlines()[0][:200])
      continue
    accepted[name] = value
  return accepted or None


# Functions that run once per process, like the state's initialization, gain nothing from
# LLVM's full optimization, and on CPU it is most of their compile time. At level 1 the
# init of every experiment here gave the same bits as at XLA's default (2), and compiled
# in 1.36 vs 1.77 s (vae_mnist), 1.86 vs 5.84 s (gan_mnist), 2.35 vs 7.62 s (vae_mnist_conv),
# 0.80 vs 1.92 s (classifier_mnist) (2 CPU cores, 2026-11-27; tests/test_train.py checks
# the bits). Level 0 changed the bits (normal samples by up to 1 ulp), so 1 it is.
ONCE_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def once_compiler_options(options):
  """`options` (a jit's XLA options, None for none) for a function that runs once: on CPU
  with ONCE_CPU_COMPILER_OPTIONS added; elsewhere unchanged."""
  if jax.default_backend() != "cpu":
    return options
  return {**(options or {}), **ONCE_CPU_COMPILER_OPTIONS}


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
  import os
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
