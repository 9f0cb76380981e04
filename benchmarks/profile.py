"""Where the time of a compiled train step goes: an XLA op-level profile on this machine.

  python -m benchmarks.profile --network=gan_mnist --batch=256

Runs the same jitted step as benchmarks/run.py under jax.profiler.trace, reads the
trace (the XSpace protobuf that TensorBoard's profiler reads; parsed with the proto
definitions that tensorflow ships), and prints the time per XLA operation, grouped by
kind (convolution, matmul, fusion of element-wise ops, ...), as a share of the step.
"""
import argparse
import collections
import glob
import json
import os
import re
import tempfile
import time

import numpy as np

from benchmarks import run as bench


def op_kind(name):
  """An HLO op name ("convolution.12", "loop_multiply_fusion.3", "dot.1") -> its kind."""
  base = re.sub(r"[._]\d+$", "", name).lower()
  for kind, keys in (("YNNPACK conv/matmul fusion", ("ynn",)), ("convolution", ("conv",)), ("matmul", ("dot", "gemm", "matmul")),
                     ("reduction", ("reduce",)), ("copy/transpose", ("copy", "transpose")),
                     ("fusion (element-wise)", ("fusion",))):
    if any(k in base for k in keys):
      return kind
  return "other"


def hlo_line(hlo_text, name):
  """The shapes of an op, from the compiled HLO text (for telling convolutions apart)."""
  m = re.search(r"%" + re.escape(name) + r" = ([^\n]{0,160})", hlo_text)
  return m.group(1) if m else ""


def read_trace(logdir):
  """{op name: total microseconds} over the XLA op events of the trace."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  totals = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if "XLA Ops" not in line.name and "xla" not in line.name.lower():
        continue
      for ev in line.events:
        name = names.get(ev.metadata_id, "?")
        if not name.startswith("ThunkExecutor"):  # the executor's spans contain the ops
          totals[name] += ev.duration_ps / 1e6
  return totals


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--network", default="gan_mnist", choices=bench.NETWORKS)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--top", type=int, default=12)
  a = p.parse_args()
  import jax
  from genimg_jax import parallel, tasks, train
  path = os.path.join(tempfile.mkdtemp(), "batches.npz")
  bench.write_batches(a.network, a.batch, 2, path)
  stored = np.load(path)
  task = tasks.build_task(bench.config_for(a.network, a.batch))
  mesh = parallel.make_mesh()
  _, init, step = train.compile_fns(task, mesh)
  state, rng = init(jax.random.PRNGKey(0)), jax.random.PRNGKey(0)
  batches = [parallel.to_global({"image": stored["image"][i], "label": stored["label"][i]}, mesh)
             for i in range(2)]
  hlo = step.lower(state, batches[0], rng).compile().as_text()
  for i in range(3):  # compile and warm up outside the trace
    state, _ = step(state, batches[i % 2], rng)
  jax.block_until_ready(state)
  logdir = tempfile.mkdtemp(prefix="profile_")
  t = time.perf_counter()
  with jax.profiler.trace(logdir):
    for i in range(a.steps):
      state, _ = step(state, batches[i % 2], rng)
    jax.block_until_ready(state)
  wall_us = (time.perf_counter() - t) * 1e6 / a.steps
  totals = read_trace(logdir)
  op_us = sum(totals.values()) / a.steps
  kinds = collections.Counter()
  for name, us in totals.items():
    kinds[op_kind(name)] += us / a.steps
  out = {"network": a.network, "batch": a.batch, "step_wall_us": wall_us, "op_us_per_step": op_us,
         "by_kind_us": dict(kinds.most_common()),
         "top_ops_us": {k: v / a.steps for k, v in totals.most_common(a.top)}}
  print(f"{a.network} batch {a.batch}: {wall_us / 1e3:.1f} ms/step wall (traced), "
        f"{op_us / 1e3:.1f} ms/step in XLA ops")
  for kind, us in kinds.most_common():
    print(f"  {kind:24s} {us / 1e3:8.2f} ms  {100 * us / op_us:5.1f}%")
  print("  top ops:")
  for name, us in totals.most_common(a.top):
    print(f"    {name:28s} {us / a.steps / 1e3:8.2f} ms  {hlo_line(hlo, name)}")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
