"""layers.Conv's forms: one layer alone, and whole train steps with every Conv as "conv" vs
the default (layers.conv_method), alternating.

  python -m benchmarks.conv_ab layer [BATCH]
  TFDS_DATA_DIR=... python -m benchmarks.conv_ab step NETWORK BATCH [ROUNDS]

layer: for each (input channels, output channels, size) below, the forward and both
gradients (the VJP of an output gradient) of a 3x3 SAME convolution on random inputs
(batch default 256), ms per call, the median of 5 timings of 20 calls, for each form. step: the
network's train step (train.compile_fns, state donated, real batches, as
benchmarks/run.py) compiled with each choice, images/second in ROUNDS alternating
rounds (default 6), and the per-round ratio default / conv. Used for the choice
documented in genimg_jax/models/layers.py (Conv).
"""
import sys
from unittest import mock

import jax
import numpy as np

from benchmarks import run as bench
from genimg_jax import data, parallel, tasks, train
from genimg_jax.models import layers

SHAPES = [(16, 1, 28), (16, 2, 28), (16, 3, 28), (16, 6, 28), (32, 1, 32), (32, 6, 32),
          (16, 16, 28), (32, 32, 14)]


def ms_per_call(f, *args):
  """After one warm-up call, the median of 5 timings of 20 calls (bench.timed_repeat)."""
  jax.block_until_ready(f(*args))
  per_s = [bench.timed_repeat(lambda: f(*args), jax.block_until_ready, 1, 20) for _ in range(5)]
  return 1e3 / float(np.median(per_s))


def layer(batch):
  opts = parallel.compiler_options()
  for cin, f, size in SHAPES:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (batch, size, size, cin))
    k = jax.random.normal(keys[1], (3, 3, cin, f)) * 0.1
    dy = jax.random.normal(keys[2], (batch, size, size, f))
    line = []
    for method in ("conv", "scatter"):
      fwd = jax.jit(lambda x, k, m=method: layers.conv2d(x, k, m), compiler_options=opts)
      grads = jax.jit(lambda x, k, m=method: jax.vjp(lambda x, k: layers.conv2d(x, k, m), x, k)[1](dy),
                      compiler_options=opts)
      line.append(f"{method} {ms_per_call(fwd, x, k):6.2f} / {ms_per_call(grads, x, k):6.2f}")
    print(f"{cin:3d} -> {f:2d} at {size}x{size}, batch {batch}, forward / both gradients ms: "
          + " | ".join(line) + f"  (default: {layers.conv_method(cin, f, 3)})", flush=True)


def step(net, batch, rounds):
  c = bench.config_for(net, batch)
  it = data.train_batches(c, 0, batch)
  mesh = parallel.make_mesh()
  batches = [parallel.to_global(next(it), mesh) for _ in range(4)]
  runs = {}
  for name, pick in (("conv", lambda *_: "conv"), ("default", layers.conv_method)):
    with mock.patch.object(layers, "conv_method", pick):  # traced (first calls) inside
      _, init, fn = train.compile_fns(tasks.build_task(c), mesh, 1, donate=True)
      state, rng = init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
      for i in range(3):
        state, _ = fn(state, batches[i], rng)
      runs[name] = [fn, jax.block_until_ready(state), rng]
  rates = bench.alternate_in_process(runs, batches, rounds, max(4, 3072 // batch), batch)
  ratios = [a / b for a, b in zip(rates["default"], rates["conv"])]
  print(f"{net} batch {batch}, default / conv: per round {' / '.join(f'{r:.2f}' for r in ratios)}, "
        f"median {np.median(ratios):.2f}")


if __name__ == "__main__":
  if sys.argv[1:2] == ["layer"]:
    layer(int(sys.argv[2]) if len(sys.argv) > 2 else 256)
  elif sys.argv[1:2] == ["step"] and len(sys.argv) >= 4:
    step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 6)
  else:
    raise SystemExit(__doc__)
