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

The convolutional encoder and decoder take their convolution modules as fields
(`conv`, `conv_transpose`) that default to nn.Conv and nn.ConvTranspose; build_vae
passes layers.conv_modules(model.conv_impl), which on a CPU are faster forms of the same.
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genimg_jax.models.layers import conv_modules, down_stages, get_activation, up_stages

ModuleDef = Any


def _heads(h, latent_dim, dtype):
  """Dense heads for the posterior mean and log-variance, returned in float32."""
  mean = nn.Dense(latent_dim, dtype=dtype, name="mean")(h)
  logvar = nn.Dense(latent_dim, dtype=dtype, name="logvar")(h)
  return mean.astype(jnp.float32), logvar.astype(jnp.float32)


class MLPEncoder(nn.Module):
  """x_BHWC -> (mean_BZ, logvar_BZ) through `depth` dense layers of `units` units."""
  latent_dim: int
  units: int
  depth: int
  activation: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    act = get_activation(self.activation)
    h = x_BHWC.reshape(x_BHWC.shape[0], -1)
    for _ in range(self.depth):
      h = act(nn.Dense(self.units, dtype=self.dtype)(h))
    return _heads(h, self.latent_dim, self.dtype)


class MLPDecoder(nn.Module):
  """z_BZ -> [B, H, W, C, out_params] through `depth` dense layers."""
  image_shape: Sequence[int]
  out_params: int
  units: int
  depth: int
  activation: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BZ):
    act = get_activation(self.activation)
    h = z_BZ
    for _ in range(self.depth):
      h = act(nn.Dense(self.units, dtype=self.dtype)(h))
    out = nn.Dense(int(np.prod(self.image_shape)) * self.out_params, dtype=self.dtype)(h)
    return out.astype(jnp.float32).reshape(z_BZ.shape[0], *self.image_shape, self.out_params)


class ConvEncoder(nn.Module):
  """Per stage a 3x3 stride-2 and a 3x3 convolution (channels doubling per stage), then
  dense heads."""
  latent_dim: int
  channels: int
  depth: int
  activation: str = "relu"
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x_BHWC):
    conv = functools.partial(self.conv, dtype=self.dtype)
    h = down_stages(x_BHWC, conv, self.channels, self.depth, get_activation(self.activation))
    h = h.reshape(h.shape[0], -1)
    return _heads(h, self.latent_dim, self.dtype)


class ConvDecoder(nn.Module):
  """Dense to a small feature map, then 4x4 stride-2 transposed convolutions back to HxW.

  Per stage a 4x4 stride-2 transposed convolution and a 3x3 convolution; a 3x3
  convolution to the output maps. H and W must be divisible by 2**depth (28 with depth 2,
  32 with up to 5).
  """
  image_shape: Sequence[int]
  out_params: int
  channels: int
  depth: int
  activation: str = "relu"
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = nn.ConvTranspose

  @nn.compact
  def __call__(self, z_BZ):
    act = get_activation(self.activation)
    conv = functools.partial(self.conv, kernel_size=(3, 3), dtype=self.dtype)
    H, W, C = self.image_shape
    f = 2**self.depth
    if H % f or W % f:
      raise ValueError(f"ConvDecoder: image size {H}x{W} not divisible by 2**depth={f}.")
    top = self.channels * 2**(self.depth - 1)
    h = act(nn.Dense(H // f * W // f * top, dtype=self.dtype)(z_BZ)).reshape(-1, H // f, W // f, top)
    h = up_stages(h, functools.partial(self.conv, dtype=self.dtype),
                  functools.partial(self.conv_transpose, dtype=self.dtype), self.channels,
                  self.depth, act)
    out = conv(C * self.out_params)(h)
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
    enc = MLPEncoder(m.latent_dim, m.mlp_units, m.depth, m.activation, dt)
    dec = MLPDecoder(tuple(image_shape), out_params, m.mlp_units, m.depth, m.activation, dt)
  elif m.name == "conv_vae":
    convs = conv_modules(m.conv_impl)
    enc = ConvEncoder(m.latent_dim, m.channels, m.depth, m.activation, dt, convs["conv"])
    dec = ConvDecoder(tuple(image_shape), out_params, m.channels, m.depth, m.activation, dt,
                      convs["conv"], convs["conv_transpose"])
  else:
    raise ValueError(f"Unknown model {m.name!r} for the vae task; allowed: {MODELS}")
  return VAE(enc, dec)
