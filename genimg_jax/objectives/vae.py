"""VAE objectives as pure functions: likelihoods, the Gaussian KL, ELBO and IWAE.

Conventions: x_BHWC is the data as the likelihood sees it ({0,1} or [0,1] for
Bernoulli, [-1,1] for the Gaussian and the discretized logistic); `out` is the
decoder output [..., H, W, C, P] with P parameters per pixel channel. All
log-probabilities are in nats and summed over pixels, one value per image.
"""
import jax
import jax.numpy as jnp
import numpy as np

# Likelihood name -> number of decoder parameters per pixel channel.
LIKELIHOODS = {"bernoulli": 1, "gaussian": 1, "gaussian_learned": 2, "logistic": 2}
LOG_2PI = float(np.log(2 * np.pi))
MIN_LOG_SCALE = -7.0  # keeps learned scales from collapsing to a spike


def _sum_pixels(v):
  """Sums the (flattened) pixel axis: one value per image."""
  return v.sum(axis=-1)


def gaussian_kl(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, I)), summed over the last axis."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def diag_gaussian_log_prob(z, mean, logvar):
  """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + (z - mean)**2 * jnp.exp(-logvar), axis=-1)


def softplus(x):
  """log(1 + e^x) as max(x, 0) + log1p(e^-|x|): the same values as jax.nn.softplus, in a
  form XLA:CPU vectorizes (benchmarks/README.md, "Design notes")."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def bernoulli_log_prob(logits, x):
  """Elementwise log Bernoulli(x; sigmoid(logits)) = x*logits - softplus(logits).

  x may be soft (in [0, 1]): then it is the cross-entropy.
  """
  return x * logits - softplus(logits)


def gaussian_log_prob(x, mean, log_scale):
  """Elementwise log N(x; mean, exp(log_scale)**2)."""
  return -0.5 * (LOG_2PI + 2 * log_scale + ((x - mean) * jnp.exp(-log_scale))**2)


def discretized_logistic_log_prob(x, mean, log_scale, num_bins=256):
  """Elementwise log-probability of x in [-1, 1] under a logistic discretized to
  `num_bins` bins (PixelCNN++, Salimans et al. 2017). The edge bins take the
  tails, so the probabilities over the bins sum to 1 exactly.
  """
  half_bin = 1.0 / (num_bins - 1)
  centered = x - mean
  inv_scale = jnp.exp(-log_scale)
  plus_in = inv_scale * (centered + half_bin)
  min_in = inv_scale * (centered - half_bin)
  log_cdf_plus = jax.nn.log_sigmoid(plus_in)          # for the lowest bin
  log_one_minus_cdf_min = jax.nn.log_sigmoid(-min_in)  # for the highest bin
  cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  mid_in = inv_scale * centered
  log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in)
  # Where the bin mass underflows, fall back to density x bin width.
  log_prob_mid = jnp.where(cdf_delta > 1e-5,
                           jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                           log_pdf_mid + jnp.log(2 * half_bin))
  return jnp.where(x < -1 + half_bin, log_cdf_plus,
                   jnp.where(x > 1 - half_bin, log_one_minus_cdf_min, log_prob_mid))


def log_likelihood(likelihood, x, out, gaussian_scale=0.1):
  """log p(x|z) per image: x_BHWC against decoder output out [..., H, W, C, P]."""
  # Flatten H, W, C: XLA:CPU loops over one long pixel axis several times faster
  # than over three short ones (measured on the k=5000 evaluation).
  x = x.reshape(*x.shape[:-3], -1)
  out = out.reshape(*out.shape[:-4], -1, out.shape[-1])
  if likelihood == "bernoulli":
    lp = bernoulli_log_prob(out[..., 0], x)
  elif likelihood == "gaussian":
    lp = gaussian_log_prob(x, out[..., 0], jnp.log(gaussian_scale))
  elif likelihood == "gaussian_learned":
    lp = gaussian_log_prob(x, out[..., 0], jnp.maximum(out[..., 1], MIN_LOG_SCALE))
  elif likelihood == "logistic":
    lp = discretized_logistic_log_prob(x, out[..., 0], jnp.maximum(out[..., 1], MIN_LOG_SCALE))
  else:
    raise ValueError(f"Unknown likelihood {likelihood!r}; allowed: {sorted(LIKELIHOODS)}")
  return _sum_pixels(lp)


def likelihood_mean(likelihood, out):
  """The mean image of p(x|z), in the data's range, for sample grids."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(out[..., 0])
  return jnp.clip(out[..., 0], -1.0, 1.0)


def elbo_terms(model_apply, params, x, rng, likelihood, gaussian_scale=0.1):
  """Single-sample ELBO parts per image: (rec = -log p(x|z), kl), each [B]."""
  mean, logvar = model_apply(params, x, method="encode")
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
  out = model_apply(params, z, method="decode")
  rec = -log_likelihood(likelihood, x, out, gaussian_scale)
  return rec, gaussian_kl(mean, logvar)


def elbo_loss(params, x, rng, *, model_apply, likelihood, beta=1.0, gaussian_scale=0.1):
  """Negative (beta-)ELBO averaged over the batch, with its named parts.

  loss = E[-log p(x|z)] + beta * KL(q(z|x) || p(z)); "elbo" is the unweighted bound.
  """
  rec, kl = elbo_terms(model_apply, params, x, rng, likelihood, gaussian_scale)
  loss = jnp.mean(rec + beta * kl)
  return loss, {"loss": loss, "rec": jnp.mean(rec), "kl": jnp.mean(kl),
                "elbo": -jnp.mean(rec + kl)}


def iwae_log_weights(model_apply, params, x, rng, k, likelihood, gaussian_scale=0.1):
  """log w_i = log p(x, z_i) - log q(z_i|x) for k samples z_i ~ q(z|x): [B, k]."""
  mean, logvar = model_apply(params, x, method="encode")
  B, Z = mean.shape
  z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * jax.random.normal(rng, (B, k, Z))
  out = model_apply(params, z.reshape(B * k, Z), method="decode")
  out = out.reshape(B, k, *out.shape[1:])
  log_px = log_likelihood(likelihood, x[:, None], out, gaussian_scale)
  log_pz = diag_gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
  log_qz = diag_gaussian_log_prob(z, mean[:, None], logvar[:, None])
  return log_px + log_pz - log_qz


def iwae_bound(model_apply, params, x, rng, k, likelihood, gaussian_scale=0.1, chunk=0):
  """The IWAE bound log (1/k) sum_i w_i per image [B] (Burda et al. 2016).

  k=1 is the ELBO (in expectation, with a sampled KL). With `chunk` < k the k
  samples are drawn `chunk` at a time and combined with a streaming logsumexp,
  so memory does not grow with k (k=5000 for evaluation).
  """
  chunk = k if chunk <= 0 or chunk >= k else chunk
  if k % chunk:
    raise ValueError(f"iwae k={k} must be a multiple of the chunk size {chunk}.")
  if chunk == k:
    log_w = iwae_log_weights(model_apply, params, x, rng, k, likelihood, gaussian_scale)
    return jax.nn.logsumexp(log_w, axis=1) - jnp.log(k)

  def body(carry, key):
    running_max, running_sum = carry
    log_w = iwae_log_weights(model_apply, params, x, key, chunk, likelihood, gaussian_scale)
    new_max = jnp.maximum(running_max, log_w.max(axis=1))
    running_sum = (running_sum * jnp.exp(running_max - new_max)
                   + jnp.exp(log_w - new_max[:, None]).sum(axis=1))
    return (new_max, running_sum), None

  init = (jnp.full(x.shape[:1], -jnp.inf), jnp.zeros(x.shape[:1]))
  (m, s), _ = jax.lax.scan(body, init, jax.random.split(rng, k // chunk))
  return m + jnp.log(s) - jnp.log(k)


def iwae_loss(params, x, rng, *, model_apply, likelihood, k, gaussian_scale=0.1):
  """Negative IWAE-k bound averaged over the batch (the IWAE training objective)."""
  bound = iwae_bound(model_apply, params, x, rng, k, likelihood, gaussian_scale)
  loss = -jnp.mean(bound)
  return loss, {"loss": loss, "iwae_bound": -loss}
