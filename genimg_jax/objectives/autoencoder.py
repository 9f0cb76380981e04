"""The autoencoder objective: reconstruction plus the bottleneck's weighted terms, and the
optional feature-matching and adversarial terms.

  loss = reconstruction + commitment_weight * commitment + codebook_weight * codebook
         + kl_weight * kl + features_weight * features + adversarial_weight * adversarial

Every term is a mean per element: the reconstruction's over pixels (squared error, "l2",
or absolute error, "l1", on images in [-1, 1]); the commitment and codebook terms over
latent elements (VQ-VAE's ||z - sg(e)||^2 and ||sg(z) - e||^2); the KL over latent
elements (the KL of the Gaussian latent per image divided by its h * w * channels); the
feature term over images and feature dimensions (||phi(x_r) - phi(x)||^2, phi a frozen
network's features); the adversarial term is the generator's GAN loss
(objectives/gan.py) of the reconstructions under a discriminator, the mean over its
patches. A bottleneck reports only the terms it has (models/bottlenecks.py): VQ with an
EMA codebook has no codebook term, FSQ none at all; the feature and adversarial terms are
there when their networks are given. The discriminator's own loss is the task's
(tasks/autoencoder.py).
"""
import jax.numpy as jnp

RECONSTRUCTIONS = ("l2", "l1")
TERMS = ("commitment", "codebook", "kl", "features", "adversarial")


def reconstruction_error(x, xr, kind):
  """Mean over pixels of the squared ("l2") or absolute ("l1") error."""
  err = xr - x
  return jnp.mean(err**2) if kind == "l2" else jnp.mean(jnp.abs(err))


def feature_distance(features, x, xr):
  """Mean over images and feature dimensions of (phi(xr) - phi(x))^2: the reconstruction
  matches the image in the feature network's space."""
  return jnp.mean((features(xr) - features(x))**2)


def autoencoder_loss(params, batch_stats, x, rngs, apply, reconstruction, weights,
                     features=None, adversarial=None):
  """(loss, (parts, batch_stats, reconstructions)) of one batch x in [-1, 1].

  apply: the Autoencoder's apply; batch_stats: its forward-updated state (the EMA
  codebook), returned updated; rngs: {"latent", "restart"} keys; weights: {term: weight}
  for each of TERMS; features: None, or a frozen network's images [-1, 1] -> features
  [N, D] (the feature term); adversarial: None, or reconstructions -> the generator's GAN
  loss under a fixed discriminator (the adversarial term). parts: the loss, the
  reconstruction error, each term (unweighted) and the bottleneck's statistics.
  """
  variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
  (xr, terms, stats), updated = apply(variables, x, train=True, rngs=rngs,
                                      mutable=["batch_stats"])
  if features is not None:
    terms = dict(terms, features=feature_distance(features, x, xr))
  if adversarial is not None:
    terms = dict(terms, adversarial=adversarial(xr))
  rec = reconstruction_error(x, xr, reconstruction)
  loss = rec + sum(weights[k] * v for k, v in terms.items())
  parts = {"loss": loss, "reconstruction": rec, **terms, **stats}
  return loss, (parts, updated.get("batch_stats", {}), xr)
