"""Samplers of diffusion models: ancestral (DDPM), DDIM (with eta), and Heun on the
probability-flow ODE (EDM). Pure functions of a denoiser; the task compiles each once per
number of steps (the loop is a lax.fori_loop), with the guidance scale a traced argument.

A denoiser maps (z_t [B, ...], logsnr [B]) to (x0_hat, eps_hat) (objectives/diffusion.py
for the log-SNR parameterization). Every sampler starts from the same standard normal
`noise` and returns its last x0 estimate, in [-1, 1] after clipping; the caller quantizes
to uint8 before any metric.

* "ddpm": ancestral sampling with the posterior q(z_s | z_t, x0_hat) (Ho et al. 2020, in
  VDM's continuous-time form), x0_hat clipped to [-1, 1]; `steps` network evaluations.
* "ddim": z_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise with
  c = eta * (the ancestral step's std) (Song et al. 2021): eta = 0 is deterministic,
  eta = 1 the ancestral sampler's marginals; x0_hat clipped; `steps` evaluations.
* "heun": EDM's deterministic second-order sampler (Karras et al. 2022, Algorithm 1) in
  sigma = exp(-logsnr / 2) on the rho = 7 grid from the schedule's largest sigma to its
  smallest; 2 * steps - 1 evaluations.
Uniform steps in t for ddpm and ddim.
"""
import jax
import jax.numpy as jnp

from genimg_jax.objectives import diffusion as diff

SAMPLERS = ("ddpm", "ddim", "heun")
EDM_RHO = 7.0


def nfe(name, steps):
  """Network evaluations (calls of the denoiser) per sample."""
  return 2 * steps - 1 if name == "heun" else steps


def _expand(v, x):
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _clipped(x0, z, logsnr):
  """x0 clipped to [-1, 1] and the eps it implies at z."""
  alpha, sigma = diff.alpha_sigma(_expand(logsnr, z))
  x0 = jnp.clip(x0, -1.0, 1.0)
  return x0, (z - alpha * x0) / sigma


def sample(denoise, noise, rng, *, name, steps, schedule, eta=0.0):
  """Images (float, clipped to [-1, 1]) from `noise` [B, H, W, C] in `steps` steps.

  denoise(z, logsnr [B]) -> (x0_hat, eps_hat); rng: the ancestral noise (ddpm, ddim with
  eta > 0); schedule: t -> logsnr.
  """
  if name not in SAMPLERS:
    raise ValueError(f"Unknown eval.sampler {name!r}; allowed: {SAMPLERS}")
  if steps < 1:
    raise ValueError(f"eval.sample_steps must be positive, got {steps}.")
  B = noise.shape[0]
  if name == "heun":
    return _heun(denoise, noise, steps, schedule)

  def step(i, carry):
    z, _ = carry
    t = 1.0 - i / steps
    s = 1.0 - (i + 1) / steps
    logsnr_t, logsnr_s = schedule(jnp.full((B,), t)), schedule(jnp.full((B,), s))
    x0, eps = _clipped(denoise(z, logsnr_t)[0], z, logsnr_t)
    alpha_t, sigma_t = diff.alpha_sigma(_expand(logsnr_t, z))
    alpha_s, sigma_s = diff.alpha_sigma(_expand(logsnr_s, z))
    # the ancestral step's variance: sigma_{t|s}^2 sigma_s^2 / sigma_t^2
    alpha_ts = alpha_t / alpha_s
    var_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
    var = var_ts * sigma_s**2 / sigma_t**2
    noise_i = jax.random.normal(jax.random.fold_in(rng, i), z.shape)
    if name == "ddpm":
      mean = alpha_ts * sigma_s**2 / sigma_t**2 * z + alpha_s * var_ts / sigma_t**2 * x0
      z = mean + jnp.sqrt(var) * noise_i
    else:  # ddim
      c2 = eta**2 * var
      z = alpha_s * x0 + jnp.sqrt(jnp.maximum(sigma_s**2 - c2, 0.0)) * eps
      z = z + jnp.sqrt(c2) * noise_i if eta else z
    return z, x0

  _, x0 = jax.lax.fori_loop(0, steps, step, (noise, jnp.zeros_like(noise)))
  return x0


def edm_sigmas(steps, schedule):
  """EDM's grid of `steps` sigmas from the schedule's largest (t = 1) to its smallest (t = 0),
  rho = 7, then 0."""
  sigma_max = jnp.exp(-0.5 * schedule(jnp.ones(())))
  sigma_min = jnp.exp(-0.5 * schedule(jnp.zeros(())))
  i = jnp.arange(steps) / max(steps - 1, 1)
  sigmas = (sigma_max**(1 / EDM_RHO) + i * (sigma_min**(1 / EDM_RHO) - sigma_max**(1 / EDM_RHO)))**EDM_RHO
  return jnp.concatenate([sigmas, jnp.zeros(1)])


def _heun(denoise, noise, steps, schedule):
  """Heun's method on dx/dsigma = (x - D(x; sigma)) / sigma, x = z / alpha (EDM Alg. 1)."""
  B = noise.shape[0]
  sigmas = edm_sigmas(steps, schedule)

  def d_of(x, sigma):  # D(x; sigma) through the VP denoiser: z = alpha x, logsnr = -2 log sigma
    logsnr = jnp.full((B,), -2.0 * jnp.log(sigma))
    alpha, _ = diff.alpha_sigma(_expand(logsnr, x))
    return denoise(alpha * x, logsnr)[0]

  def step(i, x):
    s_i, s_next = sigmas[i], sigmas[i + 1]
    d = (x - d_of(x, s_i)) / s_i
    x_euler = x + (s_next - s_i) * d

    def correct(_):
      d2 = (x_euler - d_of(x_euler, s_next)) / s_next
      return x + (s_next - s_i) * 0.5 * (d + d2)
    return jax.lax.cond(s_next > 0, correct, lambda _: x_euler, None)

  return jnp.clip(jax.lax.fori_loop(0, steps, step, sigmas[0] * noise), -1.0, 1.0)
