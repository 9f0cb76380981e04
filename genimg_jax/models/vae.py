"""VAE encoders and decoders (pure Flax linen).

The encoder maps x_BHWC to the mean and log-variance of a diagonal Gaussian
q(z|x). The decoder maps z_BZ to `out_params` maps per pixel channel, which the
likelihood (genimg_jax/objectives/vae.py) interprets: 1 (Bernoulli logits or a
fixed-variance Gaussian mean) or 2 (mean and log-scale of a Gaussian or a
discretized logistic). Decoder output: [B, H, W, C, out_params].

model.dtype="bfloat16" computes every layer in bfloat16 (parameters, optimizer
state, the loss and its reduction stay float32; encoder and decoder outputs are
cast back to float32). What TPUs do natively; on CPUs it may be slower, see
benchmarks/README.md.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genimg_jax.models.layers import Conv, ConvTranspose4x4s2, StridedConv, get_activation


def _heads(h, latent_dim, dtype):
  """Dense heads for the posterior mean and log-variance, returned in float32."""
  mean = nn.Dense(latent_dim, dtype=dtype, name="mean")(h)
  logvar = nn.Dense(latent_dim, dtype=dtype, name="logvar")(h)
  return mean.astype(jnp.float32), logvar.astype(jnp.float32)


class MLPEncoder(nn.Module):
  """x_BHWC -> (mean_BZ, logvar_BZ) through `depth` dense layers of `hidden` units."""
  latent_dim: int
  hidden: int
  depth: int
  activation: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    act = get_activation(self.activation)
    h = x_BHWC.reshape(x_BHWC.shape[0], -1)
    for _ in range(self.depth):
      h = act(nn.Dense(self.hidden, dtype=self.dtype)(h))
    return _heads(h, self.latent_dim, self.dtype)


class MLPDecoder(nn.Module):
  """z_BZ -> [B, H, W, C, out_params] through `depth` dense layers."""
  image_shape: Sequence[int]
  out_params: int
  hidden: int
  depth: int
  activation: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BZ):
    act = get_activation(self.activation)
    h = z_BZ
    for _ in range(self.depth):
      h = act(nn.Dense(self.hidden, dtype=self.dtype)(h))
    out = nn.Dense(int(np.prod(self.image_shape)) * self.out_params, dtype=self.dtype)(h)
    return out.astype(jnp.float32).reshape(z_BZ.shape[0], *self.image_shape, self.out_params)


class ConvEncoder(nn.Module):
  """Strided 3x3 convolutions (channels doubling per stage), then dense heads.

  The stride-2 convolutions are layers.StridedConv: the same function and parameters as
  nn.Conv(strides=2, padding="SAME"), with gradients XLA:CPU computes much faster."""
  latent_dim: int
  channels: int
  depth: int
  activation: str = "relu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    act = get_activation(self.activation)
    h = x_BHWC
    for i in range(self.depth):
      h = act(StridedConv(self.channels * 2**i, 3, dtype=self.dtype)(h))
      h = act(Conv(self.channels * 2**i, 3, dtype=self.dtype)(h))
    h = h.reshape(h.shape[0], -1)
    return _heads(h, self.latent_dim, self.dtype)


class ConvDecoder(nn.Module):
  """Dense to a small feature map, then 4x4 stride-2 transposed convolutions back to HxW.

  H and W must be divisible by 2**depth (28 with depth 2, 32 with up to 5). The 3x3
  convolutions are layers.Conv (nn.Conv's parameters and outputs): the output layer, with
  few features, takes its matmul form, which XLA:CPU runs faster (vae_mnist_conv steps
  +14-16%).
  """
  image_shape: Sequence[int]
  out_params: int
  channels: int
  depth: int
  activation: str = "relu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BZ):
    act = get_activation(self.activation)
    H, W, C = self.image_shape
    f = 2**self.depth
    if H % f or W % f:
      raise ValueError(f"ConvDecoder: image size {H}x{W} not divisible by 2**depth={f}.")
    top = self.channels * 2**(self.depth - 1)
    h = act(nn.Dense(H // f * W // f * top, dtype=self.dtype)(z_BZ)).reshape(-1, H // f, W // f, top)
    for i in reversed(range(self.depth)):
      h = act(ConvTranspose4x4s2(self.channels * 2**i, dtype=self.dtype)(h))
      h = act(Conv(self.channels * 2**i, 3, dtype=self.dtype)(h))
    out = Conv(C * self.out_params, 3, dtype=self.dtype)(h)
    return out.astype(jnp.float32).reshape(z_BZ.shape[0], H, W, C, self.out_params)


class VAE(nn.Module):
  """Encoder + decoder. `encode`, `decode` and `__call__` (for init) are exposed."""
  encoder: nn.Module
  decoder: nn.Module

  def encode(self, x_BHWC):
    return self.encoder(x_BHWC)

  def decode(self, z_BZ):
    return self.decoder(z_BZ)

  def __call__(self, x_BHWC, z_BZ):
    return self.encode(x_BHWC), self.decode(z_BZ)


MODELS = ("mlp_vae", "conv_vae")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_vae(model_config, image_shape, out_params):
  """The VAE named by model_config.name for images of `image_shape`."""
  m = model_config
  if m.dtype not in DTYPES:
    raise ValueError(f"Unknown model.dtype {m.dtype!r}; allowed: {sorted(DTYPES)}")
  dt = DTYPES[m.dtype]
  if m.name == "mlp_vae":
    enc = MLPEncoder(m.latent_dim, m.hidden, m.depth, m.activation, dt)
    dec = MLPDecoder(tuple(image_shape), out_params, m.hidden, m.depth, m.activation, dt)
  elif m.name == "conv_vae":
    enc = ConvEncoder(m.latent_dim, m.hidden, m.depth, m.activation, dt)
    dec = ConvDecoder(tuple(image_shape), out_params, m.hidden, m.depth, m.activation, dt)
  else:
    raise ValueError(f"Unknown model {m.name!r} for the vae task; allowed: {MODELS}")
  return VAE(enc, dec)
