"""Samplers of diffusion models: ancestral (DDPM), DDIM (with eta), and Euler and Heun on
the probability-flow ODE (EDM). Pure functions of a denoiser; the task compiles each once
per number of steps (the loop is a lax.fori_loop), with the guidance scale a traced argument.

A denoiser maps (z_t [B, ...], logsnr [B]) to (x0_hat, eps_hat) in the VP coordinates of
objectives/diffusion.py, whatever the formulation. Every sampler starts from the same
standard normal `noise` and returns its last x0 estimate, clipped to `clip` (the task's
encoder decides it: [-1, 1] for pixels, None for no clipping); the caller turns it into
images (pixels: quantized to uint8) before any metric. The schedule is the sampler's time grid
(eval.schedule), not the training distribution of noise levels.

* "ddpm": ancestral sampling with the posterior q(z_s | z_t, x0_hat) (Ho et al. 2020, in
  VDM's continuous-time form), x0_hat clipped to [-1, 1]; `steps` network evaluations,
  uniform in the schedule's t.
* "ddim": z_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise with
  c = eta * (the ancestral step's std) (Song et al. 2021): eta = 0 is deterministic,
  eta = 1 the ancestral sampler's marginals; x0_hat clipped; `steps` evaluations, uniform
  in t. With eta = 0 on the "flow" schedule it is rectified flow's Euler sampler in t
  (the same update, plus the clip).
* "euler" and "heun": the probability-flow ODE dy/dtau = (y - D(y; tau)) / tau in the
  formulation's ODE variables (`ode`): "sigma", EDM's y = z / alpha against tau = sigma /
  alpha (Karras et al. 2022, Algorithm 1), or "t", the flow path's y = z / (alpha + sigma)
  = (1 - t) x + t eps against tau = t (velocity (y - D) / t = eps_hat - x0_hat). The grid
  (`ode_grid`) runs from the schedule's largest tau to its smallest with EDM's rho
  (eval.rho: 7 is EDM's, 1 uniform in tau, the flow's uniform t), then 0. Euler: `steps`
  evaluations; Heun adds a second evaluation at every step but the last (2 steps - 1).
  `churn` > 0 is EDM's stochastic sampler (Algorithm 2, S_tmin = 0, S_tmax = inf, S_noise
  = 1): before each step tau rises by gamma = min(churn / steps, sqrt(2) - 1) and fresh
  noise brings y to it.
"""
import jax
import jax.numpy as jnp

from genimg_jax.objectives import diffusion as diff

SAMPLERS = ("ddpm", "ddim", "euler", "heun")
ODES = ("sigma", "t")
EDM_RHO = 7.0


def nfe(name, steps):
  """Network evaluations (calls of the denoiser) per sample."""
  return 2 * steps - 1 if name == "heun" else steps


def _expand(v, x):
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _clip(x, clip):
  return x if clip is None else jnp.clip(x, *clip)


def clipped_x0_eps(x0, z, logsnr, clip=(-1.0, 1.0)):
  """x0 clipped to `clip` (None: not clipped) and the eps it implies at z."""
  alpha, sigma = diff.alpha_sigma(_expand(logsnr, z))
  x0 = _clip(x0, clip)
  return x0, (z - alpha * x0) / sigma


def sample(denoise, noise, rng, *, name, steps, schedule, eta=0.0, ode="sigma", rho=EDM_RHO,
           churn=0.0, clip=(-1.0, 1.0)):
  """Images (float, clipped to `clip`; None: not clipped) from `noise` [B, H, W, C] in
  `steps` steps.

  denoise(z, logsnr [B]) -> (x0_hat, eps_hat); rng: the sampler's noise (ddpm, ddim with
  eta > 0, heun with churn > 0); schedule: t -> logsnr, the grid's time; ode, rho, churn:
  the ODE samplers' variables, grid and stochasticity.
  """
  if name not in SAMPLERS:
    raise ValueError(f"Unknown eval.sampler {name!r}; allowed: {SAMPLERS}")
  if steps < 1:
    raise ValueError(f"eval.sample_steps must be positive, got {steps}.")
  if ode not in ODES:
    raise ValueError(f"Unknown ODE variables {ode!r}; allowed: {ODES}")
  B = noise.shape[0]
  if name in ("euler", "heun"):
    return _clip(_ode(denoise, noise, rng, steps, schedule, ode, rho, churn,
                      second_order=name == "heun"), clip)

  def step(i, carry):
    z, _ = carry
    t = 1.0 - i / steps
    s = 1.0 - (i + 1) / steps
    logsnr_t, logsnr_s = schedule(jnp.full((B,), t)), schedule(jnp.full((B,), s))
    x0, eps = clipped_x0_eps(denoise(z, logsnr_t)[0], z, logsnr_t, clip)
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


def _tau(logsnr, ode):
  """The ODE's time at a log-SNR: sigma / alpha ("sigma") or the flow's t ("t")."""
  return jnp.exp(-0.5 * logsnr) if ode == "sigma" else diff.flow_time(logsnr)


def ode_grid(steps, schedule, ode="sigma", rho=EDM_RHO):
  """`steps` taus from the schedule's largest (t = 1) to its smallest (t = 0), EDM's rho
  interpolation, then 0."""
  tau_max, tau_min = _tau(schedule(jnp.ones(())), ode), _tau(schedule(jnp.zeros(())), ode)
  i = jnp.arange(steps) / max(steps - 1, 1)
  taus = (tau_max**(1 / rho) + i * (tau_min**(1 / rho) - tau_max**(1 / rho)))**rho
  return jnp.concatenate([taus, jnp.zeros(1)])


def _ode(denoise, noise, rng, steps, schedule, ode, rho, churn, second_order):
  """Euler or Heun on dy/dtau = (y - D(y; tau)) / tau (EDM Alg. 1 and 2 in "sigma")."""
  B = noise.shape[0]
  taus = ode_grid(steps, schedule, ode, rho)

  def d_of(y, tau):  # D(y; tau) through the VP denoiser at the z and logsnr of (y, tau)
    if ode == "sigma":  # y = z / alpha, logsnr = -2 log tau
      logsnr = jnp.full((B,), -2.0 * jnp.log(tau))
      alpha, _ = diff.alpha_sigma(_expand(logsnr, y))
      return denoise(alpha * y, logsnr)[0]
    logsnr = jnp.full((B,), diff.flow_logsnr(tau))  # y = z / (alpha + sigma)
    alpha, sigma = diff.alpha_sigma(_expand(logsnr, y))
    return denoise((alpha + sigma) * y, logsnr)[0]

  gamma = min(churn / steps, 2**0.5 - 1) if churn > 0 else 0.0

  def step(i, x):
    s_i, s_next = taus[i], taus[i + 1]
    if gamma:  # y = a(tau) x + tau eps: a = 1 ("sigma") or 1 - tau ("t")
      s_hat = jnp.minimum(s_i * (1 + gamma), taus[0])
      shrink = 1.0 if ode == "sigma" else (1 - s_hat) / (1 - s_i)
      fresh = jax.random.normal(jax.random.fold_in(rng, i), x.shape)
      x = shrink * x + jnp.sqrt(jnp.maximum(s_hat**2 - (shrink * s_i)**2, 0.0)) * fresh
      s_i = s_hat
    d = (x - d_of(x, s_i)) / s_i
    x_euler = x + (s_next - s_i) * d
    if not second_order:
      return x_euler

    def correct(_):
      d2 = (x_euler - d_of(x_euler, s_next)) / s_next
      return x + (s_next - s_i) * 0.5 * (d + d2)
    return jax.lax.cond(s_next > 0, correct, lambda _: x_euler, None)

  return jax.lax.fori_loop(0, steps, step, taus[0] * noise)
