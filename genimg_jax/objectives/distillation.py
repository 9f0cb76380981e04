"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast
Sampling of Diffusion Models") as pure functions: a student that takes one deterministic
DDIM step where its teacher takes two, so that N student steps sample as 2N teacher steps.

In the VP coordinates of objectives/diffusion.py (z_t = alpha_t x + sigma_t eps), one DDIM
step (eta = 0) from t to s with the estimate x0 is z_s = alpha_s x0 + sigma_s eps_hat,
eps_hat = (z_t - alpha_t x0) / sigma_t; it is exactly the update of samplers.py's "ddim"
(x0 clipped to the encoder's range first, [-1, 1] for pixels, the eps it implies
recomputed). On the student's grid of N
uniform steps in t (the DDIM sampler's grid), for t = i / N:

* the teacher takes two DDIM steps, t -> t - 1/(2N) -> s = t - 1/N, landing on z_s;
* the target x~ is the x0 whose single step from t lands on the same z_s:
  x~ = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t);
* the loss is the paper's "truncated SNR" weighting of the x0 error,
  max(alpha_t^2 / sigma_t^2, 1) ||x0_hat - sg(x~)||^2 (per-pixel mean, batch mean).

So a student that predicts x~ exactly, sampled by DDIM at N steps, gives the teacher's
2N-step samples (tests/test_distill.py checks this through samplers.sample). One call of
`distillation_loss` is one round's objective; rounds (2N -> N -> N/2 ...) are runs, each
naming the previous as its teacher (tasks/distill.py).
"""
import jax
import jax.numpy as jnp

from genimg_jax import samplers
from genimg_jax.objectives import diffusion as diff


def _expand(v, x):
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def ddim_step(denoise, z, logsnr_t, logsnr_s, clip=(-1.0, 1.0)):
  """One deterministic DDIM step from logsnr_t to logsnr_s ([B] each), as the sampler's
  (x0 clipped to `clip`; None: not clipped)."""
  x0, eps = samplers.clipped_x0_eps(denoise(z, logsnr_t)[0], z, logsnr_t, clip)
  alpha_s, sigma_s = diff.alpha_sigma(_expand(logsnr_s, z))
  return alpha_s * x0 + sigma_s * eps


def student_times(rng, n, student_steps):
  """[n] times drawn uniformly from the student's grid {1/N, 2/N, ..., 1}."""
  i = jax.random.randint(rng, (n,), 1, student_steps + 1)
  return i.astype(jnp.float32) / student_steps


def target(teacher, z, t, *, student_steps, schedule, clip=(-1.0, 1.0)):
  """x~ [B, ...]: the x0 whose one DDIM step from (z, t) to t - 1/N lands where the
  teacher's two steps do. teacher(z, logsnr) -> (x0_hat, eps_hat); t: [B] on the grid."""
  dt = 1.0 / student_steps
  logsnr_t, logsnr_mid, logsnr_s = schedule(t), schedule(t - 0.5 * dt), schedule(t - dt)
  z_mid = ddim_step(teacher, z, logsnr_t, logsnr_mid, clip)
  z_s = ddim_step(teacher, z_mid, logsnr_mid, logsnr_s, clip)
  alpha_t, sigma_t = diff.alpha_sigma(_expand(logsnr_t, z))
  alpha_s, sigma_s = diff.alpha_sigma(_expand(logsnr_s, z))
  ratio = sigma_s / sigma_t
  return (z_s - ratio * z) / (alpha_s - ratio * alpha_t)


def distillation_loss(student, teacher, x, rng, *, student_steps, schedule, clip=(-1.0, 1.0)):
  """(loss, parts) of one (t, eps) per image: the truncated-SNR-weighted error of the
  student's x0 against sg(x~). student, teacher: (z, logsnr) -> (x0_hat, eps_hat).

  parts: "loss"; "x0_mse" (the unweighted per-pixel error)."""
  k_t, k_eps = jax.random.split(rng)
  t = student_times(k_t, x.shape[0], student_steps)
  logsnr = schedule(t)
  z = diff.diffuse(x, logsnr, jax.random.normal(k_eps, x.shape))
  x_tilde = jax.lax.stop_gradient(target(teacher, z, t, student_steps=student_steps,
                                         schedule=schedule, clip=clip))
  x0_hat, _ = student(z, logsnr)
  error = jnp.mean(((x0_hat - x_tilde)**2).reshape(x.shape[0], -1), axis=-1)
  weight = jnp.maximum(jnp.exp(logsnr), 1.0)
  loss = jnp.mean(weight * error)
  return loss, {"loss": loss, "x0_mse": jnp.mean(error)}
