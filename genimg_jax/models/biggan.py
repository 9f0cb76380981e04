"""BigGAN-style generator and discriminator (Brock et al. 2019), sized for 28x28 and
32x32 images (pure Flax linen).

Generator, class-conditional: one class embedding shared by every block, and a
hierarchical latent: z is split into one chunk for the seed and one per block; each
block's conditional BatchNorms take [shared embedding, its chunk] and map it linearly to
a per-channel gain (1 + ...) and bias of BatchNorm's normalized activations. A dense layer
from the first chunk to a 7x7 (28x28 images) or 4x4 (32x32) seed, then up-blocks
(CBN-ReLU-2x up-conv3x3-CBN-ReLU-conv3x3, plus a 2x up-conv1x1 skip), one self-attention
block (SAGAN) after the block whose output has `attention_resolution` pixels a side, and
BN-ReLU-conv3x3-tanh. Every convolution and dense layer of G and D is spectrally
normalized (one power iteration per training step, `u` in "batch_stats").
Discriminator: SNGAN's residual D (models/gan.py's blocks), the self-attention block
after its first block, ReLU and sum pooling, and the projection term of the class.

The truncation trick of BigGAN samples z from a normal truncated to [-t, t]
(gan.z_truncation, tasks/gan.py); orthogonal regularization of G's weights is
`orthogonal_penalty` (objectives/gan.py), added to G's loss with gan.g_ortho_weight.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genimg_jax.models import gan
from genimg_jax.models.layers import upsample_nearest

ModuleDef = Any


def _sn(layer, x, train):
  """layer(x), spectrally normalized (its `u` updated in training)."""
  return nn.SpectralNorm(layer)(x, update_stats=train)


class ConditionalBatchNorm(nn.Module):
  """BatchNorm without its own scale and bias, then (1 + gain(c)) x + bias(c) for the
  condition c [B, D] (BigGAN: [shared class embedding, the block's chunk of z])."""

  @nn.compact
  def __call__(self, x, c, train):
    h = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False)(x)
    C = x.shape[-1]
    gain = nn.Dense(C, use_bias=False, kernel_init=nn.initializers.zeros, name="gain")(c)
    bias = nn.Dense(C, use_bias=False, kernel_init=nn.initializers.zeros, name="bias")(c)
    return h * (1.0 + gain[:, None, None, :]) + bias[:, None, None, :]


class SelfAttention(nn.Module):
  """SAGAN's self-attention: 1x1 query/key/value (C/8, C/8, C/2 channels), keys and values
  max-pooled 2x, out = x + gamma * conv1x1(attention), gamma starting at 0."""
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, train):
    B, H, W, C = x.shape
    pool = lambda v: nn.max_pool(v, (2, 2), (2, 2)) if H % 2 == 0 and W % 2 == 0 else v
    conv = lambda c, v: _sn(self.conv(c, (1, 1), use_bias=False), v, train)
    q = conv(max(C // 8, 1), x).reshape(B, H * W, -1)
    k = pool(conv(max(C // 8, 1), x)).reshape(B, -1, q.shape[-1])
    v = pool(conv(max(C // 2, 1), x))
    v = v.reshape(B, -1, v.shape[-1])
    attn = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k), axis=-1)
    o = jnp.einsum("bqk,bkc->bqc", attn, v).reshape(B, H, W, -1)
    gamma = self.param("gamma", nn.initializers.zeros, ())
    return x + gamma * conv(C, o)


class _GBlock(nn.Module):
  channels: int
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, c, train):
    conv = lambda ch, k, v: _sn(self.conv(ch, (k, k)), v, train)
    h = nn.relu(ConditionalBatchNorm()(x, c, train))
    h = conv(self.channels, 3, upsample_nearest(h))
    h = nn.relu(ConditionalBatchNorm()(h, c, train))
    h = conv(self.channels, 3, h)
    return h + conv(self.channels, 1, upsample_nearest(x))


class BigGANGenerator(nn.Module):
  """The BigGAN-style generator of the module doc."""
  image_shape: Sequence[int]
  channels: int = 64
  num_classes: int = 10
  embed_dim: int = 32
  attention_resolution: int = 14
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, z_BZ, y_B=None, train=True):
    H, W, C = self.image_shape
    seed = 7 if H == 28 else 4
    n_up = {28: 2, 32: 3}.get(H)
    if n_up is None or H != W:
      raise ValueError(f"The BigGAN generator is for 28x28 or 32x32 images, got {H}x{W}.")
    if not self.num_classes:
      raise ValueError("The BigGAN generator is class-conditional: model.num_classes must be > 0.")
    chunks = jnp.split(z_BZ, n_up + 1, axis=-1)  # latent_dim divisible by the blocks + 1
    shared = nn.Embed(self.num_classes, self.embed_dim, name="shared")(y_B)
    h = _sn(nn.Dense(seed * seed * self.channels), chunks[0], train)
    h = h.reshape(-1, seed, seed, self.channels)
    for i in range(n_up):
      h = _GBlock(self.channels, self.conv)(h, jnp.concatenate([shared, chunks[i + 1]], -1), train)
      if h.shape[1] == self.attention_resolution:
        h = SelfAttention(self.conv)(h, train)
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
    return jnp.tanh(_sn(self.conv(C, (3, 3)), h, train))


class BigGANDiscriminator(nn.Module):
  """SNGAN's residual D with a self-attention block after its first block."""
  channels: int = 64
  num_classes: int = 10
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x_BHWC, y_B=None, train=True):
    h = gan._DBlock(self.channels, True, True, True, self.conv)(x_BHWC, train)
    h = SelfAttention(self.conv)(h, train)
    h = gan._DBlock(self.channels, True, False, True, self.conv)(h, train)
    h = gan._DBlock(self.channels, False, False, True, self.conv)(h, train)
    h = jnp.sum(nn.relu(h), axis=(1, 2))
    return gan._Projection(self.num_classes, True)(h, y_B, train)


def check_latent_dim(latent_dim, image_shape):
  """Refuses a latent_dim that the generator cannot split into its chunks (the seed's
  and one per block: 3 at 28x28, 4 at 32x32)."""
  n = {28: 3, 32: 4}.get(image_shape[0], 1)
  if latent_dim % n:
    raise ValueError(f"The BigGAN generator splits z into {n} chunks: model.latent_dim must be "
                     f"divisible by {n}, got {latent_dim}.")
