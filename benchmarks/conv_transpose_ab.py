"""Whole train steps with every ConvTranspose4x4s2 as "conv" vs the default form, alternating.

  TFDS_DATA_DIR=... python -m benchmarks.conv_transpose_ab gan_mnist 256 [ROUNDS [FORMS]]

Prints images/second of the compiled train step (train.compile_fns, real batches,
as benchmarks/run.py) for each form of the transposed convolutions in FORMS (default
"conv,default"; see `form`), in alternating rounds (default 4) so that all see the same
machine state. Used for the choice documented in models/layers.py.
"""
import sys
import time
from unittest import mock

import jax

from benchmarks import run as bench
from genimg_jax import data, parallel, tasks, train
from genimg_jax.models import layers


def form(name, auto):
  """"default": layers.auto_method; "X": method X everywhere; "X+scatter": X except where
  the default picks scatter."""
  if name == "default":
    return auto
  if name.endswith("+scatter"):
    return lambda cin, f: "scatter" if auto(cin, f) == "scatter" else name[:-len("+scatter")]
  return lambda cin, f: name


def main(argv):
  net, batch = argv[1], int(argv[2])
  rounds = int(argv[3]) if len(argv) > 3 else 4
  forms = (argv[4] if len(argv) > 4 else "conv,default").split(",")
  c = bench.config_for(net, batch)
  it = data.train_batches(c, 0, batch)
  host = [next(it) for _ in range(4)]
  mesh = parallel.make_mesh()
  for rnd in range(rounds):
    for name in forms:
      pick = form(name, layers.auto_method)
      batches = [parallel.to_global(b, mesh) for b in host]
      with mock.patch.object(layers, "auto_method", pick):  # traced (first calls) inside
        task = tasks.build_task(c)
        _, init, step = train.compile_fns(task, mesh, 1, donate=True)
        state, rng = init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
        for i in range(3):
          state, _ = step(state, batches[i % 4], rng)
        jax.block_until_ready(state)
      n, t = max(4, 3072 // batch), time.perf_counter()
      for i in range(n):
        state, _ = step(state, batches[i % 4], rng)
      jax.block_until_ready(state)
      print(f"round {rnd}: {net} batch {batch} {name:8s} {n * batch / (time.perf_counter() - t):,.0f} img/s",
            flush=True)


if __name__ == "__main__":
  main(sys.argv)
