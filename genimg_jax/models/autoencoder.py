"""The autoencoder task's network: a convolutional encoder to a spatial latent, a
bottleneck (models/bottlenecks.py: "vq", "fsq" or "kl") and a convolutional decoder.

Images of H x W become latents of H / 2**depth x W / 2**depth positions (28x28 with depth
2: 7x7), each a vector of the bottleneck's channels; the decoder maps them back. Methods:

  __call__(x, train) -> (reconstruction, terms, stats)   the training forward pass
  latents(x) -> z_q           what the decoder reads for x (a prior over continuous
                              latents models these: the KL latent's mean)
  decode(z_q) -> images       in the data's range (the decoder's output, unclipped)
  indices(x) -> int [B, h, w] the codes of x (vq, fsq: what a prior over tokens models)
  decode_indices(idx) -> images

Convolutions come from layers.conv_modules(model.conv_impl), as in every model here.
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genimg_jax.models import bottlenecks
from genimg_jax.models.layers import conv_modules, down_stages, get_activation, up_stages

ModuleDef = Any


class Encoder(nn.Module):
  """Per stage a 3x3 stride-2 and a 3x3 convolution (channels doubling per stage), then a
  1x1 convolution to the bottleneck's channels."""
  out_channels: int
  channels: int
  depth: int
  activation: str = "relu"
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x_BHWC):
    h = down_stages(x_BHWC, self.conv, self.channels, self.depth,
                    get_activation(self.activation))
    return self.conv(self.out_channels, kernel_size=(1, 1))(h)


class Decoder(nn.Module):
  """A 3x3 convolution from the latent, per stage a 4x4 stride-2 transposed and a 3x3
  convolution (channels halving per stage), then a 3x3 convolution to the image."""
  image_channels: int
  channels: int
  depth: int
  activation: str = "relu"
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = nn.ConvTranspose

  @nn.compact
  def __call__(self, z_BhwD):
    act = get_activation(self.activation)
    conv = functools.partial(self.conv, kernel_size=(3, 3))
    h = act(conv(self.channels * 2**(self.depth - 1))(z_BhwD))
    h = up_stages(h, self.conv, self.conv_transpose, self.channels, self.depth, act)
    return conv(self.image_channels)(h).astype(jnp.float32)


class Autoencoder(nn.Module):
  """Encoder, bottleneck, decoder (see the module doc)."""
  encoder: nn.Module
  bottleneck: nn.Module
  decoder: nn.Module

  def __call__(self, x_BHWC, train=False):
    z_q, terms, stats = self.bottleneck(self.encoder(x_BHWC), train)
    return self.decoder(z_q), terms, stats

  def latents(self, x_BHWC):
    return self.bottleneck(self.encoder(x_BHWC), False)[0]

  def decode(self, z_q):
    return self.decoder(z_q)

  def indices(self, x_BHWC):
    return self.bottleneck.indices(self.encoder(x_BHWC))

  def decode_indices(self, idx):
    return self.decoder(self.bottleneck.codes(idx))


def build_autoencoder(model_config, image_shape):
  """The autoencoder of model_config for images of `image_shape`."""
  m = model_config
  H, W, C = image_shape
  f = 2**m.depth
  if H % f or W % f:
    raise ValueError(f"The autoencoder's image size {H}x{W} is not divisible by "
                     f"2**model.depth = {f}.")
  bottleneck, channels = bottlenecks.build_bottleneck(m)
  convs = conv_modules(m.conv_impl)
  return Autoencoder(
      Encoder(channels, m.channels, m.depth, m.activation, convs["conv"]), bottleneck,
      Decoder(C, m.channels, m.depth, m.activation, convs["conv"], convs["conv_transpose"]))
