"""Where the time of a train step goes: an op-level profile on this machine.

  python -m benchmarks.profile --network=gan_mnist --batch=256
  python -m benchmarks.profile --network=gan_mnist --batch=256 --framework=torch

jax (default): runs the same jitted step as benchmarks/run.py under jax.profiler.trace,
reads the trace (the XSpace protobuf that TensorBoard's profiler reads; parsed with the
proto definitions that tensorflow ships), and prints the time per XLA operation, grouped
by kind (convolution, matmul, fusion of element-wise ops, ...), as a share of the time
attributed to ops. XLA:CPU runs its own convolutions asynchronously on its thread pool
and the trace mostly records only their launch (gan_mnist's; vae_mnist_conv's trace has
some in full), so most of the convolutions' time is missing from the attributed time
(the gap to the traced step time is at most that).

torch: the PyTorch mirror's eager step (benchmarks/torch_nets.py, same batches) under
torch.profiler, the self CPU time of each aten op grouped into the same kinds; torch
runs an op's parallel work inside the op's span, so these add up to the step.
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
  for kind, keys in (("YNNPACK fusion (matmul, reduction)", ("ynn",)), ("convolution", ("conv",)), ("matmul", ("dot", "gemm", "matmul")),
                     ("reduction", ("reduce",)), ("copy/transpose", ("copy", "transpose")),
                     ("fusion (element-wise)", ("fusion",))):
    if any(k in base for k in keys):
      return kind
  return "other"


def op_layer(hlo_text, name, depth=3):
  """The kind of layer an HLO op belongs to, from the flax module path in its metadata
  ("jit(train_step)/jvp(DCGANDiscriminator)/_DLayer_1/StridedConv_0/dot_general" ->
  "StridedConv"); "<Network> (other ops)" for ops of a network outside its indexed
  submodules (activations, reshapes); "outside the networks" for the rest (optimizer,
  EMA, loss, random numbers, the finiteness check). A fusion without metadata of its own
  (layout copies) takes the most frequent layer of the ops fused into it; one with none
  at all (XLA's reductions rewritten as reduce-windows) that of its first operand."""
  line = _op_line(hlo_text, name)
  paths = re.findall(r'op_name="([^"]*)"', line)
  called = re.search(r"calls=%([\w.\-]+)", line)
  if not paths and called:  # the fused computation's body: "%name (...) -> ... {" to "}"
    body = re.search(r"\n%" + re.escape(called.group(1)) + r" [^\n]*\{\n(.*?)\n\}", hlo_text, re.S)
    paths = re.findall(r'op_name="([^"]*)"', body.group(1)) if body else []
  layers = collections.Counter(_layer_of_path(path) for path in paths)
  if layers:
    return layers.most_common(1)[0][0]
  operand = re.search(r"\w\(%([\w.\-]+)", line)
  return op_layer(hlo_text, operand.group(1), depth - 1) if operand and depth else "outside the networks"


def _layer_of_path(path):
  modules = [m for m in re.findall(r"/([A-Z][A-Za-z0-9]*?)_\d+(?=/|$)", path) if not m.startswith("_")]
  if modules:
    return modules[-1]
  network = re.search(r"\b([A-Z][A-Za-z0-9]*)\)*/", path)
  return f"{network.group(1)} (other ops)" if network else "outside the networks"


def torch_op_kind(name):
  """An aten op name ("aten::convolution_backward", "aten::addmm", ...) -> its kind."""
  base = name.lower()
  for kind, keys in (("convolution", ("conv",)), ("batch norm", ("batch_norm",)),
                     ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "linear")),
                     ("copy/transpose", ("copy", "clone", "contiguous", "transpose", "aten::t",
                                         "as_strided", "permute"))):
    if any(k in base for k in keys):
      return kind
  return "element-wise and other"


def torch_profile(network, batch, steps, top):
  """ms per step of the torch eager step, by kind and by op (self CPU time)."""
  from torch.profiler import ProfilerActivity, profile
  path = os.path.join(tempfile.mkdtemp(), "batches.npz")
  bench.write_batches(network, batch, 2, path)
  call, sync, _, _ = bench.torch_setup(argparse.Namespace(  # the benchmark's torch worker
      network=network, batch=batch, batches_file=path, mode="eager"))
  for _ in range(3):
    sync(call())
  t = time.perf_counter()
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      sync(call())
  wall_us = (time.perf_counter() - t) * 1e6 / steps
  ops = {e.key: e.self_cpu_time_total / steps for e in prof.key_averages()}
  kinds = collections.Counter()
  for name, us in ops.items():
    kinds[torch_op_kind(name)] += us
  return wall_us, kinds, collections.Counter(ops).most_common(top)


def _op_line(hlo_text, name):
  """The definition of an op in the compiled HLO text, after "%name = "."""
  m = re.search(r"%" + re.escape(name) + r" = ([^\n]*)", hlo_text)
  return m.group(1) if m else ""


def hlo_line(hlo_text, name):
  """The shapes of an op, from the compiled HLO text (for telling convolutions apart)."""
  return _op_line(hlo_text, name)[:160]


def print_shares(us_by_name, op_us, width=34):
  """One line per kind or layer, largest first: its ms per step and share of op_us."""
  for name, us in us_by_name.most_common():
    print(f"  {name:{width}s} {us / 1e3:8.2f} ms  {100 * us / op_us:5.1f}%")


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
  p.add_argument("--framework", default="jax", choices=("jax", "torch"))
  a = p.parse_args()
  if a.framework == "torch":
    wall_us, kinds, top_ops = torch_profile(a.network, a.batch, a.steps, a.top)
    op_us = sum(kinds.values())
    print(f"torch eager {a.network} batch {a.batch}: {wall_us / 1e3:.1f} ms/step wall (profiled), "
          f"{op_us / 1e3:.1f} ms/step in aten ops (self CPU time)")
    print_shares(kinds, op_us)
    print("  top ops:")
    for name, us in top_ops:
      print(f"    {name:40s} {us / 1e3:8.2f} ms")
    print(json.dumps({"framework": "torch", "network": a.network, "batch": a.batch,
                      "step_wall_us": wall_us, "op_us_per_step": op_us,
                      "by_kind_us": dict(kinds.most_common()), "top_ops_us": dict(top_ops)}))
    return
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
  kinds, layers = collections.Counter(), collections.Counter()
  for name, us in totals.items():
    kinds[op_kind(name)] += us / a.steps
    layers[op_layer(hlo, name)] += us / a.steps
  out = {"network": a.network, "batch": a.batch, "step_wall_us": wall_us, "op_us_per_step": op_us,
         "by_kind_us": dict(kinds.most_common()), "by_layer_us": dict(layers.most_common()),
         "top_ops_us": {k: v / a.steps for k, v in totals.most_common(a.top)}}
  print(f"{a.network} batch {a.batch}: {wall_us / 1e3:.1f} ms/step wall (traced), "
        f"{op_us / 1e3:.1f} ms/step in XLA ops")
  print_shares(kinds, op_us)
  print("  by layer (flax module of the op):")
  print_shares(layers, op_us, width=32)
  print("  top ops:")
  for name, us in totals.most_common(a.top):
    print(f"    {name:28s} {us / a.steps / 1e3:8.2f} ms  {hlo_line(hlo, name)}")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
