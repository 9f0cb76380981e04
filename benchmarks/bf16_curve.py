"""The loss curve of vae_mnist with model.dtype=bfloat16 against float32, same seed and batches.

  TFDS_DATA_DIR=... python -m benchmarks.bf16_curve [--steps=10000] [--log_every=1000]

Runs `launch.py --experiment=vae_mnist` twice, shortened to --steps (its cosine schedule
then ends there), float32 and bfloat16 compute (parameters and optimizer stay float32),
and prints the training ELBO logged at every log_every steps (the batch's value at that
step, from TensorBoard's event files), the final test ELBO and IWAE bound (k=--iwae_k)
and the train-loop time of each; writes benchmarks/results_bf16_curve.json.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scalars(workdir, tag):
  """{step: value} of one scalar from the run's TensorBoard event files."""
  import tensorflow as tf
  out = {}
  for path in glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag == tag:
          out[event.step] = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
  return dict(sorted(out.items()))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--steps", type=int, default=10_000)
  p.add_argument("--log_every", type=int, default=1000)
  p.add_argument("--iwae_k", type=int, default=100)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results_bf16_curve.json"))
  a = p.parse_args(argv)
  runs = {}
  for dtype in ("float32", "bfloat16"):
    workdir = tempfile.mkdtemp(prefix=f"bf16_curve_{dtype}_")
    cmd = [sys.executable, "launch.py", "--experiment=vae_mnist", f"--workdir={workdir}",
           f"--experiment.model.dtype={dtype}", f"--experiment.train.steps={a.steps}",
           f"--experiment.train.log_every={a.log_every}", "--experiment.train.eval_every=0",
           f"--experiment.train.checkpoint_every={a.steps}", f"--experiment.eval.iwae_k={a.iwae_k}",
           f"--experiment.eval.iwae_chunk={min(a.iwae_k, 100)}"]
    print(" ".join(cmd[1:]), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    with open(os.path.join(workdir, "results.json")) as f:
      res = json.load(f)
    runs[dtype] = {"train_elbo": scalars(workdir, "train/elbo"), "test": res["metrics"],
                   "train_seconds": res["train_seconds"], "wall_s": time.perf_counter() - t}
  f32, bf16 = runs["float32"], runs["bfloat16"]
  print("| step | train ELBO float32 | train ELBO bfloat16 |\n|---|---|---|")
  for step, v in f32["train_elbo"].items():
    print(f"| {step} | {v:.2f} | {bf16['train_elbo'].get(step, float('nan')):.2f} |")
  for dtype, r in runs.items():
    print(f"{dtype}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["test"].items()
                                   if isinstance(v, (int, float))) +
          f"; train loop {r['train_seconds']:.1f} s")
  with open(a.out, "w") as f:
    json.dump({"date": time.strftime("%Y-%m-%d"), "settings": vars(a), "runs": runs}, f, indent=1)
  print(f"wrote {a.out}")


if __name__ == "__main__":
  main()
