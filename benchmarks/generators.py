"""Generation speed: images/second at batch 256 and milliseconds per image at batch 1 of
each generator, as the metrics and an export call it.

  python -m benchmarks.generators                 # every row; writes benchmarks/generators.json
  python -m benchmarks.generators --rows=gan_mnist:unconditional,meanflow_mnist@1 --repeats=3

A row is an experiment's generator compiled for one batch of noise: the GAN's EMA
generator (one network evaluation), a diffusion model's eval sampler at the experiment's
step count, the meanflow task's sampler at `@K` steps, or a progressively distilled
student (`distill_mnist:N`: its teacher's network under DDIM at N steps, built here from
ddpm_mnist's config since the distill task needs a trained teacher). The weights are the
experiment's initialization: the time of a compiled call does not depend on the weights'
values, so no trained workdir is needed. Each (row, batch) is compiled, warmed up, then
timed as --repeats repeats of enough calls to last >= --min_seconds each (median and
[min, max]); the rows run one after another in this process, so compare them within one
run (this VM's speed drifts between minutes). Every network runs in its task's own form:
on CPU the U-Nets use the CPU forms of models/cpu_layers.py (the meanflow task's without
the strided convolutions' custom VJP: tasks/meanflow.py says why).
"""
import argparse
import importlib
import json
import os
import sys
import time

from benchmarks.run import ROOT, _commit, timed_repeats

# (row, experiment, variant, eval.sampler override or None, steps override or None)
ROWS = {
    "gan_mnist:unconditional": ("gan_mnist", "unconditional", None, None),
    "ddpm_mnist": ("ddpm_mnist", None, None, None),         # DDIM, 50 steps
    "flow_mnist": ("flow_mnist", None, None, None),         # Euler, 50 steps
    "meanflow_mnist@1": ("meanflow_mnist", None, "meanflow", 1),
    "meanflow_mnist@2": ("meanflow_mnist", None, "meanflow", 2),
    "meanflow_mnist@4": ("meanflow_mnist", None, "meanflow", 4),
    # a progressively distilled student: ddpm_mnist's U-Net under DDIM at its step count
    "distill_mnist:1": ("ddpm_mnist", None, "ddim", 1),
    "distill_mnist:2": ("ddpm_mnist", None, "ddim", 2),
    "distill_mnist:4": ("ddpm_mnist", None, "ddim", 4),
}
BATCHES = (256, 1)


def config_for(row):
  experiment, variant, sampler, steps = ROWS[row]
  sys.path.insert(0, ROOT)
  c = importlib.import_module(f"experiments.{experiment}").get_config(variant)
  c.experiment = experiment
  if sampler is not None:
    c.eval.sampler, c.eval.sample_steps = sampler, steps
  return c


def generator(row, batch):
  """(call, facts): one compiled call that makes `batch` images of the row's generator."""
  import jax
  import jax.numpy as jnp
  from genimg_jax import samplers, tasks
  c = config_for(row)
  task = tasks.build_task(c)
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
  rng = jax.random.PRNGKey(1)
  if c.task == "gan":
    z = jax.random.normal(rng, (batch, c.model.latent_dim))
    y = task.sample_labels(jax.random.PRNGKey(2), batch)
    args = (task.sampling_params(state), state.batch_stats["g"], z, y)
    fn, nfe, about = jax.jit(task.generate), 1, "EMA generator"
  else:
    e = c.eval
    noise = jax.random.normal(rng, (batch, *task.image_shape))
    labels = (jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, c.model.num_classes)
              if task.conditional else None)
    args = (task.sampling_params(state), noise, labels, jax.random.PRNGKey(3),
            jnp.float32(e.guidance))
    fn = task.sample_fn(e.sampler, e.sample_steps, float(e.eta))
    nfe = e.sample_steps if e.sampler == "meanflow" else samplers.nfe(e.sampler, e.sample_steps)
    about = f"{e.sampler}, {e.sample_steps} steps"
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return (lambda: compiled(*args)), {"compile_s": time.perf_counter() - t, "nfe": nfe,
                                     "sampler": about}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", default=",".join(ROWS))
  p.add_argument("--batches", default=",".join(map(str, BATCHES)))
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--min_seconds", type=float, default=1.0)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "generators.json"))
  a = p.parse_args(argv)
  import jax
  rows = [r for r in a.rows.split(",") if r]
  unknown = set(rows) - set(ROWS)
  if unknown:
    raise SystemExit(f"Unknown row(s) {sorted(unknown)}; known: {', '.join(ROWS)}")
  results = []
  for row in rows:
    for batch in map(int, a.batches.split(",")):
      call, facts = generator(row, batch)
      timing = timed_repeats(call, jax.block_until_ready, batch, a.repeats, a.min_seconds)
      results.append({"row": row, "batch": batch, **facts, **timing,
                      "ms_per_image": 1000.0 / timing["images_per_s"]})
      print(f"{row} batch {batch}: {timing['images_per_s']:,.1f} img/s "
            f"({1000.0 / timing['images_per_s']:.2f} ms/image)", flush=True)
  device = jax.devices()[0]
  out = {"commit": _commit(), "device": f"{device.platform} {device.device_kind}",
         "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
         "jax": jax.__version__, "results": results}
  with open(a.out, "w") as f:
    json.dump(out, f, indent=1)
  print(table(out))


def table(out):
  """The README's table: one line per row, img/s at the largest batch, ms at batch 1."""
  by = {}
  for r in out["results"]:
    by.setdefault(r["row"], {})[r["batch"]] = r
  lines = ["| generator | sampler | NFE | img/s at batch 256 (median [min, max]) | ms/image at batch 1 |",
           "|---|---|---|---|---|"]
  for row, b in by.items():
    any_r = next(iter(b.values()))
    big = b.get(256)
    one = b.get(1)
    lines.append(f"| {row} | {any_r['sampler']} | {any_r['nfe']} | "
                 + (f"{big['images_per_s']:,.1f} [{big['min']:,.1f}, {big['max']:,.1f}]"
                    if big else "-") + " | "
                 + (f"{one['ms_per_image']:.2f}" if one else "-") + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
