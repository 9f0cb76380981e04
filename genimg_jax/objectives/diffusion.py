"""Gaussian diffusion as pure functions: schedules, the formulations (what the network is
given and predicts), the training distribution of noise levels, the loss, and the
variational bound on 8-bit data in bits/dim.

Everything is written in one coordinate system, the variance-preserving one of VDM
(Kingma et al. 2021): a noise level is its log signal-to-noise ratio logsnr, alpha^2 =
sigmoid(logsnr), sigma^2 = sigmoid(-logsnr), and z = alpha x + sigma eps. Every other
formulation's noisy image is a rescaling of this z (Kingma & Gao 2023, "Understanding
Diffusion Objectives as the ELBO with Simple Data Augmentation"): the rectified-flow path
(1 - t) x + t eps is z / (alpha + sigma) with t = sigma / (alpha + sigma), EDM's x + s eps
is z / alpha with s = sigma / alpha = exp(-logsnr / 2). So a formulation is declared, not
branched on, as a `Formulation`: the scaling of z the network is given (c_in), its noise
conditioning (c_noise), and the map from its output F to the denoiser's (x0, eps) (c_skip,
c_out), with F's regression target. The loss, the guidance, the samplers and the bound
then see only (x0, eps) at (z, logsnr), and work for every formulation.

* schedules (t in [0, 1] -> logsnr, decreasing from logsnr(0) to logsnr(1)): "cosine"
  (Nichol & Dhariwal 2021, -2 log tan(pi t / 2) over [LOGSNR_MIN, LOGSNR_MAX]); "linear"
  (DDPM's betas 1e-4 .. 0.02 over 1000 steps as the VP SDE: log alpha_bar(t) = -(b0 t +
  (b1 - b0) t^2 / 2), b0 = 0.1, b1 = 20); "flow" (the rectified-flow path's own time,
  logsnr = 2 log((1 - t) / t), clipped to [LOGSNR_MIN, LOGSNR_MAX]); "edm" (EDM's rho = 7
  interpolation of sigma from 0.002 at t = 0 to 80 at t = 1). A schedule is the time of
  the samplers' grid and the bound's endpoints; training draws its noise levels from a
  `NoiseLevels` distribution, which may or may not use the schedule.
* formulations (`FORMULATIONS`, config diffusion.target): "eps", "x0", "v" (alpha eps -
  sigma x, Salimans & Ho 2022) on z itself with DDPM's time-step conditioning; "flow"
  (the velocity eps - x on the path (1 - t) x + t eps, conditioned on 1000 t: Liu et al.
  2022, Lipman et al. 2023); "edm" (Karras et al. 2022's preconditioning: c_in = 1 /
  sqrt(s^2 + sd^2), c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2),
  c_noise = ln(s) / 4, with sd = diffusion.sigma_data).
* training noise levels (`noise_levels`, config diffusion.noise): "uniform_t" (t ~ U(0, 1)
  under the schedule: DDPM, and flow matching on the "flow" schedule) or "log_normal"
  (ln(sigma / alpha) ~ N(noise_mean, noise_std^2): EDM's log-normal sigma with P_mean,
  P_std, and, because logit(t) = ln(sigma / alpha) on the flow path, SD3's logit-normal
  t), clipped to [LOGSNR_MIN, LOGSNR_MAX].
* losses (`loss_weighting`): "eps_mse" (DDPM's L_simple), "v_mse", "target_mse" (the mean
  squared error of F against its target: flow matching's loss, and EDM's, whose weight
  lambda(s) = 1 / c_out^2 on the x0 error is exactly this), and "elbo" (the diffusion
  term of the bound, 1/2 ||eps - eps_hat||^2 per unit of log-SNR, divided by the density
  of the drawn log-SNR: training on the bound itself under any noise distribution).
* the variational bound on 8-bit images (`nll_bound`), in nats per image with named
  parts, as in VDM and DDPM: the prior KL at t = 1, the diffusion term (an unbiased
  one-sample estimate, uniform in log-SNR), and the discretized decoder at t = 0, a
  256-way categorical over the pixel values. No dequantization and no offset: the bound
  is on the probability of the discrete data, comparable with other discrete models.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

# The log-SNR range of every schedule and noise distribution: at LOGSNR_MIN the prior term
# is negligible (alpha^2 = 6e-6); at LOGSNR_MAX the decoder's pixel bins are ~7 standard
# deviations apart (sigma / alpha = 0.0012, bins 2/255 wide), so its term is too.
LOGSNR_MIN, LOGSNR_MAX = -12.0, 13.5
SCHEDULES = ("cosine", "linear", "flow", "edm")
TARGETS = ("eps", "x0", "v", "flow", "edm")
NOISE_LEVELS = ("uniform_t", "log_normal")
WEIGHTINGS = ("eps_mse", "v_mse", "target_mse", "elbo")
_B0, _B1 = 0.1, 20.0  # the VP SDE of DDPM's linear betas (1e-4 .. 0.02 over 1000 steps)
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_SCHEDULE_RHO = 0.002, 80.0, 7.0


# --- schedules --------------------------------------------------------------------------
def logsnr_schedule(name):
  """t in [0, 1] -> log SNR, decreasing: one of SCHEDULES."""
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
  if name == "flow":  # z / (alpha + sigma) = (1 - t) x + t eps
    return lambda t: jnp.clip(flow_logsnr(t), LOGSNR_MIN, LOGSNR_MAX)
  if name == "edm":
    lo, hi = EDM_SIGMA_MIN**(1 / EDM_SCHEDULE_RHO), EDM_SIGMA_MAX**(1 / EDM_SCHEDULE_RHO)
    return lambda t: -2.0 * EDM_SCHEDULE_RHO * jnp.log(lo + t * (hi - lo))
  raise ValueError(f"Unknown diffusion.schedule {name!r}; allowed: {SCHEDULES}")


def alpha_sigma(logsnr):
  """(alpha, sigma) with alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr)."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def noise_conditioning(logsnr):
  """DDPM's noise conditioning (the c_noise of eps, x0 and v): the log-SNR mapped linearly
  from [LOGSNR_MAX, LOGSNR_MIN] onto DDPM's time steps [0, 1000], the range of the
  sinusoidal time embeddings the denoisers use."""
  return (LOGSNR_MAX - logsnr) * (1000.0 / (LOGSNR_MAX - LOGSNR_MIN))


def _expand(v, x):
  """A per-example value [B] broadcast against x [B, ...]."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def diffuse(x, logsnr, eps):
  """z_t = alpha_t x + sigma_t eps (q(z_t | x) sampled with the given noise)."""
  alpha, sigma = alpha_sigma(_expand(logsnr, x))
  return alpha * x + sigma * eps


# --- formulations ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Formulation:
  """What the network is given and what it predicts, as functions of the VP z and logsnr.

  network_input(z, logsnr): the network's input (c_in z; None: z itself).
  c_noise(logsnr [B]): the network's noise conditioning [B].
  to_x0_eps(F, z, logsnr): the denoiser's (x0_hat, eps_hat) from the network's output F.
  target(x, eps, logsnr): what F should be for the clean x and the noise eps.
  ode: the variables the ODE samplers integrate in (samplers.py): "sigma" (EDM's z / alpha
    against s = sigma / alpha) or "t" (the flow path's (1 - t) x + t eps against t).
  """
  name: str
  c_noise: Callable
  to_x0_eps: Callable
  target: Callable
  network_input: Optional[Callable] = None
  ode: str = "sigma"


def _eps_formulation():
  def to_x0_eps(prediction, z, logsnr):
    alpha, sigma = alpha_sigma(_expand(logsnr, z))
    return (z - sigma * prediction) / alpha, prediction
  return Formulation("eps", noise_conditioning, to_x0_eps, lambda x, eps, logsnr: eps)


def _x0_formulation():
  def to_x0_eps(prediction, z, logsnr):
    alpha, sigma = alpha_sigma(_expand(logsnr, z))
    return prediction, (z - alpha * prediction) / sigma
  return Formulation("x0", noise_conditioning, to_x0_eps, lambda x, eps, logsnr: x)


def v_target(x, eps, logsnr):
  """v = alpha eps - sigma x (Salimans & Ho 2022)."""
  alpha, sigma = alpha_sigma(_expand(logsnr, x))
  return alpha * eps - sigma * x


def _v_formulation():
  def to_x0_eps(prediction, z, logsnr):
    alpha, sigma = alpha_sigma(_expand(logsnr, z))
    return alpha * z - sigma * prediction, sigma * z + alpha * prediction
  return Formulation("v", noise_conditioning, to_x0_eps, v_target)


def flow_logsnr(t):
  """The log-SNR at time t of the flow path (1 - t) x + t eps: 2 log((1 - t) / t)."""
  return 2.0 * (jnp.log1p(-t) - jnp.log(t))


def flow_time(logsnr):
  """t of the flow path (1 - t) x + t eps at this log-SNR: sigma / (alpha + sigma)."""
  return jax.nn.sigmoid(-0.5 * logsnr)


def _flow_formulation():
  """Rectified flow / flow matching: F is the velocity eps - x of the straight path."""
  def network_input(z, logsnr):
    alpha, sigma = alpha_sigma(_expand(logsnr, z))
    return z / (alpha + sigma)

  def to_x0_eps(prediction, z, logsnr):
    z_t, t = network_input(z, logsnr), _expand(flow_time(logsnr), z)
    return z_t - t * prediction, z_t + (1.0 - t) * prediction
  return Formulation("flow", lambda logsnr: 1000.0 * flow_time(logsnr), to_x0_eps,
                     lambda x, eps, logsnr: eps - x, network_input, ode="t")


def _edm_formulation(sigma_data):
  """EDM's preconditioning (Karras et al. 2022, Table 1) in s = sigma / alpha."""
  sd2 = sigma_data**2

  def network_input(z, logsnr):
    alpha, _ = alpha_sigma(_expand(logsnr, z))
    s2 = jnp.exp(-_expand(logsnr, z))
    return z / alpha * jax.lax.rsqrt(s2 + sd2)

  def skip_out(logsnr, z):
    s2 = jnp.exp(-_expand(logsnr, z))
    return sd2 / (s2 + sd2), jnp.sqrt(s2) * sigma_data * jax.lax.rsqrt(s2 + sd2)

  def to_x0_eps(prediction, z, logsnr):
    alpha, _ = alpha_sigma(_expand(logsnr, z))
    x_s, s = z / alpha, jnp.exp(-0.5 * _expand(logsnr, z))
    c_skip, c_out = skip_out(logsnr, z)
    x0 = c_skip * x_s + c_out * prediction
    return x0, (x_s - x0) / s

  def target(x, eps, logsnr):
    c_skip, c_out = skip_out(logsnr, x)
    x_s = x + jnp.exp(-0.5 * _expand(logsnr, x)) * eps
    return (x - c_skip * x_s) / c_out
  return Formulation("edm", lambda logsnr: -0.125 * logsnr, to_x0_eps, target, network_input)


def formulation(name, sigma_data=0.5):
  """The Formulation of diffusion.target `name` (sigma_data: EDM's data std)."""
  if name not in TARGETS:
    raise ValueError(f"Unknown diffusion.target {name!r}; allowed: {TARGETS}")
  return {"eps": _eps_formulation, "x0": _x0_formulation, "v": _v_formulation,
          "flow": _flow_formulation, "edm": lambda: _edm_formulation(sigma_data)}[name]()


# --- the training distribution of noise levels ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NoiseLevels:
  """logsnr = to_logsnr(u) with u ~ U(0, 1) ("uniform") or N(0, 1) ("normal"); to_logsnr
  decreasing. density(u) is the base's, so that the log-SNR's density is
  density(u) / |dlogsnr / du| (the "elbo" weighting divides by it)."""
  base: str
  to_logsnr: Callable

  def sample(self, rng, n):
    if self.base == "uniform":
      return jax.random.uniform(rng, (n,))
    return jax.random.normal(rng, (n,))

  def density(self, u):
    if self.base == "uniform":
      return 1.0
    return jnp.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)


def noise_levels(name, schedule, mean=0.0, std=1.0):
  """The NoiseLevels of diffusion.noise `name`: "uniform_t" (t ~ U(0, 1) under schedule) or
  "log_normal" (ln(sigma / alpha) = -logsnr / 2 ~ N(mean, std^2), clipped to the range)."""
  if name == "uniform_t":
    return NoiseLevels("uniform", schedule)
  if name == "log_normal":
    return NoiseLevels("normal", lambda u: jnp.clip(-2.0 * (mean + std * u), LOGSNR_MIN,
                                                    LOGSNR_MAX))
  raise ValueError(f"Unknown diffusion.noise {name!r}; allowed: {NOISE_LEVELS}")


# --- training loss --------------------------------------------------------------------------
def _sum_pixels(v):
  return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def dlogsnr_dt(schedule, t):
  """d logsnr / dt at t (negative: log SNR decreases)."""
  return jax.vmap(jax.grad(lambda s: schedule(s)))(t)


def diffusion_loss(predict, x, rng, *, levels, formulation, weighting):
  """(loss, parts) of one noise level per image, drawn from `levels` (NoiseLevels).

  predict(z, logsnr) -> the network's output F for the VP z (formulation: its meaning).
  The loss is averaged over the batch; "elbo" is in nats per image (the bound's diffusion
  term), the MSEs per pixel (DDPM's scale).
  """
  k_t, k_eps = jax.random.split(rng)
  u = levels.sample(k_t, x.shape[0])
  eps = jax.random.normal(k_eps, x.shape)
  logsnr = levels.to_logsnr(u)
  z = diffuse(x, logsnr, eps)
  prediction = predict(z, logsnr)
  x0_hat, eps_hat = formulation.to_x0_eps(prediction, z, logsnr)
  eps_sq = _sum_pixels((eps - eps_hat)**2)
  pixels = np.prod(x.shape[1:])
  if weighting == "eps_mse":
    per_image = eps_sq / pixels
  elif weighting == "v_mse":
    if formulation.name == "v":
      v_error = prediction - v_target(x, eps, logsnr)
    else:
      v_error = v_target(x0_hat, eps_hat, logsnr) - v_target(x, eps, logsnr)
    per_image = _sum_pixels(v_error**2) / pixels
  elif weighting == "target_mse":
    per_image = _sum_pixels((prediction - formulation.target(x, eps, logsnr))**2) / pixels
  elif weighting == "elbo":
    per_image = -0.5 * dlogsnr_dt(levels.to_logsnr, u) / levels.density(u) * eps_sq
  else:
    raise ValueError(f"Unknown diffusion.loss_weighting {weighting!r}; allowed: {WEIGHTINGS}")
  loss = jnp.mean(per_image)
  return loss, {"loss": loss, "eps_mse": jnp.mean(eps_sq) / pixels}


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


def diffusion_term(predict, x, u, eps, *, schedule, formulation):
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
  _, eps_hat = formulation.to_x0_eps(predict(z, logsnr), z, logsnr)
  return 0.5 * (hi - lo) * _sum_pixels((eps - eps_hat)**2)


def decoder_nll(x, z0, logsnr0, num_bins=256):
  """-log p(x | z_0) per image for 8-bit x (values pixel_values()), in nats."""
  bins = jnp.round((x + 1.0) / 2.0 * (num_bins - 1)).astype(jnp.int32)
  log_probs = jnp.take_along_axis(decoder_log_probs(z0, logsnr0, num_bins), bins[..., None],
                                  axis=-1)[..., 0]
  return -_sum_pixels(log_probs)


def nll_bound(predict, x, rng, *, schedule, formulation, num_bins=256):
  """One-sample estimate of the bound on -log p(x) for 8-bit images x (values
  pixel_values()), in nats per image: {"prior", "diffusion", "decoder", "nll"}, each [B].

  The diffusion term at one log-SNR per image (diffusion_term: unbiased; the caller
  averages), the prior KL at t = 1, the discretized decoder with z_0 ~ q(z_0 | x).
  predict(z, logsnr) -> the network's output F for the VP z; any formulation, through its
  map to the (x0, eps) of the equivalent log-SNR denoiser.
  """
  k_u, k_eps, k_0 = jax.random.split(rng, 3)
  diffusion = diffusion_term(predict, x, jax.random.uniform(k_u, x.shape[:1]),
                             jax.random.normal(k_eps, x.shape), schedule=schedule,
                             formulation=formulation)
  logsnr0 = schedule(jnp.zeros(()))
  z0 = diffuse(x, jnp.full(x.shape[:1], logsnr0), jax.random.normal(k_0, x.shape))
  prior, decoder = prior_kl(x, schedule), decoder_nll(x, z0, logsnr0, num_bins)
  return {"prior": prior, "diffusion": diffusion, "decoder": decoder,
          "nll": prior + diffusion + decoder}
