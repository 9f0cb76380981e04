"""The training loop in-process on 4 fake CPU devices: sharding, tracing, non-finite losses."""
import jax
import jax.numpy as jnp
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


def test_init_compiled_for_once_gives_the_same_state():
  """compile_fns compiles init with xla.jit(once=True) (LLVM level 1 on CPU): the state
  must be the same, bit for bit, as at XLA's default level."""
  from experiments import vae_mnist
  from genimg_jax import xla
  c = vae_mnist.get_config("runlocal")
  c.experiment = "vae_mnist"
  task = tasks.build_task(c)
  opts = xla.compiler_options()
  assert xla.once_options(opts) == {**opts, "xla_backend_optimization_level": 1}
  states = [xla.jit(task.init_state, once=once)(jax.random.PRNGKey(3)) for once in (True, False)]
  leaves = jax.tree.leaves(states[0])
  assert len(leaves) > 10 and any(np.asarray(l).std() > 0 for l in leaves)  # random weights
  for a, b in zip(leaves, jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(a, b)


def test_all_finite_is_false_for_one_nan_or_inf_in_any_leaf():
  """The flag every train step's guard reads: one bad element in any one leaf (a scalar
  loss, a kernel, a bias) makes it False, jitted or not; finite values of any size are
  finite."""
  from genimg_jax import state as state_lib
  tree = {"loss": jnp.float32(2.0), "w": jnp.full((3, 3, 4), 3e38, jnp.float32),
          "b": jnp.zeros(5), "step": jnp.int32(7)}
  for fn in (state_lib.all_finite, jax.jit(state_lib.all_finite)):
    assert bool(fn(tree)) and bool(fn(tree["loss"], tree))
    for name, index in (("loss", ()), ("w", (2, 1, 3)), ("b", (0,))):
      for bad in (np.nan, np.inf, -np.inf):
        broken = dict(tree, **{name: tree[name].at[index].set(bad)})
        assert not bool(fn(broken)), (name, bad)
        assert not bool(fn(tree["loss"], broken))


def test_a_nonfinite_step_leaves_the_state_as_it_was(runlocal_config):
  """state.guarded_apply's promise: a step with a NaN batch changes nothing but the step
  counter and records the step; the next finite step updates as usual."""
  task = tasks.build_task(runlocal_config)
  state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
  step = jax.jit(task.train_step)
  batch = next(data.train_batches(runlocal_config, 0))
  bad = dict(batch, image=np.full_like(batch["image"], np.nan))
  after, metrics = step(state, bad, jax.random.PRNGKey(1))
  assert not np.isfinite(float(metrics["loss"]))
  assert int(after.step) == 1 and int(after.nonfinite_step) == 1
  for field in ("params", "opt_state"):
    for a, b in zip(jax.tree.leaves(getattr(after, field)), jax.tree.leaves(getattr(state, field))):
      np.testing.assert_array_equal(a, b)
  good, _ = step(after, batch, jax.random.PRNGKey(1))
  assert int(good.step) == 2 and int(good.nonfinite_step) == 1  # the first bad step stays named
  assert not np.array_equal(jax.tree.leaves(good.params)[0], jax.tree.leaves(state.params)[0])
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(good.params))
