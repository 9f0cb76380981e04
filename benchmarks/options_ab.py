"""Whole train steps with the project's XLA options vs the same options less one, alternating.

  TFDS_DATA_DIR=... python -m benchmarks.options_ab vae_mnist 256 [ROUNDS [K [OPTION]]]

Compiles the network's train step (train.compile_fns, state donated, K steps per call,
default 1; real batches, as benchmarks/run.py) twice: with parallel.compiler_options()
("project") and with those options less OPTION (default
xla_cpu_copy_insertion_use_region_analysis; "without"). Prints for each: the copy
instructions in the compiled program and how many are of arrays of at least 12,800
elements (parameter-sized here); whether both give the same state, bit for bit, after 4
calls; then images/second of each, in ROUNDS alternating rounds (default 6) of about a
second, and the per-round ratio project / without. Used for the choice documented in
genimg_jax/parallel.py.
"""
import re
import sys
import time

import jax
import numpy as np

from benchmarks import run as bench
from genimg_jax import data, parallel, tasks, train


def copies(compiled_text):
  """(all copy instructions, those of arrays with >= 12,800 elements) in an HLO text."""
  shapes = re.findall(r"= \w+\[([\d,]*)\]\S* copy\(", compiled_text)
  big = [s for s in shapes if np.prod([int(d) for d in s.split(",") if d]) >= 12_800]
  return len(shapes), len(big)


def main(argv):
  net, batch = argv[1], int(argv[2])
  rounds = int(argv[3]) if len(argv) > 3 else 6
  k = int(argv[4]) if len(argv) > 4 else 1
  option = argv[5] if len(argv) > 5 else bench.REGION_ANALYSIS
  project = parallel.compiler_options() or {}
  if option not in project:
    raise SystemExit(f"{option!r} is not among this platform's options {sorted(project)}")
  variants = {"project": project, "without": {o: v for o, v in project.items() if o != option}}
  c = bench.config_for(net, batch)
  it = data.train_batches(c, 0, batch, stack=k)
  mesh = parallel.make_mesh()
  batches = [parallel.to_global(next(it), mesh, k > 1) for _ in range(4)]
  runs, finals = {}, {}
  for name, options in variants.items():
    _, init, step = train.compile_fns(tasks.build_task(c), mesh, k, compiler_options=options)
    state, rng = init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
    n_all, n_big = copies(step.lower(state, batches[0], rng).compile().as_text())
    print(f"{name}: {n_all} copies, {n_big} of >= 12,800 elements", flush=True)
    for i in range(4):
      state, _ = step(state, batches[i], rng)
    finals[name] = jax.device_get(state)
    runs[name] = [step, state, rng]
  same = all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(finals["project"]), jax.tree.leaves(finals["without"])))
  print(f"same state after 4 calls: {same}")
  step, state, rng = runs["project"]  # about a second per timing, from one call
  t = time.perf_counter()
  runs["project"][1] = jax.block_until_ready(step(state, batches[0], rng)[0])
  calls = max(3, int(1.0 / (time.perf_counter() - t)))
  rates = bench.alternate_in_process(runs, batches, rounds, calls, k * batch)
  ratios = [a / b for a, b in zip(rates["project"], rates["without"])]
  print(f"{net} batch {batch}, {k} step(s) per call, project / without {option}: per round "
        f"{' / '.join(f'{r:.2f}' for r in ratios)}, median {np.median(ratios):.2f}")


if __name__ == "__main__":
  main(sys.argv)
