"""GAN generators and discriminators (pure Flax linen).

Generators: z_BZ (and labels y_B when class-conditional) -> images in [-1, 1].
Discriminators: x_BHWC (and y_B) -> one logit / critic value per image [B].

* MLP: the original GAN paper's fully connected networks.
* DCGAN (Radford et al. 2016): 4x4 stride-2 transposed convolutions, BatchNorm and
  ReLU in G, tanh output; 4x4 stride-2 convolutions and LeakyReLU in D. Sized for 28x28
  (7x7 seed) and 32x32 (4x4 seed). `fc_units` > 0 adds a fully connected hidden layer
  of that width to both: z -> FC-BN-ReLU before G's seed, and FC-norm-LeakyReLU after
  D's convolutions, the InfoGAN architecture that Lucic et al. 2018 use on MNIST
  (fc_units 1024, D channels 64 and 128 with BatchNorm, G's seed 7x7x128).
* SNGAN ResNet (Miyato et al. 2018) for 32x32.
* StyleGAN2-style networks for 28x28 and 32x32: models/stylegan.py ("stylegan").
* BigGAN-style class-conditional networks for 28x28 and 32x32: models/biggan.py ("biggan").
* PatchDiscriminator: pix2pix's PatchGAN (Isola et al. 2017) as VQGAN uses it (Esser et
  al. 2021), one logit per patch [B, h, w]; the autoencoder task's adversarial term.

The convolutional networks take their convolution modules as fields (`conv`,
`conv_transpose`) that default to nn.Conv and nn.ConvTranspose; build_gan passes
layers.conv_modules(model.conv_impl), which on a CPU are faster forms of the same.

`d_norm` picks the discriminator's normalization: "none", "spectral" (spectral
normalization of every D layer: one power iteration per step, `u` kept in the
"batch_stats" collection), "layer", or "batch". Class conditioning: G
concatenates a label embedding to z; D adds the projection term <embed(y), h>
(Miyato & Koyama 2018).

BatchNorm statistics: the train step is one `jax.jit` over a mesh whose batch axis
is sharded across devices, and BatchNorm's mean/variance are reductions over that
(global) axis, so XLA computes them over the *global* batch, exactly as a
single-device run on the same batch would (tests/test_gan.py checks this).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genimg_jax.models import stylegan
from genimg_jax.models.layers import conv_modules, upsample_nearest

ModuleDef = Any

D_NORMS = ("none", "spectral", "layer", "batch")


class _DLayer(nn.Module):
  """A discriminator layer with optional spectral normalization."""
  layer: nn.Module
  spectral: bool

  @nn.compact
  def __call__(self, x, train):
    if self.spectral:
      return nn.SpectralNorm(self.layer)(x, update_stats=train)
    return self.layer(x)


def _d_norm(kind, x, train):
  if kind == "layer":
    return nn.LayerNorm()(x)
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train)(x)
  return x


class _Projection(nn.Module):
  """Final linear output plus the class-projection term (when num_classes > 0)."""
  num_classes: int
  spectral: bool

  @nn.compact
  def __call__(self, h_BF, y_B, train):
    out = _DLayer(nn.Dense(1), self.spectral)(h_BF, train)[:, 0]
    if self.num_classes:
      emb = nn.Embed(self.num_classes, h_BF.shape[-1])(y_B)
      out = out + jnp.sum(emb * h_BF, axis=-1)
    return out


def _condition_z(z_BZ, y_B, num_classes, dim):
  if not num_classes:
    return z_BZ
  return jnp.concatenate([z_BZ, nn.Embed(num_classes, dim)(y_B)], axis=-1)


class MLPGenerator(nn.Module):
  image_shape: Sequence[int]
  units: int = 512
  depth: int = 2
  num_classes: int = 0

  @nn.compact
  def __call__(self, z_BZ, y_B=None, train=True):
    h = _condition_z(z_BZ, y_B, self.num_classes, z_BZ.shape[-1])
    for _ in range(self.depth):
      h = nn.relu(nn.Dense(self.units)(h))
    x = jnp.tanh(nn.Dense(int(np.prod(self.image_shape)))(h))
    return x.reshape(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
  units: int = 512
  depth: int = 2
  norm: str = "none"
  num_classes: int = 0

  @nn.compact
  def __call__(self, x_BHWC, y_B=None, train=True):
    sn = self.norm == "spectral"
    h = x_BHWC.reshape(x_BHWC.shape[0], -1)
    for _ in range(self.depth):
      h = nn.leaky_relu(_d_norm(self.norm, _DLayer(nn.Dense(self.units), sn)(h, train), train), 0.2)
    return _Projection(self.num_classes, sn)(h, y_B, train)


class DCGANGenerator(nn.Module):
  """z -> Dense to an s x s x 4ch seed (s = 7 for 28, 4 for 32) -> transposed convs."""
  image_shape: Sequence[int]
  channels: int = 64
  num_classes: int = 0
  conv_transpose: ModuleDef = nn.ConvTranspose
  fc_units: int = 0

  @nn.compact
  def __call__(self, z_BZ, y_B=None, train=True):
    up = lambda features: self.conv_transpose(features, (4, 4), strides=(2, 2))
    H, W, C = self.image_shape
    seed = 7 if H % 7 == 0 else 4
    n_up = int(round(np.log2(H / seed)))
    if seed * 2**n_up != H or H != W:
      raise ValueError(f"DCGAN generator supports square 28x28 or 2^k sizes >= 8, got {H}x{W}.")
    ch = self.channels * 2**(n_up - 1)
    h = _condition_z(z_BZ, y_B, self.num_classes, z_BZ.shape[-1])
    if self.fc_units:
      h = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(self.fc_units)(h)))
    h = nn.Dense(seed * seed * ch * 2)(h).reshape(-1, seed, seed, ch * 2)
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
    for i in range(n_up - 1):
      h = up(ch // 2**i)(h)
      h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
    return jnp.tanh(up(C)(h))


class DCGANDiscriminator(nn.Module):
  channels: int = 64
  norm: str = "none"
  num_classes: int = 0
  conv: ModuleDef = nn.Conv
  fc_units: int = 0

  @nn.compact
  def __call__(self, x_BHWC, y_B=None, train=True):
    sn = self.norm == "spectral"
    h = x_BHWC
    n_down = 2 if x_BHWC.shape[1] <= 28 else 3
    for i in range(n_down):
      h = _DLayer(self.conv(self.channels * 2**i, (4, 4), strides=2), sn)(h, train)
      h = nn.leaky_relu(h if i == 0 else _d_norm(self.norm, h, train), 0.2)
    h = h.reshape(h.shape[0], -1)
    if self.fc_units:
      h = _DLayer(nn.Dense(self.fc_units), sn)(h, train)
      h = nn.leaky_relu(_d_norm(self.norm, h, train), 0.2)
    return _Projection(self.num_classes, sn)(h, y_B, train)


class _GBlock(nn.Module):
  """SNGAN generator residual block: BN-ReLU-up-conv-BN-ReLU-conv + up-1x1 shortcut."""
  channels: int
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, train):
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    h = self.conv(self.channels, (3, 3))(upsample_nearest(h))
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
    h = self.conv(self.channels, (3, 3))(h)
    return h + self.conv(self.channels, (1, 1))(upsample_nearest(x))


class _DBlock(nn.Module):
  """SNGAN discriminator residual block (optionally the first, "optimized" one)."""
  channels: int
  downsample: bool
  first: bool
  spectral: bool
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, train):
    def conv(c, k):
      return _DLayer(self.conv(c, (k, k)), self.spectral)
    pool = lambda v: nn.avg_pool(v, (2, 2), (2, 2))
    h = x if self.first else nn.relu(x)
    h = conv(self.channels, 3)(h, train)
    h = conv(self.channels, 3)(nn.relu(h), train)
    if self.downsample:
      h = pool(h)
    sc = x
    if self.first:
      sc = conv(self.channels, 1)(pool(x), train)
    elif self.downsample or x.shape[-1] != self.channels:
      sc = conv(self.channels, 1)(sc, train)
      sc = pool(sc) if self.downsample else sc
    return h + sc


class ResNetGenerator(nn.Module):
  """SNGAN's 32x32 generator: 4x4x256 seed, three up blocks, BN-ReLU-conv-tanh."""
  image_shape: Sequence[int]
  channels: int = 256
  num_classes: int = 0
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, z_BZ, y_B=None, train=True):
    H, W, C = self.image_shape
    if (H, W) != (32, 32):
      raise ValueError(f"The SNGAN ResNet generator is for 32x32 images, got {H}x{W}.")
    h = _condition_z(z_BZ, y_B, self.num_classes, z_BZ.shape[-1])
    h = nn.Dense(4 * 4 * self.channels)(h).reshape(-1, 4, 4, self.channels)
    for _ in range(3):
      h = _GBlock(self.channels, self.conv)(h, train)
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
    return jnp.tanh(self.conv(C, (3, 3))(h))


class ResNetDiscriminator(nn.Module):
  """SNGAN's 32x32 discriminator: 4 residual blocks of 128 channels, ReLU, sum pool."""
  channels: int = 128
  norm: str = "spectral"
  num_classes: int = 0
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x_BHWC, y_B=None, train=True):
    sn = self.norm == "spectral"
    h = _DBlock(self.channels, True, True, sn, self.conv)(x_BHWC, train)
    h = _DBlock(self.channels, True, False, sn, self.conv)(h, train)
    h = _DBlock(self.channels, False, False, sn, self.conv)(h, train)
    h = _DBlock(self.channels, False, False, sn, self.conv)(h, train)
    h = jnp.sum(nn.relu(h), axis=(1, 2))
    return _Projection(self.num_classes, sn)(h, y_B, train)


class PatchDiscriminator(nn.Module):
  """x_BHWC -> a logit per patch [B, H / 2^layers, W / 2^layers]: `layers` 4x4 stride-2
  convolutions (channels doubling from `channels`), a 4x4 stride-1 convolution, each with
  LeakyReLU(0.2), and a 4x4 convolution to one channel. Each logit sees a square patch of
  9 * 2^layers - 2 pixels (16 at 1 layer; pix2pix's 70 at 3), so the GAN loss (a mean over
  patches) judges local texture and sharpness and leaves the layout to the reconstruction
  term. No normalization layers (pix2pix's BatchNorm would add discriminator statistics to
  the autoencoder's state)."""
  channels: int = 64
  layers: int = 1
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x_BHWC):
    h = x_BHWC
    for i in range(self.layers):
      h = nn.leaky_relu(self.conv(self.channels * 2**i, (4, 4), strides=2)(h), 0.2)
    h = nn.leaky_relu(self.conv(self.channels * 2**self.layers, (4, 4))(h), 0.2)
    return self.conv(1, (4, 4))(h)[..., 0]


GAN_MODELS = ("mlp", "dcgan", "resnet", "stylegan", "biggan")


def build_gan(model_config, image_shape):
  """(generator, discriminator) named by model_config.name."""
  m = model_config
  if m.d_norm not in D_NORMS:
    raise ValueError(f"Unknown model.d_norm {m.d_norm!r}; allowed: {D_NORMS}")
  if m.name == "mlp":
    return (MLPGenerator(tuple(image_shape), m.mlp_units, m.depth, m.num_classes),
            MLPDiscriminator(m.mlp_units, m.depth, m.d_norm, m.num_classes))
  convs = conv_modules(m.conv_impl)
  if m.name == "dcgan":
    if m.fc_units < 0:
      raise ValueError(f"model.fc_units must be >= 0 (0 = no fully connected layer), got {m.fc_units}.")
    return (DCGANGenerator(tuple(image_shape), m.channels, m.num_classes, convs["conv_transpose"],
                           m.fc_units),
            DCGANDiscriminator(m.d_channels or m.channels, m.d_norm, m.num_classes, convs["conv"],
                               m.fc_units))
  if m.name == "resnet":
    return (ResNetGenerator(tuple(image_shape), m.channels, m.num_classes, convs["conv"]),
            ResNetDiscriminator(m.d_channels or m.channels // 2, m.d_norm, m.num_classes,
                                convs["conv"]))
  if m.name == "stylegan":
    if m.d_norm != "none":
      raise ValueError(f"The stylegan discriminator has no d_norm (equalized learning rate and "
                       f"a penalty instead), got model.d_norm={m.d_norm!r}.")
    return (stylegan.StyleGANGenerator(tuple(image_shape), m.channels, m.w_dim, m.mapping_layers,
                                       m.mapping_lr_mul, m.num_classes,
                                       mixing_prob=m.mixing_prob, conv=convs["conv"]),
            stylegan.StyleGANDiscriminator(
                m.d_channels or m.channels, m.num_classes,
                conv=conv_modules(m.conv_impl, written_gradients=True)["conv"]))
  if m.name == "biggan":
    from genimg_jax.models import biggan  # it builds on this module's D blocks
    biggan.check_latent_dim(m.latent_dim, image_shape)
    if m.d_norm != "spectral":
      raise ValueError("The biggan networks are spectrally normalized in G and D: model.d_norm "
                       f"must be 'spectral', got {m.d_norm!r}.")
    return (biggan.BigGANGenerator(tuple(image_shape), m.channels, m.num_classes, m.embed_dim,
                                   m.attention_resolution, convs["conv"]),
            biggan.BigGANDiscriminator(m.d_channels or m.channels, m.num_classes, convs["conv"]))
  raise ValueError(f"Unknown model {m.name!r} for the gan task; allowed: {GAN_MODELS}")
