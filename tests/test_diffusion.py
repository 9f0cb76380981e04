"""Diffusion: schedules, the forward process, targets, the bound against a closed form, the
samplers, and ddpm_mnist end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax import samplers, tasks, train
from genimg_jax.objectives import diffusion as D


@pytest.mark.parametrize("name", D.SCHEDULES)
def test_schedules_are_decreasing_log_snrs_with_their_endpoints(name):
  f = D.logsnr_schedule(name)
  t = jnp.linspace(0.0, 1.0, 1001)
  logsnr = f(t)
  assert np.all(np.diff(np.asarray(logsnr)) <= 0) and np.all(np.isfinite(logsnr))
  if name == "cosine":
    np.testing.assert_allclose([f(0.0), f(1.0)], [D.LOGSNR_MAX, D.LOGSNR_MIN], atol=1e-4)
  else:  # the VP SDE of DDPM's betas: alpha_bar(t = i / 1000) ~ prod_{j <= i} (1 - beta_j)
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    for i in (100, 500, 999):
      np.testing.assert_allclose(jax.nn.sigmoid(f(jnp.float32((i + 1) / 1000))), alpha_bar[i],
                                 rtol=0.02, atol=1e-5)


def test_forward_process_has_the_closed_form_mean_and_variance():
  x = jnp.array([0.7, -0.3])
  logsnr = jnp.array([1.5, -2.0])
  eps = jax.random.normal(jax.random.PRNGKey(0), (200_000, 2))
  z = D.diffuse(jnp.broadcast_to(x, eps.shape), jnp.broadcast_to(logsnr, eps.shape), eps)
  alpha2, sigma2 = jax.nn.sigmoid(logsnr), jax.nn.sigmoid(-logsnr)
  np.testing.assert_allclose(alpha2 + sigma2, 1.0, rtol=1e-6)  # variance preserving
  np.testing.assert_allclose(z.mean(0), np.sqrt(alpha2) * x, atol=0.01)
  np.testing.assert_allclose(z.var(0), sigma2, rtol=0.02)


@pytest.mark.parametrize("name", D.TARGETS)
def test_targets_convert_back_to_x0_and_eps(name):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  x = jax.random.uniform(k1, (5, 4, 4, 1), minval=-1, maxval=1)
  eps = jax.random.normal(k2, x.shape)
  logsnr = jax.random.uniform(k3, (5,), minval=-8, maxval=8)
  z = D.diffuse(x, logsnr, eps)
  x0, e = D.to_x0_eps(name, D.target(name, x, eps, logsnr), z, logsnr)
  np.testing.assert_allclose(x0, x, atol=2e-3)
  np.testing.assert_allclose(e, eps, atol=2e-3)


def test_the_decoder_is_a_distribution_over_the_256_pixel_values():
  logsnr0 = D.logsnr_schedule("cosine")(jnp.zeros(()))
  values = D.pixel_values()
  z0 = jax.random.uniform(jax.random.PRNGKey(2), (3, 50), minval=-1.2, maxval=1.2)
  p = jnp.exp(D.decoder_log_probs(z0, logsnr0))
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
  alpha0, _ = D.alpha_sigma(logsnr0)
  # z_0 at a pixel value without noise: that value almost surely
  p_exact = jnp.exp(D.decoder_log_probs(alpha0 * values[37:40], logsnr0))
  np.testing.assert_array_equal(jnp.argmax(p_exact, -1), [37, 38, 39])
  assert float(p_exact.max(-1).min()) > 0.99


def test_the_bound_with_the_optimal_denoiser_is_tight_on_gaussian_data():
  """1-D data x ~ N(m, s^2): the optimal eps-prediction is known in closed form, so the
  bound (prior + diffusion term + a Gaussian decoder) must be at or above the true NLL
  0.5 log(2 pi e s^2) on average, and close to it."""
  m, s, n = 0.3, 0.5, 2_000_000
  schedule = D.logsnr_schedule("cosine")

  def optimal_eps(z, logsnr):  # E[eps | z] = (z - alpha E[x | z]) / sigma
    alpha, sigma = D.alpha_sigma(logsnr[:, None, None, None])
    x_mean = m + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (z - alpha * m)
    return (z - alpha * x_mean) / sigma

  kx, ku, ke, k0 = jax.random.split(jax.random.PRNGKey(3), 4)
  x = m + s * jax.random.normal(kx, (n, 1, 1, 1))
  diffusion = D.diffusion_term(optimal_eps, x, jax.random.uniform(ku, (n,)),
                               jax.random.normal(ke, x.shape), schedule=schedule,
                               target_name="eps")
  logsnr0 = schedule(jnp.zeros(()))
  alpha0, sigma0 = D.alpha_sigma(logsnr0)
  z0 = alpha0 * x + sigma0 * jax.random.normal(k0, x.shape)
  scale0 = sigma0 / alpha0  # continuous data: a Gaussian decoder N(x; z0 / alpha0, scale0^2)
  decoder = 0.5 * np.log(2 * np.pi) + jnp.log(scale0) + 0.5 * ((x - z0 / alpha0) / scale0)**2
  bound = D.prior_kl(x, schedule) + diffusion + decoder[:, 0, 0, 0]
  mean, stderr = float(bound.mean()), float(bound.std()) / np.sqrt(n)
  true_nll = 0.5 * np.log(2 * np.pi * np.e * s**2)
  assert stderr < 0.01
  assert mean > true_nll - 3 * stderr, (mean, true_nll, stderr)
  assert mean < true_nll + 0.05, (mean, true_nll, stderr)


def _task(**overrides):
  from experiments import ddpm_mnist
  c = ddpm_mnist.get_config("runlocal")
  c.experiment, c.experiment_arg = "ddpm_mnist", "runlocal"
  for key, value in overrides.items():
    group, field = key.split(".")
    c[group][field] = value
  return c, tasks.build_task(c)


def test_samplers_ddim_is_deterministic_and_guidance_does_not_recompile(monkeypatch):
  c, task = _task(**{"model.num_classes": 10})
  params = jax.jit(task.init_state)(jax.random.PRNGKey(0)).params
  # random weights everywhere (the output layer starts at zero: a prediction of 0 would
  # not depend on the labels, nor on the guidance)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
  params = jax.tree.unflatten(tree, [0.2 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
  noise = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
  labels = jnp.arange(4)
  traces = []
  real = samplers.sample
  monkeypatch.setattr(samplers, "sample", lambda *a, **k: traces.append(k["name"]) or real(*a, **k))
  ddim = task.sample_fn("ddim", 3, 0.0)
  out = [ddim(params, noise, labels, jax.random.PRNGKey(seed), jnp.float32(w))
         for seed, w in ((2, 1.0), (3, 1.0), (2, 0.0), (2, 4.0))]
  np.testing.assert_array_equal(out[0], out[1])  # eta = 0: the rng does not matter
  assert not np.array_equal(out[0], out[3])       # the guidance scale does
  assert traces == ["ddim"]                       # one trace for every scale
  ddpm = task.sample_fn("ddpm", 3, 0.0)
  a, b = (ddpm(params, noise, labels, jax.random.PRNGKey(s), jnp.float32(1.0)) for s in (2, 3))
  assert not np.array_equal(a, b)  # ancestral sampling draws noise
  for x in (out[0], a):  # (heun: in the end-to-end test)
    assert x.shape == noise.shape and float(jnp.abs(x).max()) <= 1.0
  assert samplers.nfe("heun", 18) == 35 and samplers.nfe("ddim", 50) == 50


@pytest.mark.parametrize("name,steps,eta", [("ddpm", 1000, 0.0), ("ddim", 100, 0.0), ("ddim", 1000, 1.0),
                                            ("heun", 50, 0.0)])
def test_samplers_with_the_optimal_denoiser_reach_the_data_distribution(name, steps, eta):
  """Gaussian data x ~ N(0, s^2) per pixel: the optimal denoiser is linear in closed form,
  E[x | z_t] = alpha s^2 z / (alpha^2 s^2 + sigma^2), and every sampler must turn the prior's
  noise into samples of std s, up to its discretization at this many steps (with few steps
  the ancestral samplers lose variance and Heun on this log-SNR range gains some: at 100
  ancestral steps the std is 0.95 s, at 13 Heun steps 1.26 s, as the same recursions
  computed by hand give)."""
  s = 0.3

  def denoise(z, logsnr):
    alpha, sigma = D.alpha_sigma(logsnr[:, None])
    x0 = alpha * s**2 * z / (alpha**2 * s**2 + sigma**2)
    return x0, (z - alpha * x0) / sigma
  noise = jax.random.normal(jax.random.PRNGKey(0), (20_000, 1))
  x = samplers.sample(denoise, noise, jax.random.PRNGKey(1), name=name, steps=steps,
                      schedule=D.logsnr_schedule("cosine"), eta=eta)
  assert abs(float(jnp.std(x)) / s - 1) < 0.03 and abs(float(jnp.mean(x))) < 0.01


def test_ddpm_mnist_runlocal_end_to_end_with_sample_metrics(classifier_workdir, tmp_path):
  import os
  c, _ = _task(**{"model.num_classes": 10, "eval.guidance": 2.0, "eval.sampler": "heun"})
  c.metrics.classifier_workdir = classifier_workdir
  c.metrics.num_samples = 100
  c.metrics.cache_dir = str(tmp_path / "cache")
  c.metrics.kid_subsets, c.metrics.kid_subset_size = 5, 50
  r = train.run(c, str(tmp_path / "run"))
  m = r["metrics"]
  assert 0 < m["test/bits_per_dim"] < 20 and m["test/bits_per_dim_stderr"] > 0
  np.testing.assert_allclose(m["test/nll"], m["test/prior"] + m["test/diffusion"] + m["test/decoder"],
                             rtol=1e-5)
  assert m["test/bound_time_samples"] == 1 and m["test/num_examples"] == 200
  p = m["test/classifier/protocol"]
  assert p["sampler"].startswith("heun") and p["nfe"] == 2 * 4 - 1 and p["guidance"] == 2.0
  assert p["quantized"] == "uint8" and np.isfinite(m["test/classifier/fd"])
  assert os.path.exists(tmp_path / "run" / "samples.png")
  assert r["train_metrics"]["loss"] < 1.0  # eps MSE: below predicting zero noise

  # evaluated again with other sampler settings, no training, the run's records untouched
  from genimg_jax import files, sweep
  before = open(tmp_path / "run" / "results.json").read()
  c.eval.sampler, c.eval.sample_steps = "ddim", 3
  e = train.evaluate(c, str(tmp_path / "run"), str(tmp_path / "run" / "evaluations" / "ddim3.json"))
  assert e["evaluated_step"] == 20 and e["metrics"]["test/nfe"] == 3
  assert e["metrics"]["test/classifier/protocol"]["sampler"].startswith("ddim")
  assert files.read_json(tmp_path / "run" / "evaluations" / "ddim3.json")["metrics"]["test/nfe"] == 3
  assert os.path.exists(tmp_path / "run" / "evaluations" / "ddim3_samples.png")
  assert open(tmp_path / "run" / "results.json").read() == before
  # an evaluation study: its trials evaluate the run; FD against NFE per sampler
  trials = sweep.product(**{"eval.sampler": ["ddim"], "eval.sample_steps": [2]})
  sweep.run(lambda: c.copy_and_resolve_references(), trials, str(tmp_path / "study"),
            evaluate=str(tmp_path / "run"))
  md = sweep.report(trials, str(tmp_path / "study"), metrics=["test/nfe", "test/classifier/fd"],
                    xy=("test/nfe", "test/classifier/fd"), lines="eval.sampler")
  assert "| ddim | 2 | 2 ± 0 | **" in md  # NFE is a setting, not ranked; the FD column is
  assert (tmp_path / "study" / "ablation.png").stat().st_size > 1000
  other = c.copy_and_resolve_references()
  other.model.channels = 16  # another model: refused, not evaluated
  with pytest.raises(ValueError, match="model.channels: 8 -> 16"):
    train.evaluate(other, str(tmp_path / "run"), str(tmp_path / "x.json"))


def test_the_same_loss_and_bound_on_1_and_4_devices():
  """Two train steps and the test bound, the state replicated and the batch sharded over
  1 and over 4 devices (GroupNorm is per image: no cross-device statistics)."""
  from genimg_jax import data, parallel
  c, task = _task(**{"eval.num_examples": 100})
  batches = [next(data.train_batches(c, i)) for i in range(2)]
  out = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    _, init, step = train.compile_fns(task, mesh)
    state = init(jax.random.PRNGKey(0))
    for b in batches:
      state, metrics = step(state, parallel.to_global(b, mesh), jax.random.PRNGKey(1))
    bound = task.bits_per_dim(state.ema_params, mesh, jax.random.PRNGKey(2))
    out.append((jax.device_get(metrics), bound))
  for k in ("loss", "grad_norm", "param_norm"):
    np.testing.assert_allclose(out[1][0][k], out[0][0][k], rtol=2e-5)
  np.testing.assert_allclose(out[1][1]["bits_per_dim"], out[0][1]["bits_per_dim"], rtol=2e-5)
