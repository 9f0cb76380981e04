"""Whole train steps with ConvTranspose4x4s2 as "conv" vs "matmul", alternating rounds.

  TFDS_DATA_DIR=... python -m benchmarks.conv_transpose_ab vae_mnist_conv 256

Prints images/second of the compiled train step (train.compile_fns, real batches,
as benchmarks/run.py) with every transposed convolution of >= 16 features in the
matmul form, and with none (the default), in two alternating rounds so that both
see the same machine state. Used for the choice documented in models/layers.py.
"""
import sys
import time

import jax
import numpy as np

from benchmarks import run as bench
from genimg_jax import data, parallel, tasks, train
from genimg_jax.models import layers


def main(argv):
  net, batch = argv[1], int(argv[2])
  c = bench.config_for(net, batch)
  it = data.train_batches(c, 0, batch)
  host = [next(it) for _ in range(4)]
  mesh = parallel.make_mesh()
  for rnd in range(2):
    for method, min_features in (("conv", None), ("matmul", 16)):
      layers.MATMUL_MIN_FEATURES = min_features
      task = tasks.build_task(c)
      _, init, step = train.compile_fns(task, mesh, 1, donate=True)
      state, rng = init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
      batches = [parallel.to_global(b, mesh) for b in host]
      for i in range(3):
        state, _ = step(state, batches[i % 4], rng)
      jax.block_until_ready(state)
      n, t = max(3, 2048 // batch), time.perf_counter()
      for i in range(n):
        state, _ = step(state, batches[i % 4], rng)
      jax.block_until_ready(state)
      print(f"round {rnd}: {net} batch {batch} {method:6s} {n * batch / (time.perf_counter() - t):,.0f} img/s",
            flush=True)
  layers.MATMUL_MIN_FEATURES = None


if __name__ == "__main__":
  main(sys.argv)
