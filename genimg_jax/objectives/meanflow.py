"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling") as pure
functions: a network u(z_t, r, t) of the average velocity of the flow path between times
r <= t, trained through the MeanFlow identity and sampled in one or a few steps.

On the rectified-flow path z_t = (1 - t) x + t eps (objectives/diffusion.py's "flow"
formulation) the conditional velocity is v = eps - x, and the average velocity over
[r, t] of the marginal flow is u(z_t, r, t) = 1 / (t - r) int_r^t v(z_s, s) ds.
Differentiating (t - r) u(z_t, r, t) in t gives the MeanFlow identity

    u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t),
    du/dt = v . grad_z u + partial_t u   (r held fixed),

whose total derivative is one `jax.jvp` of the network along the tangent (v, 0, 1) in
(z, r, t): no finite differences, and the primal output of the same call is the
prediction the loss differentiates. The regression target u_tgt = v - (t - r) du/dt is
under stop_gradient, as in the paper. At r = t the target is v and the loss is flow
matching's; the network's u(z, t, t) is then the instantaneous velocity, so a MeanFlow
model is also a flow model (its bound and its many-step samplers are flow matching's).

* times (`sample_times`): two draws of logit-normal(mean, std) per image, t the larger and
  r the smaller; r is set to t with probability 1 - ratio (ratio: the fraction of r != t,
  the paper's "ratio of r != t"; drawn per image, not as an exact count per batch).
* loss (`meanflow_loss`): the paper's adaptive weighting, sg(w) ||Delta||^2 with
  w = 1 / (||Delta||^2 + c)^p, ||Delta||^2 the per-pixel mean of the squared error
  (p = 0: the plain MSE; p = 1: close to a per-image relative error).
* sampling (`sample`): z_{t_{i+1}} = z_{t_i} - (t_i - t_{i+1}) u(z_{t_i}, t_{i+1}, t_i) on
  a uniform grid in t from 1 to 0, `steps` network evaluations; one step is
  x = eps - u(eps, 0, 1).
"""
import jax
import jax.numpy as jnp


def _expand(v, x):
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def sample_times(rng, n, *, mean, std, ratio):
  """(r, t), each [n], with 0 < r <= t < 1: t the larger of two logit-normal(mean, std)
  draws, r the smaller, and r = t with probability 1 - ratio."""
  k_times, k_equal = jax.random.split(rng)
  s = jax.nn.sigmoid(mean + std * jax.random.normal(k_times, (2, n)))
  t, r = jnp.max(s, axis=0), jnp.min(s, axis=0)
  distinct = jax.random.bernoulli(k_equal, ratio, (n,))
  return jnp.where(distinct, r, t), t


def meanflow_target(u_fn, z, r, t, v):
  """(u, u_tgt): the network's u(z, r, t) and the MeanFlow identity's target
  v - (t - r) (v . grad_z u + d_t u) (not yet under stop_gradient), both [B, ...].

  u_fn(z, r, t) -> the average velocity; v: the velocity at (z, t) the derivative follows."""
  u, dudt = jax.jvp(u_fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
  return u, v - _expand(t - r, z) * dudt


def meanflow_loss(u_fn, x, rng, *, mean, std, ratio, p, c):
  """(loss, parts) of one (r, t, eps) per image: the adaptively weighted squared error of
  u(z_t, r, t) against sg(u_tgt), averaged over the batch.

  parts: "loss"; "mse" (the unweighted per-pixel error); "fm_mse" (that error where
  r = t, i.e. flow matching's loss on those images)."""
  k_times, k_eps = jax.random.split(rng)
  r, t = sample_times(k_times, x.shape[0], mean=mean, std=std, ratio=ratio)
  eps = jax.random.normal(k_eps, x.shape)
  z = (1.0 - _expand(t, x)) * x + _expand(t, x) * eps
  u, target = meanflow_target(u_fn, z, r, t, eps - x)
  error = jnp.mean(((u - jax.lax.stop_gradient(target))**2).reshape(x.shape[0], -1), axis=-1)
  weight = jax.lax.stop_gradient(1.0 / (error + c)**p)
  loss = jnp.mean(weight * error)
  equal = (r == t).astype(error.dtype)
  fm_mse = jnp.sum(error * equal) / jnp.maximum(jnp.sum(equal), 1.0)
  return loss, {"loss": loss, "mse": jnp.mean(error), "fm_mse": fm_mse}


def time_grid(steps):
  """The sampler's times [steps + 1], uniform from 1 to 0."""
  return jnp.linspace(1.0, 0.0, steps + 1)


def sample(u_fn, noise, steps, clip=(-1.0, 1.0)):
  """Images from `noise` (z at t = 1) in `steps` average-velocity steps, clipped to `clip`
  (the encoder's range; None: not clipped). u_fn(z, r [B], t [B]) -> the average velocity."""
  grid = time_grid(steps)
  n = noise.shape[0]

  def step(i, z):
    t, r = grid[i], grid[i + 1]
    return z - (t - r) * u_fn(z, jnp.full((n,), r), jnp.full((n,), t))

  x = jax.lax.fori_loop(0, steps, step, noise)
  return x if clip is None else jnp.clip(x, *clip)
