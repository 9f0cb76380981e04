"""XLA:CPU internals the project's CPU options rely on (marker xla_cpu_internals).

These pin what jaxlib's CPU compiler does with genimg_jax/xla.py's options (which ops go
to YNNPACK, which copies copy insertion leaves): a jaxlib upgrade may fail them alone,
which says to re-measure the options (benchmarks/README.md, "Design notes"), not that the
project computes something else. `pytest -m "not xla_cpu_internals"` leaves them out.
"""
import re

import jax
import numpy as np
import pytest

from genimg_jax import data, parallel, tasks, train, xla

pytestmark = pytest.mark.xla_cpu_internals


def test_cpu_convolutions_are_compiled_by_xla_not_ynnpack():
  """xla.compiler_options() keeps convolutions out of YNNPACK on CPU (measured faster
  here), keeps its matmuls and reductions, and does not change what is computed."""
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 14, 14, 16))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 16, 32))

  def f(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(8, -1) @ y.reshape(8, -1).T, y.sum(axis=(0, 1, 2))

  def ynnpack_ops(compiler_options):
    return _ynnpack_ops(jax.jit(f, compiler_options=compiler_options).lower(x, w).compile())

  opts = xla.compiler_options()
  assert opts == xla.CPU_OPTIONS
  assert ynnpack_ops({}) == {"conv_general_dilated", "dot_general", "reduce_sum"}  # XLA's defaults
  assert ynnpack_ops(opts) == {"dot_general", "reduce_sum"}
  for ours, xlas in zip(jax.jit(f, compiler_options=opts)(x, w), jax.jit(f, compiler_options={})(x, w)):
    np.testing.assert_allclose(ours, xlas, rtol=1e-4, atol=1e-2)


def test_compiler_options_leave_out_only_an_option_xla_lacks(monkeypatch):
  known = dict(xla.CPU_OPTIONS)
  monkeypatch.setattr(xla, "CPU_OPTIONS", {**known, "xla_cpu_no_such_option": True})
  xla.compiler_options.cache_clear()
  try:
    assert xla.compiler_options() == known
  finally:
    xla.compiler_options.cache_clear()


def test_train_step_updates_the_donated_state_in_place_with_the_same_bits():
  """xla.compiler_options() has XLA:CPU's copy insertion use region analysis: the
  compiled step then copies none of the donated parameters and Adam moments (XLA's default
  copies each of them every step), and the state it computes is the same, bit for bit."""
  from experiments import vae_mnist
  c = vae_mnist.get_config("runlocal")
  c.experiment = "vae_mnist"
  task = tasks.build_task(c)
  mesh = parallel.make_mesh(jax.devices()[:1])
  opts = xla.compiler_options()
  without = {k: v for k, v in opts.items() if k != "xla_cpu_copy_insertion_use_region_analysis"}
  assert without != opts
  batch = next(data.train_batches(c, 0))
  copied, leaves = [], []  # per options: copies of weight-matrix-shaped arrays, final state
  for o in (opts, without):
    _, init, step = train.compile_fns(task, mesh, options=o)
    state, rng = init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)
    g = parallel.to_global(batch, mesh)
    text = step.lower(state, g, rng).compile().as_text()
    kernels = {",".join(map(str, l.shape)) for l in jax.tree.leaves(state.params) if l.ndim == 2}
    copied.append([s for s in re.findall(r"= f32\[([\d,]+)\]\S* copy\(", text) if s in kernels])
    for _ in range(3):
      state, _ = step(state, g, rng)
    leaves.append(jax.tree.leaves(jax.device_get(state)))
  assert copied[0] == [] and len(copied[1]) >= 3 * 2  # the kernels, their mu and nu
  for a, b in zip(*leaves):
    np.testing.assert_array_equal(a, b)


def _ynnpack_ops(compiled):
  """The jax ops (by op_name) that a compiled program hands to YNNPACK."""
  calls = [l for l in compiled.as_text().splitlines() if "ynn_fusion" in l and "kind=kCustom" in l]
  return {op for l in calls for op in ("conv_general_dilated", "dot_general", "reduce_sum")
          if f"/{op}" in l}


def test_compiled_train_step_keeps_convolutions_out_of_ynnpack():
  from experiments import vae_mnist_conv
  c = vae_mnist_conv.get_config("runlocal")
  c.experiment = "vae_mnist_conv"
  mesh = parallel.make_mesh(jax.devices()[:1])
  abstract, _, step = train.compile_fns(tasks.build_task(c), mesh)
  shard = parallel.batch_sharding(mesh)
  B = c.train.batch_size
  batch = {"image": jax.ShapeDtypeStruct((B, 28, 28, 1), np.float32, sharding=shard),
           "label": jax.ShapeDtypeStruct((B,), np.int32, sharding=shard)}
  ops = _ynnpack_ops(step.lower(abstract, batch, jax.random.PRNGKey(0)).compile())
  assert "conv_general_dilated" not in ops
