"""The training loop in-process on 4 fake CPU devices: sharding, tracing, non-finite losses."""
import re

import jax
import numpy as np
import pytest

from genimg_jax import data, tasks, train


def test_same_loss_on_1_and_4_devices(runlocal_config, tmp_path):
  assert jax.device_count() == 4
  c = runlocal_config
  c.train.steps = 6
  c.train.log_every = 6
  c.train.checkpoint_every = 6
  r1 = train.run(c, str(tmp_path / "d1"), devices=jax.devices()[:1])
  r4 = train.run(c, str(tmp_path / "d4"), devices=jax.devices())
  assert r1["devices"]["count"] == 1 and r4["devices"]["count"] == 4
  for k in ("loss", "rec", "kl", "grad_norm"):
    np.testing.assert_allclose(r4["train_metrics"][k], r1["train_metrics"][k], rtol=2e-5)
  for k in ("test/elbo", "test/nll"):
    np.testing.assert_allclose(r4["metrics"][k], r1["metrics"][k], rtol=2e-5)


def test_train_step_is_traced_once(runlocal_config, tmp_path, monkeypatch):
  traces = []
  original = tasks.vae.VAETask.train_step

  def counting_step(self, state, batch, rng):
    traces.append(1)  # runs at trace time only
    return original(self, state, batch, rng)

  monkeypatch.setattr(tasks.vae.VAETask, "train_step", counting_step)
  c = runlocal_config
  c.train.steps = 30
  train.run(c, str(tmp_path))
  assert len(traces) == 1


def test_bad_batch_size_rejected_before_compute(runlocal_config, tmp_path):
  c = runlocal_config
  c.train.batch_size = 98  # not divisible by 4 devices
  with pytest.raises(ValueError, match="train.batch_size=98 must be a positive multiple of the device count \\(4\\)"):
    train.run(c, str(tmp_path))


def test_steps_per_call_scan_equals_single_steps(runlocal_config, tmp_path):
  c = runlocal_config
  c.train.steps = c.train.log_every = c.train.checkpoint_every = 6
  r1 = train.run(c, str(tmp_path / "k1"))
  c.train.steps_per_call = 3
  r3 = train.run(c, str(tmp_path / "k3"))
  assert r3["steps"] == 6
  for k in ("loss", "rec", "kl", "grad_norm", "param_norm"):
    np.testing.assert_allclose(r3["train_metrics"][k], r1["train_metrics"][k], rtol=1e-5)
  np.testing.assert_allclose(r3["metrics"]["test/nll"], r1["metrics"]["test/nll"], rtol=1e-5)


def test_steps_per_call_must_divide_the_intervals(runlocal_config, tmp_path):
  c = runlocal_config
  c.train.steps_per_call = 3  # runlocal logs every 5 steps
  with pytest.raises(ValueError, match="train.steps=20 must be a multiple of train.steps_per_call=3"):
    train.run(c, str(tmp_path))


def test_resume_with_a_steps_per_call_that_does_not_divide_the_step_is_refused(runlocal_config, tmp_path):
  c = runlocal_config
  c.train.steps, c.train.log_every, c.train.checkpoint_every = 5, 5, 5
  train.run(c, str(tmp_path))  # final checkpoint at step 5
  c.train.steps, c.train.log_every, c.train.checkpoint_every, c.train.steps_per_call = 10, 10, 10, 2
  with pytest.raises(ValueError, match="checkpoint at step 5 is not a multiple of train.steps_per_call=2"):
    train.run(c, str(tmp_path))


def test_cpu_convolutions_are_compiled_by_xla_not_ynnpack():
  """parallel.compiler_options() keeps convolutions out of YNNPACK on CPU (measured faster
  here), keeps its matmuls and reductions, and does not change what is computed."""
  from genimg_jax import parallel
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 14, 14, 16))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 16, 32))

  def f(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(8, -1) @ y.reshape(8, -1).T, y.sum(axis=(0, 1, 2))

  def ynnpack_ops(compiler_options):
    return _ynnpack_ops(jax.jit(f, compiler_options=compiler_options).lower(x, w).compile())

  opts = parallel.compiler_options()
  assert opts == parallel.CPU_COMPILER_OPTIONS
  assert ynnpack_ops({}) == {"conv_general_dilated", "dot_general", "reduce_sum"}  # XLA's defaults
  assert ynnpack_ops(opts) == {"dot_general", "reduce_sum"}
  for ours, xlas in zip(jax.jit(f, compiler_options=opts)(x, w), jax.jit(f, compiler_options={})(x, w)):
    np.testing.assert_allclose(ours, xlas, rtol=1e-4, atol=1e-2)


def test_compiler_options_leave_out_only_an_option_xla_lacks(monkeypatch):
  from genimg_jax import parallel
  known = dict(parallel.CPU_COMPILER_OPTIONS)
  monkeypatch.setattr(parallel, "CPU_COMPILER_OPTIONS", {**known, "xla_cpu_no_such_option": True})
  parallel.compiler_options.cache_clear()
  try:
    assert parallel.compiler_options() == known
  finally:
    parallel.compiler_options.cache_clear()


def test_init_compiled_for_once_gives_the_same_state():
  """compile_fns compiles init with parallel.once_compiler_options (LLVM level 1 on CPU):
  the state must be the same, bit for bit, as at XLA's default level."""
  from experiments import vae_mnist
  from genimg_jax import parallel
  c = vae_mnist.get_config("runlocal")
  c.experiment = "vae_mnist"
  task = tasks.build_task(c)
  opts = parallel.compiler_options()
  once = parallel.once_compiler_options(opts)
  assert once == {**opts, "xla_backend_optimization_level": 1}
  states = [jax.jit(task.init_state, compiler_options=o)(jax.random.PRNGKey(3)) for o in (once, opts)]
  leaves = jax.tree.leaves(states[0])
  assert len(leaves) > 10 and any(np.asarray(l).std() > 0 for l in leaves)  # random weights
  for a, b in zip(leaves, jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(a, b)


def test_train_step_updates_the_donated_state_in_place_with_the_same_bits():
  """parallel.compiler_options() has XLA:CPU's copy insertion use region analysis: the
  compiled step then copies none of the donated parameters and Adam moments (XLA's default
  copies each of them every step), and the state it computes is the same, bit for bit."""
  from experiments import vae_mnist
  from genimg_jax import parallel
  c = vae_mnist.get_config("runlocal")
  c.experiment = "vae_mnist"
  task = tasks.build_task(c)
  mesh = parallel.make_mesh(jax.devices()[:1])
  opts = parallel.compiler_options()
  without = {k: v for k, v in opts.items() if k != "xla_cpu_copy_insertion_use_region_analysis"}
  assert without != opts
  batch = next(data.train_batches(c, 0))
  copied, leaves = [], []  # per options: copies of weight-matrix-shaped arrays, final state
  for o in (opts, without):
    _, init, step = train.compile_fns(task, mesh, compiler_options=o)
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
  from genimg_jax import parallel
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
