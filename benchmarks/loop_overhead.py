"""Where launch.py's loop spends time beyond the compiled step, in one process.

  TFDS_DATA_DIR=... python -m benchmarks.loop_overhead [--experiment=vae_mnist] [--steps=2000]

Times the experiment's compiled train step (train.compile_fns with the experiment's
train.steps_per_call, as launch.py runs it) fed three ways, alternating so that all
three see the same machine state:
  device:   batches already on the device (the step alone),
  host:     numpy batches (stacked k at a time) put on the mesh each call (parallel.to_global),
  pipeline: the tf.data input pipeline (data.train_batches, k batches stacked per element),
            then to_global, as the loop.
Then the input pipeline alone: wall and CPU seconds (all threads) per batch.
"""
import argparse
import importlib
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--experiment", default="vae_mnist")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--rounds", type=int, default=2)
  a = p.parse_args(argv)
  sys.path.insert(0, ROOT)
  import jax
  from genimg_jax import data, parallel, tasks, train
  c = importlib.import_module(f"experiments.{a.experiment}").get_config()
  c.experiment = a.experiment
  mesh = parallel.make_mesh()
  task = tasks.build_task(c)
  k = c.train.steps_per_call
  _, init, step = train.compile_fns(task, mesh, k, donate=True)
  state = init(jax.random.PRNGKey(0))
  rng = jax.random.PRNGKey(1)
  it = data.train_batches(c, 0, stack=k)  # as the loop reads it: one call's k batches at a time
  host = [next(it) for _ in range(50)]
  dev = [parallel.to_global(b, mesh, k > 1) for b in host]
  feeds = {"device": lambda i: dev[i % 50],
           "host": lambda i: parallel.to_global(host[i % 50], mesh, k > 1),
           "pipeline": lambda i: parallel.to_global(next(it), mesh, k > 1)}
  calls = a.steps // k
  print(f"{a.experiment}, batch {c.train.batch_size}, {k} step(s) per call, {jax.devices()[0].platform}:")
  for r in range(a.rounds):
    for name, feed in feeds.items():
      for i in range(20):
        state, _ = step(state, feed(i), rng)
      jax.block_until_ready(state)
      t = time.perf_counter()
      for i in range(calls):
        state, _ = step(state, feed(i), rng)
      jax.block_until_ready(state)
      print(f"  round {r}: step fed from {name:8s} {1e3 * (time.perf_counter() - t) / (calls * k):7.3f} ms/step",
            flush=True)
  t, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(calls):
    next(it)
  wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
  cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
  print(f"  input pipeline alone: {1e3 * wall / (calls * k):.3f} ms/batch wall, "
        f"{1e3 * cpu / (calls * k):.3f} ms/batch CPU (all threads)")


if __name__ == "__main__":
  main()
