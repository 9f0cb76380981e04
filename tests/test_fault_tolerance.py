"""Preemption, exact resume, corrupt checkpoints, non-finite rollback, bad input."""
import glob
import os
import signal

import jax
import numpy as np
import pytest
import tensorflow as tf

from genimg_jax import checkpoint, recovery, tasks, train


def _config(name):
  import importlib
  c = importlib.import_module(f"experiments.{name}").get_config("runlocal")
  c.experiment, c.experiment_arg = name, "runlocal"
  c.train.steps = 12
  c.train.log_every = 4
  c.train.checkpoint_every = 4
  if "metrics" in c:
    c.metrics.classifier_workdir = ""  # no feature network needed here
  return c


def _final_params(workdir, config):
  ckpt = checkpoint.Checkpointer(workdir, 3)
  abstract = jax.eval_shape(tasks.build_task(config).init_state, jax.random.PRNGKey(0))
  step, state, _ = ckpt.restore_latest(abstract)
  ckpt.close()
  return step, jax.device_get(state)


def _sigterm_at(monkeypatch, at_step):
  """Makes the data pipeline deliver SIGTERM to this process while step `at_step` runs."""
  real = train.data.train_batches

  def batches(config, start_index=0, batch_size=None, **kwargs):  # one step per call, no skips
    for i, b in enumerate(real(config, start_index, batch_size, **kwargs), start=start_index):
      if i == at_step - 1:
        os.kill(os.getpid(), signal.SIGTERM)
      yield b

  monkeypatch.setattr(train.data, "train_batches", batches)


def assert_resumes_bitwise(config, straight_dir, straight, workdir, monkeypatch, **run_kwargs):
  """Runs `config` in `workdir` with its evaluations off, stopped by SIGTERM at step 7
  (between checkpoints), then again: it must resume at step 7 and end with the weights and
  training metrics of the uninterrupted run in `straight_dir` (its results: `straight`),
  bitwise."""
  cut = config.copy_and_resolve_references()
  for name in cut.evals:
    cut.evals[name].type = "none"
  with monkeypatch.context() as mp:
    _sigterm_at(mp, 7)
    with pytest.raises(train.Preempted):
      train.run(cut, workdir, **run_kwargs)
  resumed = train.run(cut, workdir, **run_kwargs)
  assert resumed["resumed_from_step"] == 7
  (s1, p1), (s2, p2) = (_final_params(w, config) for w in (straight_dir, workdir))
  assert s1 == s2 == config.train.steps
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)  # bitwise
  timing = "steps_per_second"
  np.testing.assert_equal({k: v for k, v in resumed["train_metrics"].items() if k != timing},
                          {k: v for k, v in straight["train_metrics"].items() if k != timing})


# meanflow: the diffusion task's loop state (EMA, label dropout keys) under its subclass,
# with a jax.jvp in the step; its run is also meanflow_mnist's end-to-end test.
# vqvae: the EMA codebook in batch_stats, its dead-code restarts drawn from the step's key
@pytest.mark.parametrize("name", ["vae_mnist", "gan_mnist", "meanflow_mnist", "vqvae_mnist"])
def test_sigterm_then_resume_equals_uninterrupted(name, tmp_path, monkeypatch):
  c = _config(name)
  c.train.checkpoint_every = 6  # SIGTERM lands at step 7, between checkpoints 6 and 12
  straight = train.run(c, str(tmp_path / "straight"))
  if name == "meanflow_mnist":  # trained: one-step samples, the flow bound at r = t
    m = straight["metrics"]
    assert 0 < m["test/bits_per_dim"] < 20 and m["test/nfe"] == 1
    assert np.isfinite(straight["train_metrics"]["fm_mse"])
    assert (tmp_path / "straight" / "samples.png").exists()
  if name == "vqvae_mnist":  # trained: reconstructions and the codebook's use
    m = straight["metrics"]
    assert m["test/psnr"] > 5.0 and 0.0 < m["test/usage"] <= 1.0
    assert m["test/perplexity"] >= 1.0 and np.isfinite(straight["train_metrics"]["commitment"])
  with monkeypatch.context() as m:
    _sigterm_at(m, 7)  # an arbitrary step, between checkpoints
    with pytest.raises(train.Preempted) as e:
      train.run(c, str(tmp_path / "interrupted"))
  assert e.value.step == 7
  assert checkpoint.Checkpointer(str(tmp_path / "interrupted"), 3).latest_step() == 7
  resumed = train.run(c, str(tmp_path / "interrupted"))
  assert resumed["resumed_from_step"] == 7
  s1, p1 = _final_params(str(tmp_path / "straight"), c)
  s2, p2 = _final_params(str(tmp_path / "interrupted"), c)
  assert s1 == s2 == 12
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)  # bitwise
  numbers = lambda r: {k: v for k, v in r["metrics"].items() if isinstance(v, float)}
  assert numbers(straight) == numbers(resumed)


def test_ctrl_c_during_a_checkpoint_save_stops_at_the_next_step_boundary(tmp_path, monkeypatch):
  c = _config("vae_mnist")
  real_save = checkpoint.Checkpointer.save

  def save(self, step, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the step-4 save runs
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  with pytest.raises(train.Interrupted) as e:
    train.run(c, str(tmp_path))
  assert (e.value.step, e.value.checkpoint_step) == (5, 4)  # the save finished; nothing after


def test_a_second_ctrl_c_stops_at_once_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGINT)
  with recovery.StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGINT)
    assert signals.interrupted and not signals.preempted
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  c = _config("vae_mnist")
  c.train.steps = 8
  workdir = str(tmp_path)
  train.run(c, workdir)
  files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", "8", "state", "**", "*"),
                                recursive=True) if os.path.isfile(f) and os.path.getsize(f) > 100]
  assert files
  for f in files:  # truncate every data file of the latest checkpoint
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)
  c.train.steps = 12
  r = train.run(c, workdir)
  assert r["resumed_from_step"] == 4  # step 8 was unreadable; step 4 was used
  assert glob.glob(os.path.join(workdir, "checkpoints", "corrupt-8-*"))
  assert checkpoint.Checkpointer(workdir, 3).latest_step() == 12


def _poison(monkeypatch, config, data_index):
  """Makes the training batch of `data_index` all NaN, wherever the pipeline yields it
  (its preprocessing key is [seed, data index]; the test set's is [2**31 - 1, i])."""
  real = train.data.preprocess

  def preprocess(image, mode, key):
    x = real(image, mode, key)
    hit = tf.logical_and(tf.equal(key[0], config.seed), tf.equal(key[1], data_index))
    return tf.where(hit, tf.fill(tf.shape(x), float("nan")), x)

  monkeypatch.setattr(train.data, "preprocess", preprocess)


def test_nonfinite_rollback_skips_the_batch_and_goes_on(tmp_path, monkeypatch):
  """With 2 steps per call, so the pipeline both leaves the batch out and stacks the rest."""
  c = _config("vae_mnist")
  c.train.on_nonfinite = "rollback"
  c.train.steps_per_call = 2
  _poison(monkeypatch, c, 5)  # the batch of step 6
  r = train.run(c, str(tmp_path))
  assert r["skipped_batches"] == [5]
  assert np.isfinite(r["train_metrics"]["loss"]) and r["steps"] == 12
  _, p_roll = _final_params(str(tmp_path), c)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(p_roll.params))


def test_nonfinite_stop_is_the_default(tmp_path, monkeypatch):
  c = _config("vae_mnist")
  _poison(monkeypatch, c, 5)
  with pytest.raises(train.NonFiniteLossError, match="at step 6 "):
    train.run(c, str(tmp_path))
  assert checkpoint.Checkpointer(str(tmp_path), 3).latest_step() == 4


@pytest.mark.parametrize("field,value,message", [
    ("data.name", "mnistt", "Unknown dataset 'mnistt'"),
    ("model.name", "mlp_vea", "Unknown model 'mlp_vea'"),
    ("objective.likelihood", "poisson", "Unknown likelihood 'poisson'"),
    ("objective.name", "elbow", "Unknown objective 'elbow'"),
    ("train.batch_size", 98, "multiple of the device count"),
    ("train.batch_size", 0, "must be positive"),
    ("train.steps", -1, "train.steps must be positive"),
    ("optim.lr", 0.0, "optim.lr must be positive"),
    ("optim.name", "adamm", "Unknown optim.name 'adamm'"),
    ("train.on_nonfinite", "ignore", "Unknown train.on_nonfinite"),
])
def test_bad_vae_input_rejected_before_compute(field, value, message, tmp_path):
  c = _config("vae_mnist")
  group, key = field.split(".")
  c[group][key] = value
  with pytest.raises(ValueError, match=message):
    train.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("field,value,message", [
    ("gan.loss", "hingee", "Unknown GAN loss 'hingee'"),
    ("gan.penalty", "gp", "Unknown gan.penalty 'gp'"),
    ("model.d_norm", "weight", "Unknown model.d_norm 'weight'"),
    ("gan.n_critic", 0, "gan.n_critic must be positive"),
    ("d_optim.lr", -1.0, "d_optim.lr must be positive"),
])
def test_bad_gan_input_rejected_before_compute(field, value, message, tmp_path):
  c = _config("gan_mnist")
  group, key = field.split(".")
  c[group][key] = value
  with pytest.raises(ValueError, match=message):
    train.run(c, str(tmp_path))


def test_an_unknown_diffusion_backbone_is_refused_before_compute(tmp_path):
  c = _config("ddpm_mnist")
  c.model.name = "vit"  # not registered in models/denoisers.py: an error, not the U-Net
  with pytest.raises(ValueError, match="Unknown model 'vit' for the diffusion task"):
    train.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_workdir_of_another_experiment_is_refused(tmp_path):
  c = _config("vae_mnist")
  c.train.steps = 4
  train.run(c, str(tmp_path))
  other = _config("vae_mnist_conv")
  with pytest.raises(ValueError, match="(?s)holds another run.*experiment: 'vae_mnist' -> 'vae_mnist_conv'"):
    train.run(other, str(tmp_path))
