"""The StyleGAN discriminator's stride-1 convolutions with written-out gradients
(cpu_layers.same_conv) against XLA's autodiff of the same convolutions, in the whole
stylegan_mnist train step on XLA:CPU.

  python -m benchmarks.written_gradients [--channels=16] [--batch=64] [--penalty_every=1]

Builds the gan task of stylegan_mnist (G and D at --channels, R1 every --penalty_every D
steps, so 1 puts its second derivative in every step) twice: as it is (the D's
convolutions from layers.conv_modules(written_gradients=True)) and with the D's
convolutions as the default CPU form (cpu_layers.Conv, autodiff gradients for stride 1).
Times each compiled step (the project's compiler options) in alternating rounds, the
order reversed every other round, and prints the median seconds per step and the
per-round ratios' median. Both compute the same function (tests/test_cpu_layers.py).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from experiments import stylegan_mnist
from genimg_jax import tasks, xla
from genimg_jax.models import cpu_layers


def _step(task, batch_size):
  state = xla.jit(task.init_state)(jax.random.PRNGKey(0))
  n = task.examples_per_step
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1), minval=-1.0),
           "label": jnp.zeros((n,), jnp.int32)}
  step = xla.jit(task.train_step)
  for i in range(2):  # compile for the fresh state, then for the step's own outputs
    state, _ = step(state, batch, jax.random.PRNGKey(2 + i))
  jax.block_until_ready(state)
  holder = {"state": state}

  def run(steps):
    start = time.perf_counter()
    for i in range(steps):
      holder["state"], metrics = step(holder["state"], batch, jax.random.PRNGKey(4 + i))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps
  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--penalty_every", type=int, default=1)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="steps timed per round")
  args = parser.parse_args()
  c = stylegan_mnist.get_config()
  c.model.channels, c.train.batch_size, c.gan.penalty_every = (args.channels, args.batch,
                                                               args.penalty_every)
  written = tasks.build_task(c)
  autodiff = tasks.build_task(c)
  autodiff.discriminator = autodiff.discriminator.clone(conv=cpu_layers.Conv)
  runs = {"written gradients": _step(written, args.batch), "autodiff": _step(autodiff, args.batch)}
  times = {k: [] for k in runs}
  for r in range(args.rounds):
    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
      times[name].append(runs[name](args.steps))
  for name, ts in times.items():
    print(f"{name:18s} {statistics.median(ts):7.3f} s per step  (rounds: "
          + ", ".join(f"{t:.3f}" for t in ts) + ")")
  ratio = statistics.median(a / w for a, w in zip(times["autodiff"], times["written gradients"]))
  print(f"written gradients: {ratio:.2f}x faster (median of per-round ratios); stylegan_mnist "
        f"channels {args.channels}, batch {args.batch}, R1 every {args.penalty_every} D steps")


if __name__ == "__main__":
  main()
