"""Diffusion: schedules, the forward process, targets, the bound against a closed form, the
samplers, and ddpm_mnist end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax import encoders, samplers, tasks, train
from genimg_jax.objectives import diffusion as D


@pytest.mark.parametrize("name", D.SCHEDULES)
def test_schedules_are_decreasing_log_snrs_with_their_endpoints(name):
  f = D.logsnr_schedule(name)
  t = jnp.linspace(0.0, 1.0, 1001)
  logsnr = f(t)
  assert np.all(np.diff(np.asarray(logsnr)) <= 0) and np.all(np.isfinite(logsnr))
  if name == "cosine":
    np.testing.assert_allclose([f(0.0), f(1.0)], [D.LOGSNR_MAX, D.LOGSNR_MIN], atol=1e-4)
  elif name == "flow":  # z / (alpha + sigma) = (1 - t) x + t eps inside the range
    for t in (0.1, 0.5, 0.8):
      alpha, sigma = D.alpha_sigma(f(jnp.float32(t)))
      np.testing.assert_allclose(sigma / (alpha + sigma), t, rtol=1e-5)
    np.testing.assert_allclose([f(0.0), f(1.0)], [D.LOGSNR_MAX, D.LOGSNR_MIN])
  elif name == "edm":  # sigma / alpha from 0.002 to 80 on EDM's rho = 7 interpolation
    s = lambda t: float(jnp.exp(-0.5 * f(jnp.float32(t))))
    np.testing.assert_allclose([s(0.0), s(1.0)], [0.002, 80.0], rtol=1e-5)
    np.testing.assert_allclose(s(0.5), ((0.002**(1 / 7) + 80**(1 / 7)) / 2)**7, rtol=1e-5)
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
  f = D.formulation(name)
  x0, e = f.to_x0_eps(f.target(x, eps, logsnr), z, logsnr)
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
                               formulation=D.formulation("eps"))
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


def _task(experiment="ddpm_mnist", arg="runlocal", **overrides):
  import importlib
  c = importlib.import_module(f"experiments.{experiment}").get_config(arg)
  c.experiment, c.experiment_arg = experiment, arg
  for key, value in overrides.items():
    group, field = key.split(".")
    c[group][field] = value
  return c, tasks.build_task(c)


def test_samplers_ddim_is_deterministic_and_guidance_does_not_recompile(monkeypatch):
  c, task = _task(**{"model.num_classes": 10})
  params = jax.jit(task.init_state)(jax.random.PRNGKey(0)).params
  # random weights everywhere (the output layer starts at zero: a prediction of 0 would
  # not depend on the labels, nor on the guidance)
  rng = np.random.default_rng(9)  # numpy's: a compiled jax.random.normal per shape is slow
  params = jax.tree.map(lambda l: 0.2 * rng.standard_normal(l.shape, np.float32), params)
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
  c.evals.bound.type = "none"  # the sampler's settings are what changes: the bound is above
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
  # a study across runs names each trial's run (diffusion_mnist_formulations)
  asked = []
  sweep.run(lambda: c.copy_and_resolve_references(), trials, str(tmp_path / "study_of_runs"),
            evaluate=lambda trial: asked.append(trial) or str(tmp_path / "run"))
  assert asked == trials
  assert files.read_json(tmp_path / "study_of_runs" / "trials" / sweep.trial_name(trials[0])
                         / "results.json")["metrics"]["test/nfe"] == 2
  other = c.copy_and_resolve_references()
  other.model.channels = 16  # another model: refused, not evaluated
  with pytest.raises(ValueError, match="model.channels: 8 -> 16"):
    train.evaluate(other, str(tmp_path / "run"), str(tmp_path / "x.json"))


@pytest.mark.parametrize("experiment,arg", [("ddpm_mnist", "runlocal"), ("flow_mnist", "dit,runlocal")])
def test_the_same_loss_and_bound_on_1_and_4_devices(experiment, arg):
  """Two train steps and the test bound, the state replicated and the batch sharded over
  1 and over 4 devices (GroupNorm and LayerNorm are per image: no cross-device
  statistics), for the U-Net under DDPM and the DiT under flow matching."""
  from genimg_jax import data, evaluators, parallel
  c, task = _task(experiment, arg, **{"eval.num_examples": 100})
  batches = [next(data.train_batches(c, i)) for i in range(2)]
  out = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    _, init, step = train.compile_fns(task, mesh)
    state = init(jax.random.PRNGKey(0))
    for b in batches:
      state, metrics = step(state, parallel.to_global(b, mesh), jax.random.PRNGKey(1))
    bound, _ = evaluators.from_config(c, task).evaluators["bound"](
        state, mesh, jax.random.PRNGKey(2), final=True)
    out.append((jax.device_get(metrics), bound))
  for k in ("loss", "grad_norm", "param_norm"):
    np.testing.assert_allclose(out[1][0][k], out[0][0][k], rtol=2e-5)
  np.testing.assert_allclose(out[1][1]["bits_per_dim"], out[0][1]["bits_per_dim"], rtol=2e-5)


# --- closed forms of the bound's parts, the loss weightings, guidance and the samplers ----
def _straight(lo=-4.0, hi=4.0):
  """A log-SNR schedule linear in t, from hi at t = 0 to lo at t = 1: dlogsnr/dt = lo - hi,
  and alpha_1 far from 0, so every term of the bound matters."""
  return lambda t: hi + (lo - hi) * jnp.asarray(t, jnp.float32)


def test_the_prior_kl_is_the_kl_of_two_gaussians():
  """KL(N(alpha_1 x, sigma_1^2) || N(0, 1)) per pixel, summed: at logsnr(1) = 0
  (alpha_1^2 = sigma_1^2 = 1/2) it is 0.5 (x^2 / 2 + 1/2 - 1 + log 2) per pixel."""
  x = jnp.array([[0.0, 1.0], [-1.0, 0.5]]).reshape(2, 2, 1, 1)
  got = D.prior_kl(x, _straight(lo=0.0))
  want = 0.5 * np.sum(np.asarray(x).reshape(2, 2)**2 / 2 + 0.5 - 1 + np.log(2), axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_diffusion_term_is_half_the_log_snr_range_times_the_squared_error():
  """A denoiser that predicts eps = 0 makes the squared error ||eps||^2 exactly, so one
  sample of the term is (logsnr(0) - logsnr(1)) / 2 * ||eps||^2, whatever u is."""
  x = jnp.full((3, 2, 2, 1), 0.4)
  eps = jax.random.normal(jax.random.PRNGKey(0), x.shape)
  zero = lambda z, logsnr: jnp.zeros_like(z)
  got = D.diffusion_term(zero, x, jnp.array([0.1, 0.5, 0.9]), eps, schedule=_straight(),
                         formulation=D.formulation("eps"))
  np.testing.assert_allclose(got, 0.5 * 8.0 * np.sum(np.asarray(eps)**2, axis=(1, 2, 3)), rtol=1e-5)
  # the log-SNR it is sampled at runs from logsnr(1) (u = 0) to logsnr(0) (u = 1)
  seen = []
  record = lambda z, logsnr: seen.append(np.asarray(logsnr)) or jnp.zeros_like(z)
  D.diffusion_term(record, x, jnp.array([0.0, 0.25, 1.0]), eps, schedule=_straight(),
                   formulation=D.formulation("eps"))
  np.testing.assert_allclose(seen[0], [-4.0, -2.0, 4.0], atol=1e-6)


def test_the_decoder_nll_of_a_noiseless_z0_at_the_bin_centres_is_nearly_zero_and_off_them_not():
  logsnr0 = D.logsnr_schedule("cosine")(jnp.zeros(()))
  alpha0, _ = D.alpha_sigma(logsnr0)
  x = D.pixel_values()[jnp.array([0, 100, 255])].reshape(1, 3, 1, 1)
  assert float(D.decoder_nll(x, alpha0 * x, logsnr0)[0]) < 1e-3
  # z_0 half a bin off: each pixel's two nearest bins are equally likely (-log 1/2 each)
  half = 1.0 / 255
  np.testing.assert_allclose(D.decoder_nll(x[:, 1:2], alpha0 * (x[:, 1:2] + half), logsnr0),
                             [np.log(2)], rtol=1e-3)


def test_the_decoders_std_is_sigma_0_over_alpha_0():
  # The decoder's logits are Gaussian log densities of z_0 / alpha_0 with std
  # sigma_0 / alpha_0 = exp(-logsnr_0 / 2). At a log-SNR where that std is one bin width
  # (2/255), z_0 / alpha_0 on bin k: log p(k) - log p(k +- 1) = 1/2 and
  # log p(k) - log p(k +- 2) = 2 exactly, whatever the other bins hold.
  logsnr0 = jnp.float32(2 * np.log(255 / 2))
  alpha0, _ = D.alpha_sigma(logsnr0)
  logp = D.decoder_log_probs(alpha0 * D.pixel_values()[100], logsnr0)
  np.testing.assert_allclose(logp[100] - logp[jnp.array([99, 101, 98, 102])], [0.5, 0.5, 2, 2],
                             rtol=1e-3)


def test_the_bound_adds_its_parts_each_from_its_own_function():
  x = jnp.full((2, 2, 2, 1), 0.2)
  zero = lambda z, logsnr: jnp.zeros_like(z)
  b = D.nll_bound(zero, x, jax.random.PRNGKey(1), schedule=_straight(),
                  formulation=D.formulation("eps"))
  np.testing.assert_allclose(b["prior"], D.prior_kl(x, _straight()), rtol=1e-6)
  np.testing.assert_allclose(b["nll"], b["prior"] + b["diffusion"] + b["decoder"], rtol=1e-6)
  assert np.all(np.asarray(b["decoder"]) > 0) and np.all(np.asarray(b["diffusion"]) > 0)


@pytest.mark.parametrize("target_name", D.TARGETS)
def test_each_loss_weighting_is_its_closed_form_of_the_eps_error(target_name):
  """On x = 0 the noise is eps = z / sigma exactly; a network predicting eps_hat = 2 eps
  (in whichever target) errs by d = eps: the per-pixel eps MSE is the "eps_mse" loss, the
  v error is d / alpha (v_mse = eps_mse / alpha^2), and "elbo" is -dlogsnr/dt / 2 * ||d||^2
  (dlogsnr/dt = -8 on the straight schedule)."""
  x = jnp.zeros((1, 4, 4, 1))
  seen = []
  f = D.formulation(target_name)

  def predict(z, logsnr):
    seen.append(logsnr)
    alpha, sigma = D.alpha_sigma(logsnr[:, None, None, None])
    eps_hat = 2.0 * z / sigma
    x0_hat = (z - sigma * eps_hat) / alpha
    return f.target(x0_hat, eps_hat, logsnr)

  def loss(weighting):
    seen.clear()
    value, parts = D.diffusion_loss(predict, x, jax.random.PRNGKey(3),
                                    levels=D.noise_levels("uniform_t", _straight()),
                                    formulation=f, weighting=weighting)
    return float(value), float(parts["eps_mse"]), float(jax.nn.sigmoid(seen[0][0]))

  eps_loss, eps_mse, _ = loss("eps_mse")
  np.testing.assert_allclose(eps_loss, eps_mse, rtol=1e-5)
  v_loss, eps_mse, alpha2 = loss("v_mse")
  np.testing.assert_allclose(v_loss, eps_mse / alpha2, rtol=1e-3)
  elbo, eps_mse, _ = loss("elbo")
  np.testing.assert_allclose(elbo, 0.5 * 8.0 * 16 * eps_mse, rtol=1e-4)
  assert elbo > 0


def _stand_in_network(task, out_cond, out_null):
  """The task's network replaced by one that outputs out_cond for a class label and
  out_null for the null class: what guidance does is then known."""
  null = task.config.model.num_classes
  task.predict = lambda params, z, logsnr, labels, *a, **k: jnp.where(
      (labels == null)[:, None, None, None], out_null, out_cond) * jnp.ones_like(z)


@pytest.mark.parametrize("target", D.TARGETS)
def test_guidance_is_one_plus_w_times_the_conditional_minus_w_times_the_unconditional(target):
  """On the eps of the formulation's output map, for every formulation."""
  _, task = _task(**{"model.num_classes": 10, "diffusion.target": target})
  _stand_in_network(task, out_cond=1.0, out_null=0.25)
  z = jnp.full((2, 28, 28, 1), 0.5)
  logsnr = jnp.array([1.0, -1.0])
  eps_of = lambda out: task.formulation.to_x0_eps(jnp.full_like(z, out), z, logsnr)[1]
  for w in (0.0, 2.0):
    x0, eps = task.denoiser({}, jnp.array([3, 7]), w)(z, logsnr)
    np.testing.assert_allclose(eps, (1 + w) * eps_of(1.0) - w * eps_of(0.25), rtol=1e-5)
    alpha, sigma = D.alpha_sigma(logsnr[:, None, None, None])
    np.testing.assert_allclose(x0, (z - sigma * eps) / alpha, rtol=1e-5)
    if target == "eps":
      np.testing.assert_allclose(eps, (1 + w) * 1.0 - w * 0.25, rtol=1e-6)


def test_label_dropout_gives_the_null_class_with_its_probability_and_keeps_the_rest():
  _, task = _task(**{"model.num_classes": 10, "diffusion.label_dropout": 0.1})
  labels = jnp.arange(100_000) % 10
  out = np.asarray(task.drop_labels(jax.random.PRNGKey(0), labels))
  null = out == 10
  assert abs(null.mean() - 0.1) < 0.005, null.mean()
  np.testing.assert_array_equal(out[~null], np.asarray(labels)[~null])


def _posterior(z_t, x0, logsnr_t, logsnr_s):
  """q(z_s | z_t, x0) by Gaussian conditioning of z_s = alpha_s x0 + sigma_s e and
  z_t = (alpha_t / alpha_s) z_s + sigma_{t|s} e': (mean, variance)."""
  a_t, s_t = np.sqrt(jax.nn.sigmoid(logsnr_t)), np.sqrt(jax.nn.sigmoid(-logsnr_t))
  a_s, s_s = np.sqrt(jax.nn.sigmoid(logsnr_s)), np.sqrt(jax.nn.sigmoid(-logsnr_s))
  cov = (a_t / a_s) * s_s**2  # Cov(z_s, z_t)
  return a_s * x0 + cov / s_t**2 * (z_t - a_t * x0), s_s**2 - cov**2 / s_t**2


@pytest.mark.parametrize("name,eta", [("ddpm", 0.0), ("ddim", 1.0), ("ddim", 0.0), ("ddim", 0.5)])
def test_one_ancestral_or_ddim_step_has_the_posterior_mean_and_variance(name, eta):
  """Two steps on the straight schedule (t = 1 -> 1/2 -> 0) with a denoiser that says x0 = c
  at t = 1 and hands z_{1/2} back (scaled into [-1, 1]) at t = 1/2: the first step's z
  must be the posterior's draw for DDPM and DDIM with eta = 1; DDIM's mean is
  alpha_s x0 + sqrt(sigma_s^2 - c^2) eps_hat with c^2 = eta^2 times the posterior's
  variance (Song et al. 2021, eq. 12)."""
  schedule, c, z_t, n = _straight(), 0.3, 0.8, 200_000

  def denoise(z, logsnr):
    x0 = jnp.where(logsnr[:, None] < -3.0, c, 0.1 * z)
    return x0, jnp.zeros_like(z)  # the samplers use x0 only

  x = samplers.sample(denoise, jnp.full((n, 1), z_t), jax.random.PRNGKey(0), name=name,
                      steps=2, schedule=schedule, eta=eta)
  z_s = np.asarray(x)[:, 0] / 0.1
  mean, var = _posterior(z_t, c, -4.0, 0.0)
  if name == "ddim":
    a_t, s_t = np.sqrt(jax.nn.sigmoid(-4.0)), np.sqrt(jax.nn.sigmoid(4.0))
    eps_hat = (z_t - a_t * c) / s_t
    mean = np.sqrt(0.5) * c + np.sqrt(0.5 - eta**2 * var) * eps_hat
    var = eta**2 * var
  np.testing.assert_allclose(z_s.mean(), mean, atol=4e-3)
  np.testing.assert_allclose(z_s.var(), var, rtol=0.02, atol=1e-6)


@pytest.mark.parametrize("name,steps", [("ddpm", 4), ("ddim", 3), ("heun", 4)])
def test_the_samplers_call_the_denoiser_on_their_grids(name, steps):
  """DDPM and DDIM: uniform in t from 1, steps calls; Heun: EDM's rho = 7 grid of sigma =
  exp(-logsnr / 2) from the schedule's largest to its smallest, a second call at every
  step but the last (2 steps - 1 calls)."""
  schedule = D.logsnr_schedule("cosine")
  seen = []

  def denoise(z, logsnr):
    jax.debug.callback(lambda l: seen.append(float(np.asarray(l)[0])), logsnr)
    return jnp.zeros_like(z), z
  samplers.sample(denoise, jnp.ones((1, 1)), jax.random.PRNGKey(0), name=name, steps=steps,
                  schedule=schedule)
  jax.effects_barrier()
  assert len(seen) == samplers.nfe(name, steps)
  if name != "heun":
    np.testing.assert_allclose(seen, schedule(1.0 - jnp.arange(steps) / steps), rtol=1e-5)
    return
  s_max, s_min = np.exp(-0.5 * float(schedule(1.0))), np.exp(-0.5 * float(schedule(0.0)))
  i = np.arange(steps) / (steps - 1)
  sigmas = (s_max**(1 / 7) + i * (s_min**(1 / 7) - s_max**(1 / 7)))**7
  want = [sigmas[0]] + [s for s in sigmas[1:] for _ in range(2)]  # Euler at s_i, then s_{i+1}
  np.testing.assert_allclose(np.exp(-0.5 * np.array(seen)), want, rtol=1e-4)


def test_heun_solves_the_probability_flow_ode_of_gaussian_data_to_second_order():
  """x ~ N(0, s^2): D(x; sigma) = s^2 / (s^2 + sigma^2) x, so dx/dsigma = sigma x / (s^2 +
  sigma^2) and x(sigma) = x(sigma_max) sqrt((s^2 + sigma^2) / (s^2 + sigma_max^2)). Heun's
  error falls ~4-5x when the steps double (from 8 to 16: 0.125 to 0.024; Euler's would
  about halve)."""
  s = 0.5
  schedule = _straight(lo=-8.0, hi=8.0)

  def denoise(z, logsnr):
    alpha, sigma = D.alpha_sigma(logsnr[:, None])
    x = z / alpha
    sig2 = jnp.exp(-logsnr[:, None])
    return s**2 / (s**2 + sig2) * x, z  # x0_hat only is used

  errors = []
  for steps in (8, 16):
    sigmas = np.asarray(samplers.ode_grid(steps, schedule))
    # the sampler's last step goes to sigma = 0 (an Euler step: x = D(x; sigma_last)); the
    # exact D there is s^2 / (s^2 + sigma_last^2) x(sigma_last)
    x = samplers.sample(denoise, jnp.ones((1, 1)), jax.random.PRNGKey(0), name="heun",
                        steps=steps, schedule=schedule)
    exact_last = sigmas[0] * np.sqrt((s**2 + sigmas[-2]**2) / (s**2 + sigmas[0]**2))
    want = s**2 / (s**2 + sigmas[-2]**2) * exact_last
    errors.append(abs(float(x[0, 0]) - want))
  assert errors[1] < 0.05 and 3.0 < errors[0] / errors[1] < 7.0, errors


def test_training_draws_one_noise_level_per_image_uniform_in_t():
  """On the straight schedule t = (4 - logsnr) / 8: uniform on [0, 1] (mean 1/2, variance
  1/12), one level per image."""
  seen = []
  predict = lambda z, logsnr: seen.append(logsnr) or jnp.zeros_like(z)
  D.diffusion_loss(predict, jnp.zeros((100_000, 1, 1, 1)), jax.random.PRNGKey(4),
                   levels=D.noise_levels("uniform_t", _straight()),
                   formulation=D.formulation("eps"), weighting="eps_mse")
  t = (4.0 - np.asarray(seen[0])) / 8.0
  assert t.shape == (100_000,) and 0 <= t.min() and t.max() <= 1
  np.testing.assert_allclose([t.mean(), t.var()], [0.5, 1 / 12], atol=0.003)


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_the_samplers_clip_the_denoisers_x0_to_the_encoders_range(name):
  """A denoiser that says x0 = 3 everywhere: every sampler's images are 1, the top of the
  pixels' range (DDPM and DDIM clip each step's x0, Euler and Heun their output), and 3
  where the encoder does not clip (clip=None, as a latent space's)."""
  denoise = lambda z, logsnr: (jnp.full_like(z, 3.0), z)
  kw = dict(name=name, steps=3, schedule=D.logsnr_schedule("cosine"))
  x = samplers.sample(denoise, jnp.zeros((2, 1)), jax.random.PRNGKey(0), **kw)
  np.testing.assert_array_equal(x, 1.0)
  assert encoders.Pixels.clip == (-1.0, 1.0)
  x = samplers.sample(denoise, jnp.zeros((2, 1)), jax.random.PRNGKey(0), clip=None, **kw)
  np.testing.assert_allclose(x, 3.0, rtol=1e-5)


def test_the_pixel_encoder_refuses_other_data_and_quantizes_samples():
  from experiments import ddpm_mnist
  c = ddpm_mnist.get_config("runlocal")
  pixels = encoders.build_encoder(c)
  assert pixels.shape == (28, 28, 1) and pixels.has_bound
  x = np.array([-1.2, -1.0, 0.0, 0.003, 0.999, 1.5], np.float32).reshape(1, 1, 6, 1)
  got = pixels.to_images(x).ravel()
  np.testing.assert_allclose(got, np.round((np.clip(x.ravel(), -1, 1) + 1) * 127.5) / 127.5 - 1,
                             atol=1e-6)
  c.data.preprocess = "unit"
  with pytest.raises(ValueError, match="must be 'symmetric'"):
    encoders.build_encoder(c)


# --- the formulations (flow matching, EDM) and the ODE samplers in their variables ---------
def _gaussian_x0(s):
  """The optimal denoiser's x0 for data x ~ N(0, s^2) per pixel, at the VP z."""
  def x0(z, logsnr):
    alpha, sigma = D.alpha_sigma(D._expand(logsnr, z))
    return alpha * s**2 * z / (alpha**2 * s**2 + sigma**2)
  return x0


def _optimal_output(f, s):
  """The network output F of formulation f that makes the optimal Gaussian denoiser."""
  x0_of = _gaussian_x0(s)

  def predict(z, logsnr):
    alpha, sigma = D.alpha_sigma(D._expand(logsnr, z))
    x0 = x0_of(z, logsnr)
    return f.target(x0, (z - alpha * x0) / sigma, logsnr)
  return predict


@pytest.mark.parametrize("name", D.TARGETS)
def test_the_optimal_denoiser_minimizes_every_formulations_loss(name):
  """x ~ N(0, s^2): E[x | z] is the optimal denoiser, so its F is the minimum of the
  formulation's own loss (target_mse) and of the eps loss: scaling F by 1 +- 5% or
  shifting it raises both (s is not EDM's sigma_data, where the optimal F is 0)."""
  f, s = D.formulation(name), 0.4
  x = s * jax.random.normal(jax.random.PRNGKey(0), (50_000, 1, 1, 1))
  levels = D.noise_levels("log_normal", None, -1.0, 1.5)
  best = _optimal_output(f, s)
  for weighting in ("target_mse", "eps_mse"):
    loss = lambda predict: float(D.diffusion_loss(predict, x, jax.random.PRNGKey(1), levels=levels,
                                                  formulation=f, weighting=weighting)[0])
    at_best = loss(best)
    for scale, shift in ((1.05, 0.0), (0.95, 0.0), (1.0, 0.05)):
      assert loss(lambda z, l: scale * best(z, l) + shift) > at_best, (weighting, scale, shift)


@pytest.mark.parametrize("name", ["flow", "edm"])
@pytest.mark.parametrize("sampler,steps", [("euler", 200), ("heun", 40), ("ddim", 200)])
def test_each_formulations_samplers_reach_the_data_std_with_the_optimal_denoiser(name, sampler,
                                                                                 steps):
  """The optimal Gaussian denoiser through the formulation's output map, sampled in its
  own ODE variables (flow: t, uniform grid; EDM: sigma, rho = 7): samples of std s."""
  f, s = D.formulation(name), 0.3
  predict = _optimal_output(f, s)
  denoise = lambda z, logsnr: f.to_x0_eps(predict(z, logsnr), z, logsnr)
  noise = jax.random.normal(jax.random.PRNGKey(0), (20_000, 1))
  schedule = D.logsnr_schedule("flow" if name == "flow" else "edm")
  x = samplers.sample(denoise, noise, jax.random.PRNGKey(1), name=sampler, steps=steps,
                      schedule=schedule, ode=f.ode, rho=1.0 if name == "flow" else 7.0)
  assert abs(float(jnp.std(x)) / s - 1) < 0.03 and abs(float(jnp.mean(x))) < 0.01


@pytest.mark.parametrize("ode", samplers.ODES)
def test_heun_with_churn_keeps_the_data_std_and_draws_noise(ode):
  """EDM's stochastic sampler: with churn the optimal denoiser still gives std s, the
  samples depend on the rng, and churn = 0 is the deterministic sampler."""
  s = 0.3
  f = D.formulation("edm" if ode == "sigma" else "flow")
  predict = _optimal_output(f, s)
  denoise = lambda z, logsnr: f.to_x0_eps(predict(z, logsnr), z, logsnr)
  noise = jax.random.normal(jax.random.PRNGKey(0), (20_000, 1))
  run = lambda churn, seed: samplers.sample(
      denoise, noise, jax.random.PRNGKey(seed), name="heun", steps=40,
      schedule=D.logsnr_schedule("edm" if ode == "sigma" else "flow"), ode=ode, churn=churn)
  a, b = run(10.0, 1), run(10.0, 2)
  assert abs(float(jnp.std(a)) / s - 1) < 0.03
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(run(0.0, 1), run(0.0, 2))


def test_edm_preconditioning_gives_unit_variance_inputs_and_targets():
  """Data of std sigma_data: c_in makes the network's input, and c_skip / c_out its
  target, unit-variance at every noise level (Karras et al. 2022, Appendix B.6); c_noise
  is ln(sigma) / 4."""
  sd = 0.5
  f = D.formulation("edm", sigma_data=sd)
  kx, ke = jax.random.split(jax.random.PRNGKey(0))
  x = sd * jax.random.normal(kx, (200_000, 1))
  eps = jax.random.normal(ke, x.shape)
  for sigma in (0.01, 0.5, 5.0, 50.0):
    logsnr = jnp.full((len(x),), -2.0 * np.log(sigma))
    z = D.diffuse(x, logsnr, eps)
    np.testing.assert_allclose(float(jnp.var(f.network_input(z, logsnr))), 1.0, rtol=0.02)
    np.testing.assert_allclose(float(jnp.var(f.target(x, eps, logsnr))), 1.0, rtol=0.02)
    np.testing.assert_allclose(f.c_noise(logsnr[:1]), [np.log(sigma) / 4], rtol=1e-5, atol=1e-6)


def test_flow_input_is_the_straight_path_and_its_target_the_velocity():
  """The network sees (1 - t) x + t eps at the path's t; the target eps - x is its
  derivative in t (jax.jvp of the path); t = 0 is the data, t = 1 the noise."""
  f = D.formulation("flow")
  kx, ke = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.uniform(kx, (3, 4, 4, 1), minval=-1, maxval=1)
  eps = jax.random.normal(ke, x.shape)

  def path(t):
    logsnr = D.flow_logsnr(t)
    return f.network_input(D.diffuse(x, logsnr, eps), logsnr)
  t = jnp.array([0.2, 0.5, 0.9])
  np.testing.assert_allclose(path(t), (1 - t[:, None, None, None]) * x
                             + t[:, None, None, None] * eps, atol=1e-5)
  _, velocity = jax.jvp(path, (t,), (jnp.ones(3),))
  np.testing.assert_allclose(velocity, f.target(x, eps, jnp.zeros(3)), atol=1e-4)
  ends = D.logsnr_schedule("flow")(jnp.array([0.0, 1.0]))  # within the log-SNR range
  np.testing.assert_allclose(D.flow_time(ends), [0.0, 1.0], atol=3e-3)
  np.testing.assert_allclose(f.c_noise(ends), [0.0, 1000.0], atol=3.0)


def test_log_normal_noise_levels_and_their_elbo_weight():
  """ln(sigma / alpha) ~ N(m, s^2) (EDM's P_mean, P_std; on the flow path logit(t) is
  the same variable: SD3's logit-normal t); the "elbo" weight 1/2 |dlogsnr/du| / p(u)
  makes the mean of weight * g(logsnr) the integral of g / 2 over the log-SNR."""
  m, s = -1.2, 1.2
  levels = D.noise_levels("log_normal", None, m, s)
  u = levels.sample(jax.random.PRNGKey(0), 400_000)
  logsnr = levels.to_logsnr(u)
  ln_sigma = -0.5 * np.asarray(logsnr)
  np.testing.assert_allclose([ln_sigma.mean(), ln_sigma.std()], [m, s], atol=0.01)
  t = np.asarray(D.flow_time(logsnr))
  np.testing.assert_allclose(np.log(t / (1 - t)), ln_sigma, atol=1e-4)
  weight = -0.5 * D.dlogsnr_dt(levels.to_logsnr, u) / levels.density(u)
  inside = (logsnr > 0.0) & (logsnr < 4.0)
  np.testing.assert_allclose(float(jnp.mean(weight * inside)), 0.5 * 4.0, rtol=0.02)


@pytest.mark.parametrize("name", D.TARGETS)
def test_the_bound_is_tight_for_every_formulation_with_its_optimal_output(name):
  """The bound through the formulation's output map (the equivalent log-SNR denoiser): the
  optimal Gaussian F of any formulation gives the same diffusion term as the optimal eps."""
  s, n = 0.5, 100_000
  schedule = D.logsnr_schedule("cosine")
  kx, ku, ke = jax.random.split(jax.random.PRNGKey(3), 3)
  x = s * jax.random.normal(kx, (n, 1, 1, 1))
  u, eps = jax.random.uniform(ku, (n,)), jax.random.normal(ke, x.shape)
  term = lambda f: D.diffusion_term(_optimal_output(f, s), x, u, eps, schedule=schedule,
                                    formulation=f)
  np.testing.assert_allclose(term(D.formulation(name)), term(D.formulation("eps")), rtol=2e-3,
                             atol=2e-3)


@pytest.mark.parametrize("experiment,arg", [("flow_mnist", "dit,conditional,runlocal"),
                                            ("edm_mnist", "runlocal")])
def test_flow_and_edm_runlocal_end_to_end(experiment, arg, tmp_path):
  """Each new formulation trains through the one loop (flow with the DiT, conditional and
  guided; EDM with the U-Net and Heun), with its bound in bits/dim and its sample grid."""
  import importlib
  import os
  c = importlib.import_module(f"experiments.{experiment}").get_config(arg)
  c.experiment, c.experiment_arg = experiment, arg
  r = train.run(c, str(tmp_path))
  m = r["metrics"]
  assert 0 < m["test/bits_per_dim"] < 20 and np.isfinite(m["test/bits_per_dim_stderr"])
  np.testing.assert_allclose(m["test/nll"], m["test/prior"] + m["test/diffusion"] + m["test/decoder"],
                             rtol=1e-5)
  assert m["test/nfe"] == samplers.nfe(c.eval.sampler, c.eval.sample_steps)
  assert os.path.exists(tmp_path / "samples.png")
  assert r["config"]["diffusion"]["target"] == experiment.split("_")[0]
  assert r["config"]["model"]["name"] == ("dit" if "dit" in arg else "unet")
  assert np.isfinite(r["train_metrics"]["loss"])


@pytest.mark.parametrize("experiment", ["flow_cifar10", "edm_cifar10"])
def test_flow_and_edm_cifar10_runlocal_end_to_end_on_mock_data(experiment, tmp_path):
  import importlib
  import tensorflow_datasets as tfds
  c = importlib.import_module(f"experiments.{experiment}").get_config("runlocal")
  c.experiment, c.experiment_arg = experiment, "runlocal"
  c.eval.num_examples = 16
  with tfds.testing.mock_data(num_examples=64):
    r = train.run(c, str(tmp_path))
  assert np.isfinite(r["metrics"]["test/bits_per_dim"]) and r["metrics"]["test/nfe"] > 0
