"""Train-step throughput of genimg_jax against PyTorch and against the machine's peak.

  pip install -r requirements-bench.txt          # torch (CPU build)
  python -m benchmarks.run                       # everything; writes benchmarks/results.json
  python -m benchmarks.run --networks=vae_mnist --batches=64 --repeats=3 --no-torch_compile

What one run measures (every timed configuration in its own subprocess, so that peak
memory and compilation are its own; the configurations of one (network, batch), jax,
torch and the variants, are timed in alternating rounds, measure_together, and their
ratios taken round by round, because this VM's speed drifts between minutes):
  * jax rows: images/second of the compiled train step that launch.py runs (the
    task's train_step, jitted on a mesh of all local devices, state donated), after
    warm-up, median and [min, max] over --repeats timed repeats; compilation
    time (lower + compile); peak host RSS; FLOPs per step from XLA's cost analysis;
    achieved FLOP/s as a fraction of the matmul peak measured in the same run.
  * variants of the jax step, to show what each choice buys: train.steps_per_call
    (lax.scan over stacked batches), no buffer donation, a host sync every step
    (fetching the metrics, which the loop does only every log_every steps),
    model.dtype=bfloat16 (VAE networks), XLA's default options, the project's options
    with XLA:CPU's default copy insertion (no region analysis), and the plain Flax
    convolutions instead of the CPU forms (model.conv_impl=flax, convolutional networks).
  * torch rows: the same networks, optimizer and batches in PyTorch
    (benchmarks/torch_nets.py), eager and torch.compile.
  * matmul: float32 and bfloat16 GEMM peak of jax and torch on this machine.
  * pipeline: images/second delivered by data.train_batches (the tf.data input
    pipeline) alone, per network's preprocessing.
  * launch: `python launch.py --experiment=vae_mnist` shortened to --launch_steps, its
    wall time against steps x the measured step time (the hidden overhead), the step
    compiled with the experiment's own train.steps_per_call and timed just before and
    just after the launch runs by one waiting worker. Run twice: first with an empty
    compilation cache (a first launch), then in a new workdir with the cache the first
    left ("warm_cache": a rerun, a resume or a sweep's next trial). The wall's overhead
    is split in two parts that add up to it, both timed inside the launch (results.json):
    the steady loop (steps as the loop ran them, input pipeline included) against steps
    x step time, and the fixed costs (imports, start-up, final evaluation, exit).
  python -m benchmarks.run --networks=    # only the matmul peak and the launch row
Every input is real MNIST from the tfds pipeline (TFDS_DATA_DIR), never random arrays.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORKS = ("vae_mnist", "vae_mnist_conv", "gan_mnist", "ddpm_mnist", "ddpm_mnist_sampler")
CONV_NETWORKS = ("vae_mnist_conv", "gan_mnist")
VARIANT_NETWORKS = ("vae_mnist", "vae_mnist_conv", "gan_mnist")  # rows with the jax variants
BATCHES = {"ddpm_mnist": (64, 256), "ddpm_mnist_sampler": (256,)}  # else --batches
# ddpm_mnist_sampler: images/second of ddpm_mnist's DDIM sampler at 50 network evaluations
SAMPLER_STEPS = 50
REGION_ANALYSIS = "xla_cpu_copy_insertion_use_region_analysis"  # see genimg_jax/xla.py


def peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def calibrate(call, sync, min_seconds):
  """Warm-up, then the number of calls that makes one timed repeat last >= min_seconds."""
  for _ in range(2):
    out = call()
  sync(out)
  t = time.perf_counter()
  out = call()
  sync(out)
  return max(1, int(min_seconds / max(time.perf_counter() - t, 1e-6)))


def timed_repeat(call, sync, images_per_call, n):
  """Images/second over n calls (one repeat)."""
  t = time.perf_counter()
  for _ in range(n):
    out = call()
  sync(out)
  return n * images_per_call / (time.perf_counter() - t)


def summary(rates):
  return {"images_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
          "rates": rates, "repeats": len(rates)}


def timed_repeats(call, sync, images_per_call, repeats, min_seconds):
  """Warm-up, then `repeats` timings of enough calls to last >= min_seconds each."""
  n = calibrate(call, sync, min_seconds)
  return dict(summary([timed_repeat(call, sync, images_per_call, n) for _ in range(repeats)]),
              calls_per_repeat=n)


# --- real batches, written once by the parent for every worker --------------------------
# The experiment variant each network is timed in: the PyTorch mirror of the DCGAN has no
# labels, so gan_mnist (class-conditional by default) is timed as gan_mnist:unconditional.
VARIANT = {"gan_mnist": "unconditional"}
EXPERIMENT = {"ddpm_mnist_sampler": "ddpm_mnist"}


def config_for(network, batch=None):
  """The network's experiment config (in VARIANT's variant), at global `batch` if given."""
  sys.path.insert(0, ROOT)
  import importlib
  name = EXPERIMENT.get(network, network)
  c = importlib.import_module(f"experiments.{name}").get_config(VARIANT.get(network))
  c.experiment = name
  if batch is not None:
    c.train.batch_size = batch
  return c


def write_batches(network, batch, count, path):
  """`count` real preprocessed training batches of `network`'s pipeline -> npz."""
  from genimg_jax import data
  it = data.train_batches(config_for(network, batch), 0, batch)
  batches = [next(it) for _ in range(count)]
  np.savez(path, image=np.stack([b["image"] for b in batches]),
           label=np.stack([b["label"] for b in batches]))


# --- workers ----------------------------------------------------------------------------
# A timed worker's setup returns (call, sync, images per call, facts about it); `measure`
# times it alone (repeats in a row), `serve` times it on the parent's command, so that the
# parent can alternate several workers round by round (see measure_together).
def jax_sampler_setup(a):
  """ddpm_mnist's DDIM sampler, compiled for a batch of noise: one call = `batch` images."""
  import jax
  import jax.numpy as jnp
  from genimg_jax import tasks
  base_rss = peak_rss_mib()
  task = tasks.build_task(config_for(a.network, a.batch))
  params = jax.jit(task.init_state)(jax.random.PRNGKey(0)).params
  fn = task.sample_fn("ddim", SAMPLER_STEPS, 0.0)
  noise = jax.random.normal(jax.random.PRNGKey(1), (a.batch, *task.image_shape))
  args = (params, noise, None, jax.random.PRNGKey(2), jnp.float32(0.0))
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t
  return (lambda: compiled(*args)), jax.block_until_ready, a.batch, {
      "compile_s": compile_s, "flops_per_step": sampler_flops(task, params, noise),
      "sampler_loop_flops_as_xla_counts": _flops(compiled),
      "rss_after_import_mib": base_rss, "devices": jax.device_count()}


def _flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def sampler_flops(task, params, noise):
  """FLOPs of one sampler call: its network evaluations x one denoiser call's FLOPs.

  XLA's cost analysis counts a while loop's body once, whatever its trip count, so the
  compiled sampler (a fori_loop over the steps) reports about one step's FLOPs. The
  sampler's own update arithmetic per step (a few elementwise ops per pixel) is left out.
  """
  import jax
  import jax.numpy as jnp
  from genimg_jax import samplers
  logsnr = jnp.zeros((noise.shape[0],), jnp.float32)
  one = jax.jit(lambda p, z, s: task.denoiser(p, None, jnp.float32(0.0))(z, s))
  return samplers.nfe("ddim", SAMPLER_STEPS) * _flops(one.lower(params, noise, logsnr).compile())


def jax_setup(a):
  import jax
  from genimg_jax import parallel, tasks, train, xla
  if a.network.endswith("_sampler"):
    return jax_sampler_setup(a)
  base_rss = peak_rss_mib()
  c = config_for(a.network, a.batch)
  c.train.steps_per_call = a.steps_per_call
  c.model.conv_impl = a.conv_impl
  if a.dtype != "float32":
    c.model.dtype = a.dtype
  task = tasks.build_task(c)
  mesh = parallel.make_mesh()
  rng = jax.random.PRNGKey(0)
  k = a.steps_per_call
  options = None  # xla.compiler_options(): as launch.py runs it
  if a.xla_defaults:
    options = {}
  elif a.drop_option:
    options = {o: v for o, v in (xla.compiler_options() or {}).items() if o != a.drop_option}
  _, init, step = train.compile_fns(task, mesh, k, donate=bool(a.donate), options=options)
  state = init(rng)
  stored = np.load(a.batches_file)  # write_batches: [count, batch, ...]
  # a call's input: one batch (k = 1), or k consecutive ones stacked, which is a slice of them
  inputs = [{key: stored[key][i] if k == 1 else stored[key][i:i + k] for key in ("image", "label")}
            for i in range(0, len(stored["image"]) - k + 1, k)]
  batches = [parallel.to_global(x, mesh, k > 1) for x in inputs]
  t = time.perf_counter()
  compiled = step.lower(state, batches[0], rng).compile()
  compile_s = time.perf_counter() - t
  # XLA's cost analysis is of the per-device (SPMD-partitioned) program, and counts a loop
  # body once: a call of k > 1 steps (a scan over them) reports one step's FLOPs
  flops_per_step = _flops(compiled) * mesh.size
  holder = {"state": state, "i": 0}

  def call():
    b = batches[holder["i"] % len(batches)]
    holder["i"] += 1
    holder["state"], metrics = compiled(holder["state"], b, rng)
    if a.sync_every_call:
      jax.device_get(metrics)
    return holder["state"]

  return call, jax.block_until_ready, k * a.batch, {
      "compile_s": compile_s, "flops_per_step": flops_per_step, "rss_after_import_mib": base_rss,
      "devices": len(mesh.devices.flat)}


def torch_setup(a):
  import torch
  from benchmarks import torch_nets
  torch.manual_seed(0)
  base_rss = peak_rss_mib()
  step, _ = torch_nets.build(a.network)
  stored = np.load(a.batches_file)
  # NHWC -> NCHW, as PyTorch convolutions expect
  batches = [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))) for x in stored["image"]]
  if a.mode == "compile":
    step = torch.compile(step)
  holder = {"i": 0}

  def call():
    b = batches[holder["i"] % len(batches)]
    holder["i"] += 1
    return step(b)

  t = time.perf_counter()
  call()  # eager: first-call overhead; compile: tracing and code generation
  first_call_s = time.perf_counter() - t
  return call, lambda out: float(out), a.batch, {
      "first_call_s": first_call_s, "rss_after_import_mib": base_rss, "threads": torch.get_num_threads()}


SETUPS = {"jax": jax_setup, "torch": torch_setup}


def measure(setup, a):
  """A worker's repeats in a row, in this process."""
  call, sync, images_per_call, info = setup(a)
  r = timed_repeats(call, sync, images_per_call, a.repeats, a.min_seconds)
  return dict(info, **r, peak_rss_mib=peak_rss_mib())


MARK = "@@benchmark "  # prefixes the protocol's lines on stdout (libraries may print there too)


def serve(setup, a):
  """Set up and calibrate, say so, then one timed repeat per "time" line on stdin."""
  call, sync, images_per_call, info = setup(a)
  n = calibrate(call, sync, a.min_seconds)
  print(MARK + json.dumps(dict(info, calls_per_repeat=n)), flush=True)
  for line in sys.stdin:
    if line.strip() != "time":
      break
    print(MARK + json.dumps({"images_per_s": timed_repeat(call, sync, images_per_call, n)}), flush=True)
  print(MARK + json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


def matmul_worker(a):
  """float32 / bfloat16 GEMM throughput of jax and torch: the machine's matmul peak."""
  n, out = a.matmul_size, {}
  import jax
  import jax.numpy as jnp
  for dtype in ("float32", "bfloat16"):
    x = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    r = timed_repeats(lambda: f(x), jax.block_until_ready, 1, a.repeats, a.min_seconds)
    out[f"jax_{dtype}_flop_per_s"] = r["images_per_s"] * 2 * n**3
  try:
    import torch
  except ImportError:
    return out
  for dtype in ("float32", "bfloat16"):
    x = torch.ones((n, n), dtype=getattr(torch, dtype))
    r = timed_repeats(lambda: x @ x, lambda y: float(y[0, 0]), 1, a.repeats, a.min_seconds)
    out[f"torch_{dtype}_flop_per_s"] = r["images_per_s"] * 2 * n**3
  return out


def pipeline_worker(a):
  """Images/second the tf.data pipeline delivers for the network's preprocessing."""
  from genimg_jax import data
  c = config_for(a.network, a.batch)
  it = data.train_batches(c, 0, a.batch)
  for _ in range(20):
    next(it)
  r = timed_repeats(lambda: next(it), lambda b: None, a.batch, a.repeats, a.min_seconds)
  return r


WORKERS = {"matmul": matmul_worker, "pipeline": pipeline_worker}  # the timed ones: SETUPS


# --- the parent: runs the workers in subprocesses, writes results.json --------------------
def worker_cmd(kind, args, **kw):
  return ([sys.executable, "-m", "benchmarks.run", f"--worker={kind}", f"--repeats={args.repeats}",
           f"--min_seconds={args.min_seconds}"] + [f"--{k}={v}" for k, v in kw.items()])


def worker_env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile times are measured cold
  return env


def run_worker(kind, args, **kw):
  """One worker, its repeats in a row (matmul peak, input pipeline)."""
  proc = subprocess.run(worker_cmd(kind, args, **kw), cwd=ROOT, env=worker_env(),
                        capture_output=True, text=True)
  if proc.returncode:
    print(f"  FAILED {kind} {kw}: {proc.stderr[-1500:]}", flush=True)
    return {"error": proc.stderr[-1500:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


class WorkerFailed(RuntimeError):
  pass


class Served:
  """A timed worker in its own subprocess, serving one timed repeat per request."""

  def __init__(self, kind, args, **kw):
    self.stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(worker_cmd(kind, args, serve=1, **kw), cwd=ROOT, env=worker_env(),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                 text=True)

  def read(self):
    for line in self.proc.stdout:
      if line.startswith(MARK):
        return json.loads(line[len(MARK):])
    self.proc.wait()
    self.stderr.seek(0)
    raise WorkerFailed(self.stderr.read()[-1500:])

  def ask(self, command):
    try:
      self.proc.stdin.write(command + "\n")
      self.proc.stdin.flush()
    except OSError:  # it died: read() says why
      pass
    return self.read()

  def close(self):
    try:
      return self.ask("done")
    finally:
      self.proc.stdin.close()
      self.proc.wait()


def measure_together(specs, args):
  """Times several workers in alternating rounds; {name: result}.

  specs: {name: (kind, worker flags)}. Each worker is started, compiled and warmed up in
  turn (so compile times do not overlap), then every round times one repeat of each, in
  turn (order reversed every other round), while the others wait idle. So the workers of a
  row see the same machine state, to within seconds, and a ratio of two of them is taken
  round by round (paired_ratio): this VM's speed drifts by more than some of the margins
  between minutes (benchmarks/README.md).
  """
  served, out = {}, {}
  for name, (kind, kw) in specs.items():
    print(f"  {name}: start", flush=True)
    w = Served(kind, args, **kw)
    try:
      out[name] = w.read()
      served[name] = w
    except WorkerFailed as e:
      print(f"  FAILED {name}: {e}", flush=True)
      out[name] = {"error": str(e)}
  rates = {name: [] for name in served}
  for r in range(args.repeats):
    for name in (list(served) if r % 2 == 0 else list(served)[::-1]):
      try:
        rates[name].append(served[name].ask("time")["images_per_s"])
      except WorkerFailed as e:
        print(f"  FAILED {name}: {e}", flush=True)
        out[name] = {"error": str(e)}
        served.pop(name)
  for name, w in served.items():
    out[name].update(w.close())
    out[name].update(summary(rates[name]))
  return out


def paired_ratio(a, b):
  """Median over rounds of a's rate / b's rate in the same round (measure_together)."""
  return statistics.median(x / y for x, y in zip(a["rates"], b["rates"]))


def launch_row(args, compilation_cache):
  """launch.py --experiment=vae_mnist end to end, shortened to --launch_steps."""
  workdir = tempfile.mkdtemp(prefix="bench_launch_")
  cmd = [sys.executable, "launch.py", "--experiment=vae_mnist", f"--workdir={workdir}",
         f"--compilation_cache={compilation_cache}",
         f"--experiment.train.steps={args.launch_steps}", "--experiment.train.eval_every=0",
         f"--experiment.train.checkpoint_every={args.launch_steps}",
         f"--experiment.train.log_every={args.launch_steps // 10}", "--experiment.eval.iwae_k=1",
         "--experiment.eval.iwae_chunk=1"]
  t = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  wall = time.perf_counter() - t
  if proc.returncode:
    return {"error": proc.stderr[-1500:]}
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  return {"steps": args.launch_steps, "wall_s": wall, "train_seconds": res["train_seconds"],
          "startup_seconds": res["startup_seconds"], "eval_seconds": res["eval_seconds"]}


def launch_vs_step(args, tmp):
  """The launch row, with the step timed in one waiting worker just before and just after it."""
  c = config_for("vae_mnist")  # the step as the experiment runs it: its batch and steps_per_call
  spc, batch = c.train.steps_per_call, c.train.batch_size
  path = os.path.join(tmp, f"vae_mnist_{batch}.npz")
  write_batches("vae_mnist", batch, max(4, 2 * spc), path)
  w = Served("jax", args, network="vae_mnist", batch=batch, batches_file=path, steps_per_call=spc)
  try:
    w.read()
    before = [w.ask("time")["images_per_s"] for _ in range(args.repeats)]
    cache = os.path.join(tmp, "xla_cache")  # empty: the first launch compiles everything
    row = launch_row(args, cache)
    row["warm_cache"] = launch_row(args, cache)
    after = [w.ask("time")["images_per_s"] for _ in range(args.repeats)]
    w.close()
  except WorkerFailed as e:
    return {"error": str(e)}
  rate = statistics.median(before + after)
  row.update(steps_per_call=spc, step_images_per_s=rate, step_images_per_s_before=before,
             step_images_per_s_after=after)
  ideal = args.launch_steps * batch / rate
  for r in (row, row["warm_cache"]):
    if "wall_s" in r:
      # The wall's overhead in two parts that add up to it, each timed inside the launch:
      # the steps as the loop ran them (from the end of the start-up to the final checkpoint
      # saved), against steps x step time; and everything else (imports, start-up, final
      # evaluation, exit), a fixed cost, as a share of steps x step time.
      loop = r["train_seconds"] - r["startup_seconds"]
      fixed = r["wall_s"] - loop
      r.update(steps_x_step_time_s=ideal, train_loop_overhead=r["train_seconds"] / ideal - 1.0,
               wall_overhead=r["wall_s"] / ideal - 1.0, steady_loop_s=loop,
               steady_loop_overhead=loop / ideal - 1.0, fixed_s=fixed, fixed_share=fixed / ideal)
  return row


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--networks", default=",".join(NETWORKS))
  p.add_argument("--batches", default="64,256,1024")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--min_seconds", type=float, default=1.0, help="per timed repeat")
  p.add_argument("--torch_eager", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--variant_batches", default="64,256")
  p.add_argument("--steps_per_call_variant", type=int, default=10)
  p.add_argument("--scan_networks", default="vae_mnist",
                 help="networks to time with steps_per_call: on XLA:CPU a scan over convolution "
                      "steps measured ~12x slower (vae_mnist_conv, batch 64), so off for them")
  p.add_argument("--launch_steps", type=int, default=20_000, help="0 = skip the launch row")
  p.add_argument("--matmul_size", type=int, default=2048)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.json"))
  p.add_argument("--update", action="store_true",
                 help="replace only the measured rows of an existing --out, keep the others "
                      "(each row records the commit and date it was measured at)")
  # worker-only flags
  p.add_argument("--worker", default="")
  p.add_argument("--network", default="")
  p.add_argument("--batch", type=int, default=0)
  p.add_argument("--batches_file", default="")
  p.add_argument("--mode", default="eager")
  p.add_argument("--steps_per_call", type=int, default=1)
  p.add_argument("--donate", type=int, default=1)
  p.add_argument("--sync_every_call", type=int, default=0)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--serve", type=int, default=0, help="time on request (measure_together)")
  p.add_argument("--xla_defaults", type=int, default=0, help="XLA's own compiler options, not "
                 "xla.compiler_options() (on CPU: YNNPACK convolutions)")
  p.add_argument("--drop_option", default="", help="xla.compiler_options() less this one")
  p.add_argument("--conv_impl", default="auto", help="model.conv_impl: auto | flax | cpu")
  a = p.parse_args(argv)
  if a.worker:
    if a.serve:
      serve(SETUPS[a.worker], a)
    elif a.worker in SETUPS:  # by hand: its repeats in a row
      print(json.dumps(measure(SETUPS[a.worker], a)))
    else:
      print(json.dumps(WORKERS[a.worker](a)))
    return

  import jax
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  have_torch = torch_version is not None
  networks = [n for n in a.networks.split(",") if n]  # --networks= : only matmul and launch
  batches = [int(b) for b in a.batches.split(",")]
  commit = _commit()  # the code measured: HEAD when the run starts
  results = {"date": time.strftime("%Y-%m-%d"), "machine": {
      "platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
      "jax_devices": [str(d) for d in jax.devices()]},
      "versions": {"jax": jax.__version__, "torch": torch_version, "python": platform.python_version()},
      "settings": {k: getattr(a, k) for k in ("repeats", "min_seconds", "steps_per_call_variant",
                                              "launch_steps", "matmul_size")},
      "rows": [], "variants": [], "pipeline": [], "launch": None}
  print("matmul peak...", flush=True)
  results["matmul"] = run_worker("matmul", a, matmul_size=a.matmul_size)
  peak = max(v for k, v in results["matmul"].items() if "float32" in k)
  results["matmul"]["float32_peak_flop_per_s"] = peak
  tmp = tempfile.mkdtemp(prefix="bench_batches_")
  k = a.steps_per_call_variant
  variant_batches = {int(v) for v in a.variant_batches.split(",")} if a.variants else set()
  for net in networks:
    net_batches = list(BATCHES.get(net, batches))
    net_variant_batches = variant_batches if net in VARIANT_NETWORKS else set()
    for b in sorted(set(net_batches) | net_variant_batches):
      path = os.path.join(tmp, f"{net}_{b}.npz")
      write_batches(net, b, max(4, 2 * k), path)
      common = dict(network=net, batch=b, batches_file=path)
      # every measurement of (net, b) in one group of alternating rounds (measure_together)
      specs = {"jax": ("jax", common)}
      if b in net_batches and have_torch:
        for mode, on in (("eager", a.torch_eager), ("compile", a.torch_compile)):
          if on:
            specs[f"torch_{mode}"] = ("torch", dict(common, mode=mode))
      variant_names = []
      if b in net_variant_batches:
        var_kw = {"no_donation": {"donate": 0}, "sync_every_step": {"sync_every_call": 1},
                  "xla_default_options": {"xla_defaults": 1},
                  "xla_default_copy_insertion": {"drop_option": REGION_ANALYSIS}}
        if net in a.scan_networks.split(","):
          var_kw[f"steps_per_call={k}"] = {"steps_per_call": k}
        if net.startswith("vae"):
          var_kw["bfloat16"] = {"dtype": "bfloat16"}
        if net in CONV_NETWORKS:
          var_kw["flax_convolutions"] = {"conv_impl": "flax"}
        specs.update({name: ("jax", dict(common, **kw)) for name, kw in var_kw.items()})
        variant_names = list(var_kw)
      print(f"{net} batch {b}: {', '.join(specs)}", flush=True)
      m = measure_together(specs, a)
      if b in net_batches:
        row = {"network": net, "batch": b, "jax": m["jax"]}
        if "flops_per_step" in row["jax"]:
          row["jax"]["flop_per_s"] = row["jax"]["flops_per_step"] * row["jax"]["images_per_s"] / b
          row["jax"]["fraction_of_peak"] = row["jax"]["flop_per_s"] / peak
        for mode in ("eager", "compile"):
          if f"torch_{mode}" in m:
            row[f"torch_{mode}"] = m[f"torch_{mode}"]
            if "rates" in m[f"torch_{mode}"] and "rates" in m["jax"]:
              row[f"ratio_vs_torch_{mode}"] = paired_ratio(m["jax"], m[f"torch_{mode}"])
        results["rows"].append(row)
        print("  " + json.dumps({key: (v.get("images_per_s") if isinstance(v, dict) else v)
                                 for key, v in row.items()}), flush=True)
      if variant_names:
        var = {"network": net, "batch": b}
        for name in ["jax"] + variant_names:
          var["default" if name == "jax" else name] = m[name].get("images_per_s", m[name].get("error"))
          if name != "jax" and "rates" in m[name] and "rates" in m["jax"]:
            var.setdefault("vs_default", {})[name] = paired_ratio(m[name], m["jax"])
        results["variants"].append(var)
        print("  " + json.dumps(var), flush=True)
    for b in (batches if net in VARIANT_NETWORKS else []):
      print(f"{net} batch {b}: input pipeline", flush=True)
      r = run_worker("pipeline", a, network=net, batch=b)
      results["pipeline"].append({"network": net, "batch": b, **r})
  if a.launch_steps:
    print("launch.py vae_mnist end to end...", flush=True)
    results["launch"] = launch_vs_step(a, tmp)
  stamp = {"commit": commit, "date": results["date"]}
  for part in ("rows", "variants", "pipeline"):
    for r in results[part]:
      r.update(stamp)
  if results["launch"]:
    results["launch"].update(stamp)
  if a.update and os.path.exists(a.out):
    results = _merge(json.load(open(a.out)), results)
  os.makedirs(os.path.dirname(a.out), exist_ok=True)
  with open(a.out, "w") as f:
    json.dump(results, f, indent=1)
  print(table(results))
  print(f"wrote {a.out}")


def _commit():
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def _merge(old, new):
  """`old` with the (network, batch) entries and the launch row measured in `new` replaced."""
  merged = dict(new)
  for part in ("rows", "variants", "pipeline"):
    measured = {(r["network"], r["batch"]) for r in new[part]}
    kept = [r for r in old.get(part, []) if (r["network"], r["batch"]) not in measured]
    merged[part] = kept + new[part]
  merged["launch"] = new["launch"] or old.get("launch")
  return merged


def table(results):
  """The README's markdown table from a results dict."""
  peak = results["matmul"]["float32_peak_flop_per_s"]
  lines = [f"float32 matmul peak (max of jax and torch, {results['settings']['matmul_size']}^2): "
           f"{peak / 1e9:.0f} GFLOP/s; " + ", ".join(
               f"{k.replace('_flop_per_s', '')} {v / 1e9:.0f}" for k, v in results["matmul"].items()
               if k.endswith("_flop_per_s") and k != "float32_peak_flop_per_s") + " GFLOP/s", "",
           "| network | batch | genimg_jax img/s (median [min, max]) | compile s | peak RSS MiB "
           "| MFLOP/step | % of peak | torch eager img/s | torch.compile img/s | jax/eager | jax/compile "
           "| commit |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results["rows"]:
    j = r["jax"]
    if "images_per_s" not in j:
      lines.append(f"| {r['network']} | {r['batch']} | failed | | | | | | | | | {r.get('commit')} |")
      continue
    te, tc = r.get("torch_eager", {}), r.get("torch_compile", {})
    f = lambda d: f"{d['images_per_s']:,.0f}" if "images_per_s" in d else "-"
    g = lambda key: f"{r[key]:.2f}" if key in r else "-"
    lines.append(
        f"| {r['network']} | {r['batch']} | {j['images_per_s']:,.0f} [{j['min']:,.0f}, {j['max']:,.0f}] "
        f"| {j['compile_s']:.2f} | {j['peak_rss_mib']:.0f} | {j['flops_per_step'] / 1e6:,.1f} "
        f"| {100 * j['fraction_of_peak']:.1f} | {f(te)} | {f(tc)} | {g('ratio_vs_torch_eager')} "
        f"| {g('ratio_vs_torch_compile')} | {r.get('commit', '-')} |")
  if results["variants"]:
    names = []
    for v in results["variants"]:
      names += [k for k in v if k not in ("network", "batch", "vs_default", "commit", "date")
                and k not in names]
    lines += ["", "| network | batch | " + " | ".join(names) + " | commit |",
              "|---|---|" + "---|" * (len(names) + 1)]
    for v in results["variants"]:
      def cell(name):
        x = v.get(name)
        if not isinstance(x, (int, float)):
          return "-" if x is None else "failed"
        ratio = v.get("vs_default", {}).get(name)
        return f"{x:,.0f}" + (f" ({ratio:.2f}x)" if ratio is not None else "")
      lines.append(f"| {v['network']} | {v['batch']} | " + " | ".join(cell(n) for n in names)
                   + f" | {v.get('commit', '-')} |")
  if results["pipeline"]:
    lines += ["", "| input pipeline | batch | img/s delivered |", "|---|---|---|"]
    lines += [f"| {p['network']} | {p['batch']} | {p['images_per_s']:,.0f} |"
              for p in results["pipeline"] if "images_per_s" in p]
  if results.get("launch") and "wall_s" in results["launch"]:
    l = results["launch"]
    med = lambda xs: f"{statistics.median(xs):,.0f}"
    lines += ["", f"launch.py vae_mnist, {l['steps']} steps ({l.get('steps_per_call', 1)} per compiled call): "
              f"wall {l['wall_s']:.1f} s, train loop "
              f"{l['train_seconds']:.1f} s, final eval {l['eval_seconds']:.1f} s, steps x step time "
              f"{l['steps_x_step_time_s']:.1f} s (step {med(l['step_images_per_s_before'])} img/s just before, "
              f"{med(l['step_images_per_s_after'])} just after): loop overhead "
              f"{100 * l['train_loop_overhead']:+.0f}%, wall overhead {100 * l['wall_overhead']:+.0f}%"
              + _wall_parts(l)]
    w = l.get("warm_cache", {})
    if "wall_s" in w:
      lines += [f"the same again with the compilation cache the first launch left: wall "
                f"{w['wall_s']:.1f} s, train loop {w['train_seconds']:.1f} s, final eval "
                f"{w['eval_seconds']:.1f} s: loop overhead {100 * w['train_loop_overhead']:+.0f}%, "
                f"wall overhead {100 * w['wall_overhead']:+.0f}%" + _wall_parts(w)]
  return "\n".join(lines)


def _wall_parts(r):
  if "fixed_s" not in r:  # (results written before startup_seconds was recorded)
    return ""
  return (f" = fixed costs {r['fixed_s']:.1f} s ({100 * r['fixed_share']:+.0f}%: imports, start-up "
          f"{r['startup_seconds']:.1f} s, final eval, exit) + steady loop {r['steady_loop_s']:.1f} s "
          f"({100 * r['steady_loop_overhead']:+.0f}%)")


if __name__ == "__main__":
  main()
