"""GAN losses and gradient penalties as pure functions.

Losses take discriminator outputs (logits / critic values) on real and fake
batches and return scalars; `gan_losses(name)` gives the (d_loss, g_loss) pair.
Penalties take a function x -> D(x) (one value per example) and batches;
`orthogonal_penalty` takes the generator's parameters (BigGAN, Brock et al. 2019);
`path_length_penalty` the StyleGAN generator's synthesis function and its ws.

References: minimax and non-saturating (Goodfellow et al. 2014), hinge (Lim & Ye
2017; Miyato et al. 2018), Wasserstein (Arjovsky et al. 2017), least squares (Mao
et al. 2017); WGAN-GP (Gulrajani et al. 2017), DRAGAN (Kodali et al. 2017),
R1 / R2 (Mescheder et al. 2018), path length (Karras et al. 2020).
"""
import jax
import jax.numpy as jnp
import numpy as np


# --- discriminator losses ------------------------------------------------------
def minimax_d_loss(d_real, d_fake):
  """-log D(x) - log(1 - D(G(z))), D = sigmoid(logits)."""
  return jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))


def hinge_d_loss(d_real, d_fake):
  return jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake))


def wasserstein_d_loss(d_real, d_fake):
  return jnp.mean(d_fake) - jnp.mean(d_real)


def least_squares_d_loss(d_real, d_fake):
  """0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2 (labels a=0, b=1)."""
  return 0.5 * jnp.mean((d_real - 1.0)**2) + 0.5 * jnp.mean(d_fake**2)


# --- generator losses -----------------------------------------------------------
def minimax_g_loss(d_fake):
  """The original, saturating loss: log(1 - D(G(z))) (minimized by G)."""
  return -jnp.mean(jax.nn.softplus(d_fake))


def non_saturating_g_loss(d_fake):
  """-log D(G(z))."""
  return jnp.mean(jax.nn.softplus(-d_fake))


def hinge_g_loss(d_fake):
  return -jnp.mean(d_fake)


def least_squares_g_loss(d_fake):
  """0.5 (D(G(z)) - 1)^2 (label c=1)."""
  return 0.5 * jnp.mean((d_fake - 1.0)**2)


GAN_LOSSES = {
    "minimax": (minimax_d_loss, minimax_g_loss),
    "non_saturating": (minimax_d_loss, non_saturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "wasserstein": (wasserstein_d_loss, hinge_g_loss),  # G maximizes the critic: -E[D(G(z))]
    "least_squares": (least_squares_d_loss, least_squares_g_loss),
}


def gan_losses(name):
  """(d_loss(d_real, d_fake), g_loss(d_fake)) for a loss name."""
  if name not in GAN_LOSSES:
    raise ValueError(f"Unknown GAN loss {name!r}; allowed: {sorted(GAN_LOSSES)}")
  return GAN_LOSSES[name]


# --- gradient penalties ---------------------------------------------------------
def _grad_sq_norm(d_fn, x):
  """||d D(x_i) / d x_i||^2 per example (D applied to the batch; examples independent)."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(x)
  return jnp.sum(grads.reshape(grads.shape[0], -1)**2, axis=-1)


def wgan_gp_penalty(d_fn, real, fake, rng):
  """E[(||grad D(x_hat)|| - 1)^2] at x_hat uniformly between real and fake."""
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = eps * real + (1.0 - eps) * fake
  return jnp.mean((jnp.sqrt(_grad_sq_norm(d_fn, x_hat) + 1e-12) - 1.0)**2)


def dragan_penalty(d_fn, real, fake, rng, c=0.5):
  """E[(||grad D(x + delta)|| - 1)^2], delta ~ U(0, 1) * c * std(x) (Kodali et al. 2017)."""
  del fake
  u = jax.random.uniform(rng, real.shape)
  x_hat = real + c * jnp.std(real) * u
  return jnp.mean((jnp.sqrt(_grad_sq_norm(d_fn, x_hat) + 1e-12) - 1.0)**2)


def r1_penalty(d_fn, real, fake, rng):
  """E[||grad D(x)||^2] on real data (weight gamma/2 is applied by the caller)."""
  del fake, rng
  return jnp.mean(_grad_sq_norm(d_fn, real))


def r2_penalty(d_fn, real, fake, rng):
  """E[||grad D(G(z))||^2] on generated data."""
  del real, rng
  return jnp.mean(_grad_sq_norm(d_fn, fake))


PENALTIES = {"wgan_gp": wgan_gp_penalty, "dragan": dragan_penalty,
             "r1": r1_penalty, "r2": r2_penalty}


def path_length_penalty(synthesize, ws, pl_mean, rng, decay=0.01):
  """StyleGAN2's path-length regularization (Karras et al. 2020, eq. 4): for a random
  image-space direction y ~ N(0, I) / sqrt(H W), the length a = ||J_w^T y|| of the ws'
  gradient of <synthesize(ws), y> (its squares summed over w's width, averaged over the
  layers, the root), pulled towards its running mean. synthesize: ws [B, L, W] -> images
  [B, H, W, C]. Returns (E[(a - mean')^2], mean', a [B]) with mean' = pl_mean + decay
  (E[a] - pl_mean), the running mean updated first (and not differentiated), as the
  paper's code does."""
  images, vjp = jax.vjp(synthesize, ws)
  H, W = images.shape[1:3]
  y = jax.random.normal(rng, images.shape, images.dtype) / np.sqrt(H * W)
  (grads,) = vjp(y)
  lengths = jnp.sqrt(jnp.mean(jnp.sum(grads ** 2, axis=2), axis=1))
  new_mean = jax.lax.stop_gradient(pl_mean + decay * (jnp.mean(lengths) - pl_mean))
  return jnp.mean((lengths - new_mean) ** 2), new_mean, lengths


def orthogonal_penalty(params):
  """BigGAN's orthogonal regularization (Brock et al. 2019): the sum over the weight
  matrices of ||W^T W (1 - I)||_F^2, the squared cosines-without-normalization between
  distinct filters, with W a kernel as [fan_in, features] (a convolution's k x k x C_in
  rows). Vectors, embeddings and the conditional BatchNorm's gain and bias maps are left
  out, as in BigGAN."""
  total = jnp.zeros(())
  for path, w in jax.tree_util.tree_leaves_with_path(params):
    names = [str(getattr(k, "key", k)) for k in path]
    if names[-1] != "kernel" or w.ndim < 2 or any("ConditionalBatchNorm" in n for n in names):
      continue
    m = w.reshape(-1, w.shape[-1])
    gram = m.T @ m
    total = total + jnp.sum((gram * (1.0 - jnp.eye(gram.shape[0], dtype=gram.dtype))) ** 2)
  return total
