"""GroupNorm's CPU form against nn.GroupNorm inside ddpm_mnist's U-Net, on XLA:CPU.

  python -m benchmarks.group_norm [--batch=64] [--rounds=7]

Times the U-Net of ddpm_mnist (its CPU convolutions, models/cpu_layers.py) built with
nn.GroupNorm and with cpu_layers.GroupNorm: the forward pass and the gradient of a mean
squared error, each jitted with the project's compiler options, in alternating rounds
(the order reversed every other round); prints the median ms per call and the per-round
ratios' median. The two forms compute the same function (tests/test_cpu_layers.py).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import flax.linen as nn

from experiments import ddpm_mnist
from genimg_jax import xla
from genimg_jax.models import cpu_layers, unet


def _time(fn, args, seconds):
  """ms per call of fn(*args), over repeated calls for at least `seconds`."""
  n, start = 0, time.perf_counter()
  while True:
    out = fn(*args)
    n += 1
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return 1e3 * elapsed / n


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--seconds", type=float, default=1.0, help="per timing")
  a = p.parse_args()
  m = ddpm_mnist.get_config().model
  x = jax.random.normal(jax.random.PRNGKey(0), (a.batch, 28, 28, 1))
  t = jnp.linspace(0.0, 999.0, a.batch)
  fns = {}
  for name, norm in (("nn.GroupNorm", nn.GroupNorm), ("cpu_layers.GroupNorm", cpu_layers.GroupNorm)):
    net = unet.UNet(1, m.channels, tuple(m.channel_mults), m.num_res_blocks, (), 0.0, 0,
                    m.norm_groups, cpu_layers.Conv, norm)
    params = net.init(jax.random.PRNGKey(1), x, t)
    fwd = jax.jit(lambda p, x, net=net: net.apply(p, x, t), compiler_options=xla.compiler_options())
    grad = jax.jit(jax.grad(lambda p, x, net=net: jnp.mean((net.apply(p, x, t) - x) ** 2)),
                   compiler_options=xla.compiler_options())
    for kind, fn in (("forward", fwd), ("gradient", grad)):
      jax.block_until_ready(fn(params, x))  # compile and warm up
      fns[(kind, name)] = (fn, (params, x))
  times = {k: [] for k in fns}
  for r in range(a.rounds):
    for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      times[k].append(_time(*fns[k], a.seconds))
  print(f"ddpm_mnist's U-Net, batch {a.batch}, {jax.devices()[0].platform}, {a.rounds} rounds")
  for kind in ("forward", "gradient"):
    flax_ms, cpu_ms = times[(kind, "nn.GroupNorm")], times[(kind, "cpu_layers.GroupNorm")]
    ratio = statistics.median(f / c for f, c in zip(flax_ms, cpu_ms))
    print(f"{kind:9s} nn.GroupNorm {statistics.median(flax_ms):7.1f} ms   "
          f"cpu_layers.GroupNorm {statistics.median(cpu_ms):7.1f} ms   "
          f"speed-up (median of per-round ratios) {ratio:.2f}x")


if __name__ == "__main__":
  main()
