"""Progressive distillation: the target's invariant (one student step = two teacher steps),
through the real DDIM sampler; the task's refusals; a runlocal round from a runlocal
teacher, its record and its identity."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax import runs, samplers, tasks, train, workdir as workdir_lib
from genimg_jax.objectives import diffusion as diff
from genimg_jax.objectives import distillation as pd


def _teacher(z, logsnr):
  """A smooth stand-in denoiser whose x0 stays inside [-1, 1] (so that clipping is idle)."""
  x0 = 0.6 * jnp.tanh(0.8 * z + 0.05 * logsnr[:, None, None, None])
  alpha, sigma = diff.alpha_sigma(logsnr[:, None, None, None])
  return x0, (z - alpha * x0) / sigma


def _oracle_student(schedule, n):
  """A student that predicts the distillation target exactly (its t looked up on the grid)."""
  grid = jnp.arange(1, n + 1) / n

  def denoise(z, logsnr):
    t = grid[jnp.argmin(jnp.abs(schedule(grid)[None] - logsnr[:, None]), axis=1)]
    x0 = pd.target(_teacher, z, t, student_steps=n, schedule=schedule)
    alpha, sigma = diff.alpha_sigma(logsnr[:, None, None, None])
    return x0, (z - alpha * x0) / sigma
  return denoise


@pytest.mark.parametrize("t", [1.0, 0.5, 0.25])
def test_one_ddim_step_on_the_target_is_two_teacher_steps(t):
  schedule = diff.logsnr_schedule("cosine")
  n = 4
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6, 1))
  tt = jnp.full((3,), t)
  x_tilde = pd.target(_teacher, z, tt, student_steps=n, schedule=schedule)
  l_t, l_mid, l_s = schedule(tt), schedule(tt - 0.125), schedule(tt - 0.25)
  two = pd.ddim_step(_teacher, pd.ddim_step(_teacher, z, l_t, l_mid), l_mid, l_s)
  alpha_t, sigma_t = diff.alpha_sigma(l_t[:, None, None, None])
  alpha_s, sigma_s = diff.alpha_sigma(l_s[:, None, None, None])
  one = alpha_s * x_tilde + sigma_s * (z - alpha_t * x_tilde) / sigma_t
  np.testing.assert_allclose(one, two, atol=2e-5)
  assert np.abs(x_tilde).max() <= 1.0  # the sampler's clip leaves it as it is


@pytest.mark.parametrize("n", [1, 2, 4])
def test_the_exact_student_at_n_ddim_steps_samples_the_teacher_at_2n(n):
  """The student's grid is the DDIM sampler's: N steps of the target = 2N of the teacher.
  (The last x0 differ by O(sigma) at the schedule's end, t = 0: sigma ~ 1e-3.)"""
  schedule = diff.logsnr_schedule("cosine")
  noise = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 6, 1))
  kw = dict(rng=jax.random.PRNGKey(2), name="ddim", schedule=schedule, eta=0.0)
  student = samplers.sample(_oracle_student(schedule, n), noise, steps=n, **kw)
  teacher = samplers.sample(_teacher, noise, steps=2 * n, **kw)
  other = samplers.sample(_teacher, noise, steps=n, **kw)
  np.testing.assert_allclose(student, teacher, atol=5e-3)
  assert np.abs(other - teacher).max() > 10 * np.abs(student - teacher).max()


def test_the_loss_is_zero_for_the_exact_student_and_weights_by_truncated_snr():
  schedule = diff.logsnr_schedule("cosine")
  x = jax.random.uniform(jax.random.PRNGKey(3), (8, 6, 6, 1), minval=-1, maxval=1)
  rng = jax.random.PRNGKey(4)
  loss, parts = pd.distillation_loss(_oracle_student(schedule, 2), _teacher, x, rng,
                                     student_steps=2, schedule=schedule)
  assert float(loss) < 1e-9 and float(parts["x0_mse"]) < 1e-9
  zero = lambda z, logsnr: (jnp.zeros_like(z), z)
  loss, parts = pd.distillation_loss(zero, _teacher, x, rng, student_steps=2, schedule=schedule)
  t = pd.student_times(jax.random.split(rng)[0], 8, 2)  # the loss's own draw
  assert set(np.asarray(t).tolist()) <= {0.5, 1.0}
  assert float(loss) > float(parts["x0_mse"]) > 0  # t = 1/2: snr ~ 1.9 > 1


# --- the task --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory):
  """A finished ddpm_mnist:runlocal run (20 steps, checkpoints at 10 and 20)."""
  from experiments import ddpm_mnist
  c = ddpm_mnist.get_config("runlocal")
  c.experiment, c.experiment_arg = "ddpm_mnist", "runlocal"
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train.run(c, workdir)
  return workdir


def _student_config(teacher_workdir, arg="2,runlocal"):
  from experiments import distill_mnist
  c = distill_mnist.get_config(arg)
  c.experiment, c.experiment_arg = "distill_mnist", arg
  c.distill.teacher_workdir = teacher_workdir
  c.distill.teacher_step = 20
  return c


def test_the_experiment_chains_its_rounds():
  from experiments import distill_mnist
  assert distill_mnist.get_config("16").distill.teacher_workdir == "workdirs/ddpm_mnist_long"
  assert distill_mnist.get_config("16").distill.teacher_step == 9500
  c = distill_mnist.get_config("4")
  assert c.distill.teacher_workdir == "workdirs/distill_mnist_8"
  assert c.eval.sample_steps == c.distill.student_steps == 4
  assert c.metrics.inception_num_samples == c.metrics.num_samples == 10_000
  assert distill_mnist.get_config("8").metrics.inception_num_samples == 0  # on the way
  assert distill_mnist.get_config("runlocal").distill.student_steps == 16
  with pytest.raises(ValueError, match="one of 16, 8, 4, 2, 1"):
    distill_mnist.get_config("2,4")
  with pytest.raises(ValueError, match="Unknown variant"):
    distill_mnist.get_config("3")


def test_the_task_refuses_a_missing_or_mismatched_teacher(tmp_path, teacher_workdir):
  c = _student_config(str(tmp_path / "none"))
  with pytest.raises(runs.RunUnavailable, match="distill.teacher_workdir: .*Train it first"):
    tasks.build_task(c)
  c = _student_config(teacher_workdir)
  c.distill.teacher_step = 15
  with pytest.raises(runs.RunUnavailable, match="no checkpoint at step 15.*holds steps 10, 20"):
    tasks.build_task(c)
  c = _student_config(teacher_workdir)
  c.model.channels = 16
  with pytest.raises(ValueError, match="model differ"):
    tasks.build_task(c)
  c = _student_config(teacher_workdir)
  c.eval.sampler = "heun"
  with pytest.raises(ValueError, match="deterministic DDIM"):
    tasks.build_task(c)


def test_a_runlocal_round_starts_from_the_teacher_and_records_it(tmp_path, teacher_workdir):
  c = _student_config(teacher_workdir)
  task = tasks.build_task(c)
  teacher = runs.restore(teacher_workdir, 20)
  init = task.init_state(jax.random.PRNGKey(0))
  for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(teacher.state.ema_params)):
    np.testing.assert_array_equal(a, b)
  r = train.run(c, str(tmp_path))
  assert r["used_runs"]["teacher"] == {"workdir": teacher_workdir, "step": 20,
                                       "params_sha256": teacher.params_sha256}
  assert np.isfinite(r["train_metrics"]["loss"]) and r["metrics"]["test/nfe"] == 2
  assert "test/bits_per_dim" not in r["metrics"]  # rounds evaluate their samples only
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["used_runs"] == r["used_runs"]
  c.distill.teacher_step = 10  # the same teacher at another step is another run
  with pytest.raises(workdir_lib.WorkdirError, match="distill.teacher_step: 20 -> 10"):
    train.run(c, str(tmp_path))
