"""The mutation check: plausible bugs in the mathematics, put in one at a time, each of
which the tests must catch.

  python tests/mutations.py            # every mutation; ends "caught N / N"
  python tests/mutations.py --only guidance   # those whose description has "guidance"
  python tests/mutations.py --list

Each mutation replaces one exact piece of a source file (it must occur there once) and
runs the test files that guard it (fast unit tests, stopping at the first failure), in a
copy of the tracked tree beside the project (so that ../shared resolves as it does
here); the copy is removed at the end. A mutation is caught when a test fails, missed
when all pass; a copy that does not even import counts as neither (the mutation is
wrong, not the tests). Not part of CI: it runs the tests once per mutation. A new
family adds its own mutations here, beside the tests that catch them.
"""
import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
  what: str
  file: str
  old: str
  new: str
  tests: tuple  # pytest arguments: files, node ids, -k expressions


def _m(what, file, old, new, tests):
  return Mutation(what, file, old, new, tuple(tests))


DIFF_OBJ = "genimg_jax/objectives/diffusion.py"
SAMPLERS = "genimg_jax/samplers.py"
DIFF_TASK = "genimg_jax/tasks/diffusion.py"
GAN_OBJ = "genimg_jax/objectives/gan.py"
GAN_TASK = "genimg_jax/tasks/gan.py"
VAE_OBJ = "genimg_jax/objectives/vae.py"
QUALITY = "genimg_jax/metrics/sample_quality.py"
SCORES = "genimg_jax/metrics/scores.py"
MF_OBJ = "genimg_jax/objectives/meanflow.py"
PD_OBJ = "genimg_jax/objectives/distillation.py"

# The diffusion unit tests (not the end-to-end run, not the 1-vs-4-device comparison).
T_DIFF = ("tests/test_diffusion.py", "-k", "not end_to_end and not devices")
T_GAN_OBJ = ("tests/test_gan_objectives.py",)
T_GAN_STEP = ("tests/test_gan.py", "-k", "penalty")
T_VAE = ("tests/test_vae_objectives.py",)
T_METRICS = ("tests/test_metrics.py",)
T_MF = ("tests/test_meanflow.py", "-k", "not end_to_end and not refuses")
T_PD = ("tests/test_distill.py", "-k", "not task and not runlocal")

MUTATIONS = [
    # --- diffusion: schedules, forward process, targets ---------------------------------
    _m("cosine schedule: log SNR = -log tan (not -2 log tan)", DIFF_OBJ,
       "-2.0 * jnp.log(jnp.tan(", "-1.0 * jnp.log(jnp.tan(", T_DIFF),
    _m("linear schedule: the t^2 term without its 1/2", DIFF_OBJ,
       "0.5 * (_B1 - _B0) * t**2", "(_B1 - _B0) * t**2", T_DIFF),
    _m("sigma^2 = 1 - alpha (not 1 - alpha^2)", DIFF_OBJ,
       "jnp.sqrt(jax.nn.sigmoid(-logsnr))", "jnp.sqrt(1.0 - jnp.sqrt(jax.nn.sigmoid(logsnr)))",
       T_DIFF),
    _m("forward process: sigma^2 eps (not sigma eps)", DIFF_OBJ,
       "return alpha * x + sigma * eps", "return alpha * x + sigma**2 * eps", T_DIFF),
    _m("v target: alpha eps + sigma x", DIFF_OBJ,
       "return alpha * eps - sigma * x", "return alpha * eps + sigma * x", T_DIFF),
    _m("eps prediction -> x0 without dividing by alpha", DIFF_OBJ,
       "return (z - sigma * prediction) / alpha, prediction",
       "return z - sigma * prediction, prediction", T_DIFF),
    _m("v prediction -> x0 with the wrong sign", DIFF_OBJ,
       "return alpha * z - sigma * prediction, sigma * z + alpha * prediction",
       "return alpha * z + sigma * prediction, sigma * z + alpha * prediction", T_DIFF),
    # --- diffusion: the training loss ----------------------------------------------------
    _m("training t ~ U(0, 1/2)", DIFF_OBJ,
       "return jax.random.uniform(rng, (n,))",
       "return jax.random.uniform(rng, (n,), maxval=0.5)", T_DIFF),
    _m("'elbo' weighting with the wrong sign", DIFF_OBJ,
       "per_image = -0.5 * dlogsnr_dt(levels.to_logsnr, u)",
       "per_image = 0.5 * dlogsnr_dt(levels.to_logsnr, u)", T_DIFF),
    _m("'elbo' weighting without its 1/2", DIFF_OBJ,
       "per_image = -0.5 * dlogsnr_dt(levels.to_logsnr, u)",
       "per_image = -dlogsnr_dt(levels.to_logsnr, u)", T_DIFF),
    _m("'v_mse' of a v network against the eps target", DIFF_OBJ,
       "v_error = prediction - v_target(x, eps, logsnr)",
       "v_error = prediction - eps", T_DIFF),
    _m("'v_mse' of other targets: the true v from x0_hat", DIFF_OBJ,
       "v_error = v_target(x0_hat, eps_hat, logsnr) - v_target(x, eps, logsnr)",
       "v_error = v_target(x0_hat, eps_hat, logsnr) - v_target(x0_hat, eps, logsnr)", T_DIFF),
    # --- diffusion: the bound --------------------------------------------------------------
    _m("prior KL without its -log sigma_1^2 term", DIFF_OBJ,
       "sigma1**2 - 1.0 - jnp.log(sigma1**2))", "sigma1**2 - 1.0)", T_DIFF),
    _m("prior KL with alpha_1 for alpha_1^2", DIFF_OBJ,
       "alpha1**2 * x**2", "alpha1 * x**2", T_DIFF),
    _m("diffusion term without its 1/2", DIFF_OBJ,
       "return 0.5 * (hi - lo) * _sum_pixels", "return (hi - lo) * _sum_pixels", T_DIFF),
    _m("diffusion term sampled over half the log-SNR range", DIFF_OBJ,
       "logsnr = lo + u * (hi - lo)", "logsnr = lo + u * (hi - lo) / 2", T_DIFF),
    _m("decoder std exp(-logsnr) (not exp(-logsnr / 2))", DIFF_OBJ,
       "scale = jnp.exp(-0.5 * logsnr0)", "scale = jnp.exp(-logsnr0)", T_DIFF),
    _m("decoder bins: x * 256 (not 255)", DIFF_OBJ,
       "(x + 1.0) / 2.0 * (num_bins - 1)", "(x + 1.0) / 2.0 * num_bins", T_DIFF),
    _m("the bound leaves out the decoder", DIFF_OBJ,
       '"nll": prior + diffusion + decoder}', '"nll": prior + diffusion}', T_DIFF),
    # --- samplers ------------------------------------------------------------------------
    _m("DDPM with the forward step's variance (not the posterior's)", SAMPLERS,
       "var = var_ts * sigma_s**2 / sigma_t**2", "var = var_ts", T_DIFF),
    _m("DDPM posterior mean: x0 weight over sigma_t (not sigma_t^2)", SAMPLERS,
       "alpha_s * var_ts / sigma_t**2 * x0", "alpha_s * var_ts / sigma_t * x0", T_DIFF),
    _m("DDPM posterior mean: z weight without alpha_{t|s}", SAMPLERS,
       "mean = alpha_ts * sigma_s**2 / sigma_t**2 * z", "mean = sigma_s**2 / sigma_t**2 * z",
       T_DIFF),
    _m("DDIM noise c^2 = eta var (not eta^2 var)", SAMPLERS,
       "c2 = eta**2 * var", "c2 = eta * var", T_DIFF),
    _m("DDIM direction sigma_s eps_hat whatever eta", SAMPLERS,
       "jnp.sqrt(jnp.maximum(sigma_s**2 - c2, 0.0)) * eps", "sigma_s * eps", T_DIFF),
    _m("DDPM/DDIM time grid off by a step", SAMPLERS,
       "t = 1.0 - i / steps", "t = 1.0 - i / (steps + 1)", T_DIFF),
    _m("samplers without the x0 clip", SAMPLERS,
       "return x if clip is None else jnp.clip(x, *clip)", "return x", T_DIFF),
    _m("Heun's grid with rho = 3", SAMPLERS, "EDM_RHO = 7.0", "EDM_RHO = 3.0", T_DIFF),
    _m("Heun starts at the noise, not sigma_max times it", SAMPLERS,
       "step, taus[0] * noise)", "step, noise)", T_DIFF),
    _m("Heun's correction without its 1/2", SAMPLERS,
       "(s_next - s_i) * 0.5 * (d + d2)", "(s_next - s_i) * (d + d2)", T_DIFF),
    _m("Heun's second slope at x (not at the Euler point)", SAMPLERS,
       "d2 = (x_euler - d_of(x_euler, s_next)) / s_next", "d2 = (x - d_of(x, s_next)) / s_next",
       T_DIFF),
    _m("Heun never corrects (Euler)", SAMPLERS,
       "jax.lax.cond(s_next > 0, correct,", "jax.lax.cond(s_next < 0, correct,", T_DIFF),
    _m("Heun's NFE counted as 2 steps", SAMPLERS,
       "return 2 * steps - 1 if", "return 2 * steps if", T_DIFF),
    # --- formulations: flow matching and EDM ---------------------------------------------
    _m("formulation flow: x0 = z_t + t v (wrong sign)", DIFF_OBJ,
       "return z_t - t * prediction, z_t + (1.0 - t) * prediction",
       "return z_t + t * prediction, z_t + (1.0 - t) * prediction", T_DIFF),
    _m("formulation flow: target x - eps", DIFF_OBJ,
       "lambda x, eps, logsnr: eps - x, network_input", "lambda x, eps, logsnr: x - eps, network_input",
       T_DIFF),
    _m("formulation flow: the network sees the VP z (no 1 / (alpha + sigma))", DIFF_OBJ,
       "return z / (alpha + sigma)", "return z", T_DIFF),
    _m("formulation flow: t = alpha / (alpha + sigma)", DIFF_OBJ,
       "return jax.nn.sigmoid(-0.5 * logsnr)", "return jax.nn.sigmoid(0.5 * logsnr)", T_DIFF),
    _m("formulation edm: c_skip = sigma_data / (s^2 + sigma_data^2)", DIFF_OBJ,
       "return sd2 / (s2 + sd2), jnp.sqrt(s2)", "return sigma_data / (s2 + sd2), jnp.sqrt(s2)",
       T_DIFF),
    _m("formulation edm: c_out without sigma_data", DIFF_OBJ,
       "jnp.sqrt(s2) * sigma_data * jax.lax.rsqrt(s2 + sd2)", "jnp.sqrt(s2) * jax.lax.rsqrt(s2 + sd2)",
       T_DIFF),
    _m("formulation edm: c_in = 1 / (s^2 + sigma_data^2)", DIFF_OBJ,
       "return z / alpha * jax.lax.rsqrt(s2 + sd2)", "return z / alpha / (s2 + sd2)", T_DIFF),
    _m("formulation edm: c_noise = ln(sigma) / 2", DIFF_OBJ,
       "lambda logsnr: -0.125 * logsnr", "lambda logsnr: -0.25 * logsnr", T_DIFF),
    _m("log-normal noise levels: ln sigma with mean -m", DIFF_OBJ,
       "jnp.clip(-2.0 * (mean + std * u)", "jnp.clip(-2.0 * (-mean + std * u)", T_DIFF),
    _m("log-normal noise levels: the elbo weight without the base density", DIFF_OBJ,
       "return jnp.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)", "return 1.0", T_DIFF),
    _m("ODE in t: the VP z is y (no alpha + sigma)", SAMPLERS,
       "return denoise((alpha + sigma) * y, logsnr)[0]", "return denoise(y, logsnr)[0]", T_DIFF),
    _m("churn: fresh noise without the rise of tau", SAMPLERS,
       "jnp.sqrt(jnp.maximum(s_hat**2 - (shrink * s_i)**2, 0.0)) * fresh",
       "jnp.sqrt(jnp.maximum(s_hat**2, 0.0)) * fresh", T_DIFF),
    _m("Euler/Heun grid: rho ignored (uniform in tau)", SAMPLERS,
       "taus = (tau_max**(1 / rho) + i * (tau_min**(1 / rho) - tau_max**(1 / rho)))**rho",
       "taus = tau_max + i * (tau_min - tau_max)", T_DIFF),
    # --- classifier-free guidance --------------------------------------------------------
    _m("guidance: + w eps_uncond", DIFF_TASK,
       "eps = (1.0 + guidance) * eps_c - guidance * eps_u",
       "eps = (1.0 + guidance) * eps_c + guidance * eps_u", T_DIFF),
    _m("guidance: the 1 of (1 + w) dropped", DIFF_TASK,
       "eps = (1.0 + guidance) * eps_c - guidance * eps_u",
       "eps = guidance * eps_c - guidance * eps_u", T_DIFF),
    _m("guidance: conditional and unconditional halves swapped", DIFF_TASK,
       "jnp.concatenate([labels, self.null_labels(len(labels))])",
       "jnp.concatenate([self.null_labels(len(labels)), labels])", T_DIFF),
    _m("guidance: x0 from the conditional eps, not the guided one", DIFF_TASK,
       "return (z - sigma * eps) / alpha, eps", "return (z - sigma * eps_c) / alpha, eps", T_DIFF),
    _m("label dropout inverted (the null class 1 - p of the time)", DIFF_TASK,
       "jnp.where(drop, self.config.model.num_classes, labels)",
       "jnp.where(drop, labels, self.config.model.num_classes)", T_DIFF),
    # --- GAN losses and penalties --------------------------------------------------------
    _m("minimax D loss: softplus(d_real)", GAN_OBJ,
       "jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))",
       "jnp.mean(jax.nn.softplus(d_real)) + jnp.mean(jax.nn.softplus(d_fake))", T_GAN_OBJ),
    _m("non-saturating G loss: softplus(d_fake)", GAN_OBJ,
       '"""-log D(G(z))."""\n  return jnp.mean(jax.nn.softplus(-d_fake))',
       '"""-log D(G(z))."""\n  return jnp.mean(jax.nn.softplus(d_fake))', T_GAN_OBJ),
    _m("hinge D loss: relu(1 - d_fake)", GAN_OBJ,
       "jax.nn.relu(1.0 + d_fake)", "jax.nn.relu(1.0 - d_fake)", T_GAN_OBJ),
    _m("Wasserstein critic loss with the wrong sign", GAN_OBJ,
       "return jnp.mean(d_fake) - jnp.mean(d_real)", "return jnp.mean(d_real) - jnp.mean(d_fake)",
       T_GAN_OBJ),
    _m("Wasserstein G with the non-saturating loss", GAN_OBJ,
       '"wasserstein": (wasserstein_d_loss, hinge_g_loss)',
       '"wasserstein": (wasserstein_d_loss, non_saturating_g_loss)', T_GAN_OBJ),
    _m("least squares D: fakes pushed to -1", GAN_OBJ,
       "0.5 * jnp.mean(d_fake**2)", "0.5 * jnp.mean((d_fake + 1.0)**2)", T_GAN_OBJ),
    _m("WGAN-GP interpolate eps real + eps fake", GAN_OBJ,
       "x_hat = eps * real + (1.0 - eps) * fake", "x_hat = eps * real + eps * fake", T_GAN_OBJ),
    _m("WGAN-GP: one eps for the whole batch", GAN_OBJ,
       "eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))",
       "eps = jax.random.uniform(rng, (1,) * real.ndim)", T_GAN_OBJ),
    _m("DRAGAN perturbation without the data's std", GAN_OBJ,
       "x_hat = real + c * jnp.std(real) * u", "x_hat = real + c * u", T_GAN_OBJ),
    _m("R1 on the fakes", GAN_OBJ,
       "return jnp.mean(_grad_sq_norm(d_fn, real))", "return jnp.mean(_grad_sq_norm(d_fn, fake))",
       T_GAN_OBJ),
    _m("gradient norm as an L1 norm", GAN_OBJ,
       "jnp.sum(grads.reshape(grads.shape[0], -1)**2, axis=-1)",
       "jnp.sum(jnp.abs(grads.reshape(grads.shape[0], -1)), axis=-1)", T_GAN_OBJ),
    _m("the GAN task drops the penalty weight", GAN_TASK,
       "loss = loss + g.penalty_weight * g.penalty_every * pen", "loss = loss + pen", T_GAN_STEP),
    _m("a lazy penalty without its weight k", GAN_TASK,
       "g.penalty_weight * g.penalty_every * pen", "g.penalty_weight * pen",
       ("tests/test_stylegan_biggan.py", "-k", "lazy")),
    _m("path length: a lazy penalty without its weight k", GAN_TASK,
       "return g.pl_weight * g.pl_every * pen, pen, new_mean", "return g.pl_weight * pen, pen, new_mean",
       ("tests/test_stylegan_biggan.py", "-k", "path_length")),
    _m("path length: the running mean differentiated", GAN_OBJ,
       "new_mean = jax.lax.stop_gradient(pl_mean + decay * (jnp.mean(lengths) - pl_mean))",
       "new_mean = pl_mean + decay * (jnp.mean(lengths) - pl_mean)", T_GAN_OBJ),
    _m("path length: the squares averaged over w's width", GAN_OBJ,
       "jnp.mean(jnp.sum(grads ** 2, axis=2), axis=1)", "jnp.mean(grads ** 2, axis=(1, 2))",
       T_GAN_OBJ),
    # --- VAE objectives ------------------------------------------------------------------
    _m("Gaussian KL without -log var", VAE_OBJ,
       "jnp.exp(logvar) + mean**2 - 1.0 - logvar", "jnp.exp(logvar) + mean**2 - 1.0", T_VAE),
    _m("reparameterization with exp(logvar) as the std", VAE_OBJ,
       "z = mean + jnp.exp(0.5 * logvar) * jax.random.normal", "z = mean + jnp.exp(logvar) * jax.random.normal",
       T_VAE),
    _m("beta-ELBO: beta on the reconstruction", VAE_OBJ,
       "loss = jnp.mean(rec + beta * kl)", "loss = jnp.mean(beta * rec + kl)", T_VAE),
    _m("Bernoulli log-likelihood: + softplus(logits)", VAE_OBJ,
       "x * logits - softplus(logits)", "x * logits + softplus(-logits)", T_VAE),
    _m("Gaussian log-likelihood: log sigma (not 2 log sigma)", VAE_OBJ,
       "LOG_2PI + 2 * log_scale + ((x - mean)", "LOG_2PI + log_scale + ((x - mean)", T_VAE),
    _m("IWAE bound without -log k", VAE_OBJ,
       "return m + jnp.log(s) - jnp.log(k)", "return m + jnp.log(s)", T_VAE),
    # --- sample metrics ------------------------------------------------------------------
    _m("FD: - Tr sqrt(S1 S2) (not - 2 Tr)", QUALITY,
       "- 2.0 * np.trace(covmean)", "- np.trace(covmean)", T_METRICS),
    _m("KID: a quadratic kernel", QUALITY,
       "kxy = (x @ y.T / d + 1.0)**3", "kxy = (x @ y.T / d + 1.0)**2", T_METRICS),
    _m("KID: the biased MMD (diagonal kept)", QUALITY,
       "(kxx.sum() - np.trace(kxx)) / (m * (m - 1))", "kxx.sum() / (m * m)", T_METRICS),
    _m("k-NN radius: the (k-1)-th neighbour", QUALITY,
       "np.partition(d, k, axis=1)[:, k]", "np.partition(d, k - 1, axis=1)[:, k - 1]", T_METRICS),
    _m("manifold balls open (< radius)", QUALITY,
       "(d <= ref_radii[None, :])", "(d < ref_radii[None, :])", T_METRICS),
    _m("precision and recall swapped", QUALITY,
       "precision = _coverage(fake, real, _knn_radii(real, k))",
       "precision = _coverage(real, fake, _knn_radii(fake, k))", T_METRICS),
    _m("Inception Score over one split whatever splits says", QUALITY,
       "for part in np.array_split(p, splits):", "for part in [p]:", T_METRICS),
    _m("the scores ignore metrics.pr_k", SCORES,
       "precision_recall(real_feats, fake_feats, m.pr_k)",
       "precision_recall(real_feats, fake_feats)", T_METRICS),
    _m("the scores ignore metrics.kid_subsets", SCORES,
       "kernel_inception_distance(real_feats, fake_feats, m.kid_subsets,",
       "kernel_inception_distance(real_feats, fake_feats, 100,", T_METRICS),
    # --- few-step generators: MeanFlow, progressive distillation ------------------------
    _m("MeanFlow: the jvp's tangent in r, not in t", MF_OBJ,
       "(v, jnp.zeros_like(r), jnp.ones_like(t))", "(v, jnp.ones_like(r), jnp.zeros_like(t))",
       T_MF),
    _m("MeanFlow: target v + (t - r) du/dt", MF_OBJ,
       "return u, v - _expand(t - r, z) * dudt", "return u, v + _expand(t - r, z) * dudt", T_MF),
    _m("MeanFlow sampler: u(z, t, r) (r and t swapped)", MF_OBJ,
       "u_fn(z, jnp.full((n,), r), jnp.full((n,), t))",
       "u_fn(z, jnp.full((n,), t), jnp.full((n,), r))", T_MF),
    _m("distillation: the teacher's middle step at t - 1/N", PD_OBJ,
       "schedule(t - 0.5 * dt)", "schedule(t - dt)", T_PD),
    _m("distillation: x~ without the alpha_t correction", PD_OBJ,
       "(alpha_s - ratio * alpha_t)", "alpha_s", T_PD),
    _m("distillation: weight min(snr, 1) (not max)", PD_OBJ,
       "jnp.maximum(jnp.exp(logsnr), 1.0)", "jnp.minimum(jnp.exp(logsnr), 1.0)", T_PD),
    _m("distillation: student times on {0, ..., (N-1)/N}", PD_OBJ,
       "jax.random.randint(rng, (n,), 1, student_steps + 1)",
       "jax.random.randint(rng, (n,), 0, student_steps)", T_PD),
    # --- the autoencoder's feature term ---------------------------------------------------
    _m("feature term: the reconstruction's features against themselves", "genimg_jax/objectives/autoencoder.py",
       "return jnp.mean((features(xr) - features(x))**2)", "return jnp.mean((features(xr) - features(xr))**2)",
       ["tests/test_autoencoder.py", "-k", "feature_term"]),
    _m("feature term: its weight left out", "genimg_jax/objectives/autoencoder.py",
       "    terms = dict(terms, features=feature_distance(features, x, xr))",
       "    stats = dict(stats, features=feature_distance(features, x, xr))",
       ["tests/test_autoencoder.py", "-k", "feature_term"]),
    _m("adversarial term: weighted before its warm-up ends", "genimg_jax/tasks/autoencoder.py",
       'adversarial=jnp.where(on, self.weights["adversarial"], 0.0)),',
       'adversarial=self.weights["adversarial"]),',
       ["tests/test_autoencoder.py", "-k", "adversarial"]),
    _m("adversarial term: the discriminator trains during the warm-up", "genimg_jax/tasks/autoencoder.py",
       "jax.tree.map(lambda new, old: jnp.where(on, new, old),",
       "jax.tree.map(lambda new, old: new,",
       ["tests/test_autoencoder.py", "-k", "adversarial"]),
    _m("adversarial term: the discriminator's fakes are not the reconstructions",
       "genimg_jax/tasks/autoencoder.py",
       "fake = jax.lax.stop_gradient(xr)", "fake = -xr",
       ["tests/test_autoencoder.py", "-k", "adversarial"]),
    # --- MaskGIT ----------------------------------------------------------------------------
    _m("maskgit: a linear masking schedule", "genimg_jax/objectives/maskgit.py",
       "return jnp.cos(jnp.pi / 2.0 * u)", "return 1.0 - u",
       ["tests/test_maskgit.py", "-k", "schedule or decoding"]),
    _m("maskgit: the loss over every position", "genimg_jax/objectives/maskgit.py",
       "return jnp.sum(ce * m) / count, accuracy", "return jnp.mean(ce), accuracy",
       ["tests/test_maskgit.py", "-k", "cross_entropy"]),
    _m("maskgit: a fixed token may be masked again", "genimg_jax/objectives/maskgit.py",
       "confidence = jnp.where(masked, confidence, jnp.inf)", "confidence = confidence",
       ["tests/test_maskgit.py", "-k", "decoding"]),
    _m("maskgit: the decoding schedule one step late", "genimg_jax/objectives/maskgit.py",
       "mask_ratio((t + 1.0) / steps)", "mask_ratio(t / steps)",
       ["tests/test_maskgit.py", "-k", "decoding"]),
    _m("maskgit: the least confident samples kept", "genimg_jax/objectives/maskgit.py",
       "return jnp.where(rank < keep_masked, mask_id, sampled), rng",
       "return jnp.where(rank >= length - keep_masked, mask_id, sampled), rng",
       ["tests/test_maskgit.py", "-k", "decoding"]),
    # --- the input pipeline -------------------------------------------------------------
    _m("kept splits: a changed file served from memory", "genimg_jax/data.py",
       "return tuple((p, s.st_size, s.st_mtime_ns) for p, s in zip(paths, stats)) + (split, limit)",
       "return tuple(paths) + (split, limit)",
       ["tests/test_data.py", "-k", "read_once"]),
    # --- the train step's guard ----------------------------------------------------------
    _m("all_finite: any finite leaf counts as all", "genimg_jax/state.py",
       "return flags @ flags == flags.shape[0]", "return flags @ flags > 0",
       ["tests/test_train.py", "-k", "all_finite"]),
    _m("all_finite: a leaf's flag from its first element only", "genimg_jax/state.py",
       "jnp.all(jnp.isfinite(v)) for v in", "jnp.isfinite(jnp.ravel(v)[0]) for v in",
       ["tests/test_train.py", "-k", "all_finite"]),
    # --- the CPU forms' written gradients ------------------------------------------------
    _m("same_conv: the input gradient with the kernel unflipped", "genimg_jax/models/cpu_layers.py",
       "dx = same_conv(dy_BHWF, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))",
       "dx = same_conv(dy_BHWF, kernel.transpose(0, 1, 3, 2))", ["tests/test_cpu_layers.py"]),
    # --- text-to-image
    _m("T2I: cross-attention reads the padding", "genimg_jax/models/text.py",
       "logits = jnp.where(mask[:, None, None, :], logits, -1e9)", "logits = logits",
       ["tests/test_text_to_image.py", "-k", "cross_attention"]),
    _m("T2I: captions ignore the attribute levels", "genimg_jax/captions.py",
       "else levels[:, _SLOT_ATTRIBUTE[s]] for s in self.slots], 1)",
       "else 0 * levels[:, _SLOT_ATTRIBUTE[s]] for s in self.slots], 1)",
       ["tests/test_text_to_image.py", "-k", "captions_are"]),
    _m("T2I: slant's sign", "genimg_jax/captions.py",
       "slant = -mu11 / jnp.maximum(mu02, 1e-6)", "slant = mu11 / jnp.maximum(mu02, 1e-6)",
       ["tests/test_text_to_image.py", "-k", "measured"]),
    _m("T2I: dropped captions are not the empty caption", "genimg_jax/tasks/text_to_image.py",
       "return jnp.where(drop[:, None], 0, tokens)", "return tokens",
       ["tests/test_text_to_image.py", "-k", "empty_caption"]),
    _m("T2I: the bag encoders count the held-out filler words", "genimg_jax/tasks/text_to_image.py",
       "weights = self.captioner.training_words.astype(np.float64)",
       "weights = np.ones(self.captioner.vocab_size)",
       ["tests/test_text_to_image.py", "-k", "bag_encoders"]),
    # --- the autoencoder's bottlenecks
    _m("VQ: no straight-through gradient to the encoder", "genimg_jax/models/bottlenecks.py",
       "return z + jax.lax.stop_gradient(q - z)", "return q",
       ["tests/test_autoencoder.py", "-k", "straight_through or fsq"]),
    _m("VQ: EMA codebook without the decay on the counts", "genimg_jax/models/bottlenecks.py",
       "cluster_size = decay * cluster_size + (1 - decay) * onehot_NK.sum(0)",
       "cluster_size = cluster_size + (1 - decay) * onehot_NK.sum(0)",
       ["tests/test_autoencoder.py", "-k", "ema_codebook"]),
    _m("VQ: dead codes never restarted", "genimg_jax/models/bottlenecks.py",
       "dead = size < self.restart_below", "dead = size < 0.0",
       ["tests/test_autoencoder.py", "-k", "dead_code"]),
    _m("FSQ: even levels not shifted", "genimg_jax/models/bottlenecks.py",
       "offset = jnp.where(jnp.asarray(self.levels) % 2 == 1, 0.0, 0.5)",
       "offset = jnp.zeros(len(self.levels))", ["tests/test_autoencoder.py", "-k", "fsq"]),
    _m("KL latent: the log-variance's sign", "genimg_jax/models/bottlenecks.py",
       "kl = 0.5 * (mean**2 + jnp.exp(logvar) - 1.0 - logvar)",
       "kl = 0.5 * (mean**2 + jnp.exp(logvar) - 1.0 + logvar)",
       ["tests/test_autoencoder.py", "-k", "kl_latent"]),
]


def check_applies(mutation, root=ROOT):
  """The mutated text of mutation.file; raises ValueError unless `old` occurs exactly once."""
  with open(os.path.join(root, mutation.file)) as f:
    text = f.read()
  if text.count(mutation.old) != 1:
    raise ValueError(f"Mutation {mutation.what!r}: {mutation.old!r} occurs "
                     f"{text.count(mutation.old)} times in {mutation.file} (must be once); "
                     "update the mutation with the code.")
  return text.replace(mutation.old, mutation.new)


def _copy_tree(dst):
  listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.splitlines()
  for rel in listed:
    src = os.path.join(ROOT, rel)
    if os.path.isfile(src):
      os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
      shutil.copy2(src, os.path.join(dst, rel))


def run_one(mutation, tree, timeout):
  """'caught', 'missed' or 'broken' (the mutated copy did not run its tests)."""
  mutated = check_applies(mutation, tree)
  path = os.path.join(tree, mutation.file)
  with open(path) as f:
    original = f.read()
  with open(path, "w") as f:
    f.write(mutated)
  env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # no stale bytecode of the original
  try:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           *mutation.tests], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return {0: "missed", 1: "caught"}.get(proc.returncode, "broken"), proc.stdout[-2000:]
  except subprocess.TimeoutExpired:
    return "broken", f"timed out after {timeout} s"
  finally:
    with open(path, "w") as f:
      f.write(original)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", default="", help="mutations whose description contains this")
  parser.add_argument("--list", action="store_true", help="list the mutations and stop")
  parser.add_argument("--timeout", type=int, default=900, help="seconds per mutation")
  args = parser.parse_args()
  chosen = [m for m in MUTATIONS if args.only.lower() in m.what.lower()]
  for m in chosen:
    check_applies(m)
  if args.list:
    for m in chosen:
      print(f"{m.file}: {m.what}")
    return 0
  tree = tempfile.mkdtemp(prefix=".mutations-", dir=os.path.dirname(ROOT))
  counts = {"caught": 0, "missed": 0, "broken": 0}
  start = time.time()
  try:
    _copy_tree(tree)
    for i, m in enumerate(chosen, 1):
      t0 = time.time()
      verdict, out = run_one(m, tree, args.timeout)
      counts[verdict] += 1
      print(f"[{i}/{len(chosen)}] {verdict:6s} {time.time() - t0:5.0f} s  {m.file}: {m.what}",
            flush=True)
      if verdict != "caught":
        print("    " + "\n    ".join(out.strip().splitlines()[-5:]), flush=True)
  finally:
    shutil.rmtree(tree, ignore_errors=True)
  print(f"caught {counts['caught']} / {len(chosen)} mutations (missed {counts['missed']}, "
        f"broken {counts['broken']}) in {(time.time() - start) / 60:.1f} min")
  return 0 if counts["caught"] == len(chosen) else 1


if __name__ == "__main__":
  sys.exit(main())
