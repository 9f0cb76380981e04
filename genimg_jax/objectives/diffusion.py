"""Gaussian diffusion as pure functions: schedules, the forward process, prediction targets,
losses, and the variational bound on 8-bit data in bits/dim.

Time t runs over [0, 1]. A schedule is its log signal-to-noise ratio logsnr(t), decreasing
from logsnr(0) = LOGSNR_MAX to logsnr(1) = LOGSNR_MIN; then alpha_t^2 = sigmoid(logsnr)
and sigma_t^2 = sigmoid(-logsnr) (variance preserving), and z_t = alpha_t x + sigma_t eps.
Discrete-time models (DDPM's T steps) are the same functions at t = i / T, so one code
serves both (Kingma et al. 2021, "Variational Diffusion Models", VDM).

* schedules: "cosine" (Nichol & Dhariwal 2021, as log-SNR: -2 log tan(pi t / 2), its t
  range clipped to [LOGSNR_MIN, LOGSNR_MAX]) and "linear" (DDPM's betas from 1e-4 to 0.02
  over 1000 steps, as the continuous VP SDE of Song et al. 2021: log alpha_bar(t) =
  -(b0 t + (b1 - b0) t^2 / 2) with b0 = 0.1, b1 = 20).
* targets: the network predicts eps, x0 or v = alpha eps - sigma x0 (Salimans & Ho
  2022); `to_x0_eps` converts any of them (inverses of each other; tested).
* losses (`loss_weighting`): "eps_mse" (DDPM's L_simple: the mean squared eps error),
  "v_mse" (the mean squared v error) and "elbo" (VDM's continuous-time diffusion term,
  -dlogsnr/dt / 2 * ||eps - eps_hat||^2 per image: training on the bound itself).
* the variational bound on 8-bit images (`nll_bound`), in nats per image with named
  parts, as in VDM and DDPM: the prior KL at t = 1, the diffusion term (an unbiased
  one-sample estimate, uniform in log-SNR), and the discretized decoder at t = 0, a
  256-way categorical over the pixel values. No dequantization and no offset: the bound
  is on the probability of the discrete data, comparable with other discrete models.
"""
import jax
import jax.numpy as jnp
import numpy as np

# The cosine schedule's range: at t = 1 the prior term is negligible (alpha_1^2 = 6e-6);
# at t = 0 the decoder's pixel bins are ~7 standard deviations apart (sigma_0 / alpha_0 =
# 0.0012, bins 2/255 wide), so its term is too.
LOGSNR_MIN, LOGSNR_MAX = -12.0, 13.5
SCHEDULES = ("cosine", "linear")
TARGETS = ("eps", "x0", "v")
WEIGHTINGS = ("eps_mse", "v_mse", "elbo")
_B0, _B1 = 0.1, 20.0  # the VP SDE of DDPM's linear betas (1e-4 .. 0.02 over 1000 steps)


# --- schedules --------------------------------------------------------------------------
def logsnr_schedule(name):
  """t in [0, 1] -> log SNR, decreasing: "cosine" or "linear"."""
  if name == "cosine":
    t_min = np.arctan(np.exp(-0.5 * LOGSNR_MAX)) * 2 / np.pi
    t_max = np.arctan(np.exp(-0.5 * LOGSNR_MIN)) * 2 / np.pi
    return lambda t: -2.0 * jnp.log(jnp.tan(np.pi / 2 * (t_min + t * (t_max - t_min))))
  if name == "linear":
    # alpha_bar(t) = exp(-(b0 t + (b1 - b0) t^2 / 2)); logsnr = log(alpha_bar / (1 - alpha_bar))
    def linear(t):
      log_alpha_bar = -(_B0 * t + 0.5 * (_B1 - _B0) * t**2)
      return log_alpha_bar - jnp.log(-jnp.expm1(log_alpha_bar))
    return lambda t: jnp.clip(linear(jnp.maximum(t, 1e-5)), LOGSNR_MIN, LOGSNR_MAX)
  raise ValueError(f"Unknown diffusion.schedule {name!r}; allowed: {SCHEDULES}")


def alpha_sigma(logsnr):
  """(alpha, sigma) with alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr)."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def noise_conditioning(logsnr):
  """What the network is given of the noise level (its c_noise): the log-SNR mapped
  linearly from [LOGSNR_MAX, LOGSNR_MIN] onto DDPM's time steps [0, 1000], the range
  of the sinusoidal time embeddings the denoisers use."""
  return (LOGSNR_MAX - logsnr) * (1000.0 / (LOGSNR_MAX - LOGSNR_MIN))


def _expand(v, x):
  """A per-example value [B] broadcast against x [B, ...]."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


# --- the forward process and the targets -------------------------------------------------
def diffuse(x, logsnr, eps):
  """z_t = alpha_t x + sigma_t eps (q(z_t | x) sampled with the given noise)."""
  alpha, sigma = alpha_sigma(_expand(logsnr, x))
  return alpha * x + sigma * eps


def target(name, x, eps, logsnr):
  """What a network with prediction target `name` should output at (x, eps, logsnr)."""
  if name == "eps":
    return eps
  if name == "x0":
    return x
  if name == "v":
    alpha, sigma = alpha_sigma(_expand(logsnr, x))
    return alpha * eps - sigma * x
  raise ValueError(f"Unknown diffusion.target {name!r}; allowed: {TARGETS}")


def to_x0_eps(name, prediction, z, logsnr):
  """(x0, eps) implied by a prediction of target `name` at z_t (alpha^2 + sigma^2 = 1)."""
  alpha, sigma = alpha_sigma(_expand(logsnr, z))
  if name == "eps":
    return (z - sigma * prediction) / alpha, prediction
  if name == "x0":
    return prediction, (z - alpha * prediction) / sigma
  if name == "v":
    return alpha * z - sigma * prediction, sigma * z + alpha * prediction
  raise ValueError(f"Unknown diffusion.target {name!r}; allowed: {TARGETS}")


# --- training loss --------------------------------------------------------------------------
def _sum_pixels(v):
  return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def dlogsnr_dt(schedule, t):
  """d logsnr / dt at t (negative: log SNR decreases)."""
  return jax.vmap(jax.grad(lambda s: schedule(s)))(t)


def diffusion_loss(predict, x, rng, *, schedule, target_name, weighting):
  """(loss, parts) of one noise level per image, t ~ U(0, 1).

  predict(z, logsnr) -> the network's prediction of `target_name`. The loss is averaged
  over the batch; "elbo" is in nats per image (the bound's diffusion term), the MSEs per
  pixel (DDPM's scale).
  """
  k_t, k_eps = jax.random.split(rng)
  t = jax.random.uniform(k_t, x.shape[:1])
  eps = jax.random.normal(k_eps, x.shape)
  logsnr = schedule(t)
  z = diffuse(x, logsnr, eps)
  prediction = predict(z, logsnr)
  _, eps_hat = to_x0_eps(target_name, prediction, z, logsnr)
  eps_sq = _sum_pixels((eps - eps_hat)**2)
  if weighting == "eps_mse":
    per_image = eps_sq / np.prod(x.shape[1:])
  elif weighting == "v_mse":
    per_image = _sum_pixels(_v_error(target_name, prediction, x, eps, z, logsnr)**2) / np.prod(
        x.shape[1:])
  elif weighting == "elbo":
    per_image = -0.5 * dlogsnr_dt(schedule, t) * eps_sq
  else:
    raise ValueError(f"Unknown diffusion.loss_weighting {weighting!r}; allowed: {WEIGHTINGS}")
  loss = jnp.mean(per_image)
  return loss, {"loss": loss, "eps_mse": jnp.mean(eps_sq) / np.prod(x.shape[1:])}


def _v_error(target_name, prediction, x, eps, z, logsnr):
  """v_hat - v, with v_hat from a prediction of any target."""
  if target_name == "v":
    return prediction - target("v", x, eps, logsnr)
  x0_hat, eps_hat = to_x0_eps(target_name, prediction, z, logsnr)
  return target("v", x0_hat, eps_hat, logsnr) - target("v", x, eps, logsnr)


# --- the variational bound on 8-bit data ----------------------------------------------------
def pixel_values(num_bins=256):
  """The data values of the bins: k / 255 * 2 - 1 (data.preprocess "symmetric")."""
  return jnp.linspace(-1.0, 1.0, num_bins)


def decoder_log_probs(z0, logsnr0, num_bins=256):
  """log p(x = bin k | z_0) for every pixel: [..., num_bins], summing to 1 over k.

  VDM's decoder: a categorical whose logit for bin value v_k is the Gaussian log density
  of z_0 / alpha_0 around v_k with std sigma_0 / alpha_0 (exp(-logsnr0 / 2)).
  """
  alpha, _ = alpha_sigma(logsnr0)
  scale = jnp.exp(-0.5 * logsnr0)
  centered = (z0 / alpha)[..., None] - pixel_values(num_bins)
  return jax.nn.log_softmax(-0.5 * (centered / scale)**2, axis=-1)


def prior_kl(x, schedule):
  """KL(q(z_1 | x) || N(0, I)) per image, in nats."""
  alpha1, sigma1 = alpha_sigma(schedule(jnp.ones(())))
  return 0.5 * _sum_pixels(alpha1**2 * x**2 + sigma1**2 - 1.0 - jnp.log(sigma1**2))


def diffusion_term(predict, x, u, eps, *, schedule, target_name):
  """VDM's continuous-time diffusion term per image, one sample of it, in nats.

  The term is an integral over the log-SNR between the schedule's endpoints, which
  depends on the schedule only through them (VDM, eq. 17):
  integral 1/2 ||eps - eps_hat(z_logsnr)||^2 dlogsnr. Sampled at logsnr = logsnr(1) +
  u (logsnr(0) - logsnr(1)), u ~ U(0, 1): unbiased, and of bounded weight where a
  uniform t would weight the steep ends of a schedule heavily.
  """
  lo, hi = schedule(jnp.ones(())), schedule(jnp.zeros(()))
  logsnr = lo + u * (hi - lo)
  z = diffuse(x, logsnr, eps)
  _, eps_hat = to_x0_eps(target_name, predict(z, logsnr), z, logsnr)
  return 0.5 * (hi - lo) * _sum_pixels((eps - eps_hat)**2)


def decoder_nll(x, z0, logsnr0, num_bins=256):
  """-log p(x | z_0) per image for 8-bit x (values pixel_values()), in nats."""
  bins = jnp.round((x + 1.0) / 2.0 * (num_bins - 1)).astype(jnp.int32)
  log_probs = jnp.take_along_axis(decoder_log_probs(z0, logsnr0, num_bins), bins[..., None],
                                  axis=-1)[..., 0]
  return -_sum_pixels(log_probs)


def nll_bound(predict, x, rng, *, schedule, target_name, num_bins=256):
  """One-sample estimate of the bound on -log p(x) for 8-bit images x (values
  pixel_values()), in nats per image: {"prior", "diffusion", "decoder", "nll"}, each [B].

  The diffusion term at one log-SNR per image (diffusion_term: unbiased; the caller
  averages), the prior KL at t = 1, the discretized decoder with z_0 ~ q(z_0 | x).
  """
  k_u, k_eps, k_0 = jax.random.split(rng, 3)
  diffusion = diffusion_term(predict, x, jax.random.uniform(k_u, x.shape[:1]),
                             jax.random.normal(k_eps, x.shape), schedule=schedule,
                             target_name=target_name)
  logsnr0 = schedule(jnp.zeros(()))
  z0 = diffuse(x, jnp.full(x.shape[:1], logsnr0), jax.random.normal(k_0, x.shape))
  prior, decoder = prior_kl(x, schedule), decoder_nll(x, z0, logsnr0, num_bins)
  return {"prior": prior, "diffusion": diffusion, "decoder": decoder,
          "nll": prior + diffusion + decoder}
