"""The bottlenecks of the autoencoder task: between its encoder and its decoder.

A bottleneck maps the encoder's output z [B, h, w, C] to what the decoder reads, and
reports its loss terms and statistics:

  __call__(z, train) -> (z_q, terms, stats)
    z_q    what the decoder reads, same spatial shape as z (channels: code_dim)
    terms  {name: scalar}: the loss terms it adds, unweighted ("commitment", "codebook",
           "kl"); the objective weighs them (objectives/autoencoder.py)
    stats  {name: scalar}: what it reports without training on it ("perplexity",
           "usage": the batch's codes)
  indices(z) -> int [B, h, w]            (discrete bottlenecks: the code of each position)
  codes(indices) -> z_q                  (and back: what a prior's samples decode from)
  size                                   (the codebook's size; 0 for a continuous one)

Three kinds, built by `build_bottleneck` from model.bottleneck:
* "vq": vector quantization (van den Oord et al. 2017): the nearest of num_codes learned
  vectors, the straight-through estimator, the commitment loss; the codebook learned by
  exponential moving averages of the assigned encoder outputs (the paper's appendix;
  `codebook_ema` > 0; the EMA statistics live in Flax's "batch_stats" collection, updated
  by the forward pass like BatchNorm's) or by the codebook loss (`codebook_ema` = 0), and
  dead codes restarted: a code whose EMA usage falls below `restart_below` assigned
  vectors per step is moved onto a random encoder output of the batch (Dhariwal et al.
  2020's Jukebox; train=True only).
* "fsq": finite scalar quantization (Mentzer et al. 2023): each of len(levels) channels
  bounded by tanh and rounded to one of levels[i] values (straight-through); the implied
  codebook has prod(levels) codes and nothing to learn, no auxiliary loss.
* "kl": the KL-regularized Gaussian latent of latent diffusion (Rombach et al. 2022): the
  encoder gives a mean and a log-variance per channel, the decoder reads a sample in
  training and the mean otherwise; the KL to N(0, I), averaged over latent elements, is
  the "kl" term.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BOTTLENECKS = ("vq", "fsq", "kl")


def straight_through(z, q):
  """q in the forward pass, the identity's gradient to z in the backward pass."""
  return z + jax.lax.stop_gradient(q - z)


def code_statistics(indices, num_codes):
  """{"perplexity": exp(entropy of the codes' histogram), "usage": the fraction of the
  codebook used} of a batch of code indices."""
  return histogram_statistics(jnp.bincount(indices.reshape(-1), length=num_codes))


def histogram_statistics(counts):
  """code_statistics of the codes' counts [num_codes] (a batch's, or a test set's)."""
  counts = jnp.asarray(counts, jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {"perplexity": jnp.exp(entropy), "usage": jnp.mean(counts > 0)}


def ema_codebook(cluster_size, embed_sum, onehot_NK, z_NC, decay, eps=1e-5):
  """One EMA step of the codebook (van den Oord et al. 2017, appendix A.1):
  N_k <- decay N_k + (1 - decay) n_k, m_k <- decay m_k + (1 - decay) sum of the z assigned
  to k, e_k = m_k / N_k (N_k Laplace-smoothed so that an unused code stays finite).
  Returns (cluster_size, embed_sum, codebook)."""
  cluster_size = decay * cluster_size + (1 - decay) * onehot_NK.sum(0)
  embed_sum = decay * embed_sum + (1 - decay) * onehot_NK.T @ z_NC
  n = cluster_size.sum()
  smoothed = (cluster_size + eps) / (n + cluster_size.shape[0] * eps) * n
  return cluster_size, embed_sum, embed_sum / smoothed[:, None]


class VectorQuantizer(nn.Module):
  """The "vq" bottleneck (see the module doc)."""
  num_codes: int
  code_dim: int
  codebook_ema: float = 0.99     # 0: the codebook is a parameter learned by the codebook loss
  restart_below: float = 0.0     # EMA assignments per step under which a code is restarted

  def setup(self):
    init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    if self.codebook_ema > 0:
      shape = (self.num_codes, self.code_dim)
      self.codebook = self.variable("batch_stats", "codebook",
                                    lambda: init(self.make_rng("params"), shape))
      self.cluster_size = self.variable("batch_stats", "cluster_size",
                                        lambda: jnp.ones((self.num_codes,)))
      self.embed_sum = self.variable("batch_stats", "embed_sum", lambda: self.codebook.value)
    else:
      self.embedding = self.param("codebook", init, (self.num_codes, self.code_dim))

  def _codebook(self):
    return self.codebook.value if self.codebook_ema > 0 else self.embedding

  def indices(self, z):
    e = self._codebook()
    d = (jnp.sum(z**2, -1, keepdims=True) - 2 * z @ e.T + jnp.sum(e**2, -1))
    return jnp.argmin(d, axis=-1)

  def codes(self, indices):
    return self._codebook()[indices]

  @property
  def size(self):
    return self.num_codes

  def __call__(self, z, train=False):
    z = z.astype(jnp.float32)
    idx = self.indices(z)
    q = self.codes(idx)
    terms = {"commitment": jnp.mean((z - jax.lax.stop_gradient(q))**2)}
    if self.codebook_ema > 0:
      if train and not self.is_initializing():
        self._ema_update(z, idx)
    else:
      terms["codebook"] = jnp.mean((jax.lax.stop_gradient(z) - q)**2)
    return straight_through(z, q), terms, code_statistics(idx, self.num_codes)

  def _ema_update(self, z, idx):
    z_NC = jax.lax.stop_gradient(z).reshape(-1, self.code_dim)
    onehot = jax.nn.one_hot(idx.reshape(-1), self.num_codes, dtype=jnp.float32)
    size, sums, book = ema_codebook(self.cluster_size.value, self.embed_sum.value, onehot,
                                    z_NC, self.codebook_ema)
    if self.restart_below > 0:  # dead codes onto random encoder outputs of this batch
      dead = size < self.restart_below
      pick = jax.random.randint(self.make_rng("restart"), (self.num_codes,), 0, z_NC.shape[0])
      book = jnp.where(dead[:, None], z_NC[pick], book)
      sums = jnp.where(dead[:, None], z_NC[pick], sums)
      size = jnp.where(dead, 1.0, size)
    self.cluster_size.value, self.embed_sum.value, self.codebook.value = size, sums, book


class FSQ(nn.Module):
  """The "fsq" bottleneck (see the module doc): channel i takes levels[i] values in [-1, 1]."""
  levels: Sequence[int]

  @property
  def size(self):
    return int(np.prod(self.levels))

  def _bound(self, z, eps=1e-3):
    levels = jnp.asarray(self.levels, jnp.float32)
    half_l = (levels - 1) * (1 - eps) / 2
    offset = jnp.where(jnp.asarray(self.levels) % 2 == 1, 0.0, 0.5)
    shift = jnp.tan(offset / half_l)  # so that an even number of levels is centred too
    return jnp.tanh(z + shift) * half_l - offset

  def _basis(self):
    """Each channel's place value in a code's index: 1, L0, L0 * L1, ..."""
    return np.cumprod([1] + list(self.levels[:-1]))

  def _half_width(self):
    return jnp.asarray([l // 2 for l in self.levels], jnp.float32)

  def quantize(self, z):
    """z [..., len(levels)] -> its codes, in [-1, 1], straight-through."""
    bounded = self._bound(z)
    return straight_through(bounded, jnp.round(bounded)) / self._half_width()

  def indices(self, z):
    return self.indices_of_codes(self.quantize(z))

  def indices_of_codes(self, q):
    """The index of each code (an array of codes in [-1, 1], as quantize gives)."""
    digits = jnp.round(q * self._half_width() + self._half_width())
    return jnp.sum(digits * self._basis(), axis=-1).astype(jnp.int32)

  def codes(self, indices):
    digits = (indices[..., None] // self._basis()) % np.asarray(self.levels)
    return (digits - self._half_width()) / self._half_width()

  @nn.compact
  def __call__(self, z, train=False):
    del train
    q = self.quantize(z.astype(jnp.float32))
    return q, {}, code_statistics(self.indices_of_codes(q), self.size)


class GaussianLatent(nn.Module):
  """The "kl" bottleneck (see the module doc): z holds a mean and a log-variance."""
  latent_dim: int

  @property
  def size(self):
    return 0

  @nn.compact
  def __call__(self, z, train=False):
    z = z.astype(jnp.float32)
    mean, logvar = z[..., :self.latent_dim], jnp.clip(z[..., self.latent_dim:], -30.0, 20.0)
    kl = 0.5 * (mean**2 + jnp.exp(logvar) - 1.0 - logvar)  # per latent element
    out = mean
    if train:
      out = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("latent"), mean.shape)
    return out, {"kl": jnp.mean(kl)}, {}


def build_bottleneck(model_config):
  """(bottleneck module, channels the encoder must output) from model_config."""
  m = model_config
  if m.bottleneck == "vq":
    return VectorQuantizer(m.num_codes, m.code_dim, m.codebook_ema, m.restart_below), m.code_dim
  if m.bottleneck == "fsq":
    return FSQ(tuple(m.fsq_levels)), len(m.fsq_levels)
  if m.bottleneck == "kl":
    return GaussianLatent(m.code_dim), 2 * m.code_dim
  raise ValueError(f"Unknown model.bottleneck {m.bottleneck!r}; allowed: {BOTTLENECKS}")
