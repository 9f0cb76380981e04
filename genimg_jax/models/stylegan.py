"""StyleGAN2-style generator and discriminator (Karras et al. 2020), sized for 28x28 and
32x32 images (pure Flax linen).

Generator: z (and a label) -> mapping network -> w -> one w per layer ("ws") -> synthesis.
* Mapping: z normalized to unit second moment (with the label's embedding when
  class-conditional), `mapping_layers` equalized dense layers at `lr_mul` (0.01: the
  mapping network learns at 1/100 of the synthesis network's rate), leaky ReLU.
* The running mean of w (`w_avg`, in the "batch_stats" collection, updated in training
  with decay `w_avg_decay`) and the truncation trick: w' = w_avg + psi (w - w_avg);
  psi = 1 is the identity, psi = 0 gives every z the mean w's image.
* Style mixing: with probability `mixing_prob` in training (when a "mixing" rng is
  given), the ws from a second z take over at a random crossover layer (`mix_styles`).
* Synthesis: a learned 4x4 constant; per resolution 4, 8, 16, 32 a modulated and
  demodulated 3x3 convolution (two from 8 on, the first after a 2x bilinear upsampling),
  each followed by scaled per-pixel noise (a learned strength per layer, starting at 0;
  noise is drawn from the "noise" rng when one is given, else left out: deterministic
  samples given z) and a bias and leaky ReLU; a skip generator: each resolution's
  modulated 1x1 ToRGB (no demodulation) is added to the upsampled image so far. A
  28x28 image is the centre crop of the 32x32 output.
* Path-length regularization (gan.pl_weight, in tasks/gan.py) differentiates `synthesize`
  with respect to the ws of `styles`.
* Simplifications against the paper: bilinear up- and average-pool downsampling instead
  of the [1, 3, 3, 1] FIR filter; modulation applied to the activations (the paper's
  non-fused form, the same function as scaling the weights).
Discriminator: residual (the paper's "resnet" D): FromRGB 1x1, then per resolution two
3x3 convolutions and a 2x average-pool, plus a 1x1 skip, summed and scaled by 1 / sqrt(2);
at 4x4 the minibatch standard deviation (groups of `mbstd_group`) as an extra channel, a
3x3 convolution, a dense layer and the output (with the projection term of a
class-conditional D). A 28x28 input is padded to 32x32 (zeros).

Every layer uses the equalized learning rate: its weights are stored N(0, 1 / lr_mul^2)
and scaled at run time by lr_mul / sqrt(fan_in), so that Adam, whose steps are about the
learning rate whatever the scale of a weight, moves every effective weight at
lr_mul x the learning rate / sqrt(fan_in). Convolutions apply the scale to their input
(a convolution is linear in it), so they are the project's convolution modules
(layers.conv_modules: on a CPU its faster forms).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ModuleDef = Any
_GAIN = float(np.sqrt(2.0))  # leaky ReLU's gain, as the paper's


def _lrelu(x):
  return nn.leaky_relu(x, 0.2) * _GAIN


def _upsample(x):
  B, H, W, C = x.shape
  return jax.image.resize(x, (B, 2 * H, 2 * W, C), "bilinear")


def _unit_second_moment(v):
  """v scaled to a mean square of 1 over its last axis (the mapping network's inputs)."""
  return v * jax.lax.rsqrt(jnp.mean(v ** 2, axis=-1, keepdims=True) + 1e-8)


def _downsample(x):
  return nn.avg_pool(x, (2, 2), (2, 2))


class EqualDense(nn.Module):
  """A dense layer with the equalized learning rate at lr_mul (module doc)."""
  features: int
  lr_mul: float = 1.0
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param("kernel", lambda k, s: jax.random.normal(k, s) / self.lr_mul,
                        (fan_in, self.features))
    bias = self.param("bias", lambda k, s: jnp.full(s, self.bias_init / self.lr_mul),
                      (self.features,))
    return x @ (kernel * (self.lr_mul / np.sqrt(fan_in))) + bias * self.lr_mul


class EqualConv(nn.Module):
  """A convolution with the equalized learning rate: the project's conv module on the
  input scaled by 1 / sqrt(fan_in), weights N(0, 1)."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    y = self.conv(self.features, (k, k), use_bias=False,
                  kernel_init=nn.initializers.normal(1.0))(x / np.sqrt(k * k * x.shape[-1]))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


class ModulatedConv(nn.Module):
  """StyleGAN2's modulated convolution: the input channels scaled by a style (an affine
  map of w, bias 1), then each output channel demodulated to unit expected variance:
  for unit-variance inputs the outputs have unit variance. demodulate=False: ToRGB."""
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, w):
    k, cin = self.kernel_size, x.shape[-1]
    gain = 1.0 / np.sqrt(k * k * cin)
    style = EqualDense(cin, bias_init=1.0, name="affine")(w)  # [B, Cin]
    conv = self.conv(self.features, (k, k), use_bias=False,
                     kernel_init=nn.initializers.normal(1.0), name="conv")
    y = conv(x * (style * gain)[:, None, None, :])
    if self.demodulate:  # 1 / ||W_j * s * gain|| per image and output channel j
      kernel = conv.variables["params"]["kernel"]  # [k, k, Cin, Cout]
      norm2 = jnp.einsum("bi,ij->bj", (style * gain) ** 2, jnp.sum(kernel ** 2, axis=(0, 1)))
      y = y * jax.lax.rsqrt(norm2 + 1e-8)[:, None, None, :]
    return y


class _SynthesisLayer(nn.Module):
  """Modulated 3x3 convolution (after a 2x upsampling if `up`), noise, bias, leaky ReLU."""
  features: int
  up: bool = False
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, w):
    if self.up:
      x = _upsample(x)
    y = ModulatedConv(self.features, 3, True, self.conv)(x, w)
    strength = self.param("noise_strength", nn.initializers.zeros, ())
    if self.has_rng("noise"):
      y = y + strength * jax.random.normal(self.make_rng("noise"), y.shape[:3] + (1,))
    return _lrelu(y + self.param("bias", nn.initializers.zeros, (self.features,)))


def mix_styles(ws_a, ws_b, crossover):
  """ws_a's layers before `crossover` ([B] layer indices), ws_b's from it on; ws: [B, L, W]."""
  layer = jnp.arange(ws_a.shape[1])[None, :, None]
  return jnp.where(layer < crossover[:, None, None], ws_a, ws_b)


class StyleGANGenerator(nn.Module):
  """The StyleGAN2-style generator of the module doc."""
  image_shape: Sequence[int]
  channels: int = 128
  w_dim: int = 128
  mapping_layers: int = 4
  lr_mul: float = 0.01
  num_classes: int = 0
  w_avg_decay: float = 0.995
  mixing_prob: float = 0.9
  conv: ModuleDef = nn.Conv

  def setup(self):
    H, W, C = self.image_shape
    if H != W or H not in (28, 32):
      raise ValueError(f"The StyleGAN generator is for 28x28 or 32x32 images, got {H}x{W}.")
    self.mapping = [EqualDense(self.w_dim, self.lr_mul) for _ in range(self.mapping_layers)]
    if self.num_classes:
      self.label_embed = nn.Embed(self.num_classes, self.w_dim)
    self.const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.channels))
    # 4x4: one layer; 8, 16, 32: an upsampling layer and another; a ToRGB per resolution
    self.layers = [_SynthesisLayer(self.channels, up, self.conv)
                   for up in (False, True, False, True, False, True, False)]
    self.to_rgb = [ModulatedConv(C, 1, False, self.conv) for _ in range(4)]
    self.rgb_bias = self.param("rgb_bias", nn.initializers.zeros, (C,))
    self.w_avg = self.variable("batch_stats", "w_avg", jnp.zeros, (self.w_dim,))

  @property
  def num_ws(self):
    """One w per synthesis layer, the last ToRGB's added: 8 at 32x32."""
    return 1 + 2 * 3 + 1

  def map(self, z, y=None):
    """w [B, w_dim] of z (and labels y)."""
    h = _unit_second_moment(z)
    if self.num_classes:
      h = jnp.concatenate([h, _unit_second_moment(self.label_embed(y))], -1)
    for layer in self.mapping:
      h = _lrelu(layer(h))
    return h

  def truncate(self, w, psi):
    """The truncation trick: w_avg + psi (w - w_avg); psi = 1 returns w itself."""
    if isinstance(psi, (int, float)) and psi == 1:
      return w
    return self.w_avg.value + psi * (w - self.w_avg.value)

  def synthesize(self, ws):
    """Images [B, H, W, C] in about [-1, 1] of the per-layer ws [B, num_ws, w_dim]."""
    x = jnp.broadcast_to(self.const, (ws.shape[0],) + self.const.shape)
    img = None
    for i, layer in enumerate(self.layers):
      x = layer(x, ws[:, i])
      if i % 2 == 0:  # the end of a resolution: its ToRGB, with the next layer's w
        rgb = self.to_rgb[i // 2](x, ws[:, i + 1])
        img = rgb if img is None else _upsample(img) + rgb
    img = img + self.rgb_bias
    H = self.image_shape[0]
    if H == 28:
      img = img[:, 2:30, 2:30]
    return img

  def __call__(self, z_BZ, y_B=None, train=True, truncation_psi=1.0):
    return self.synthesize(self.styles(z_BZ, y_B, train, truncation_psi))

  def styles(self, z_BZ, y_B=None, train=True, truncation_psi=1.0):
    """The per-layer ws [B, num_ws, w_dim] of z: mapped, the running mean of w updated in
    training, truncated at evaluation, style-mixed in training (module doc)."""
    w = self.map(z_BZ, y_B)
    if train and not self.is_initializing():  # the running mean of w
      mean = jnp.mean(jax.lax.stop_gradient(w), axis=0)
      self.w_avg.value = mean + self.w_avg_decay * (self.w_avg.value - mean)
    if not train:
      w = self.truncate(w, truncation_psi)
    ws = jnp.broadcast_to(w[:, None], (w.shape[0], self.num_ws, self.w_dim))
    if train and self.mixing_prob > 0 and self.has_rng("mixing"):
      rng_z, rng_cut, rng_p = jax.random.split(self.make_rng("mixing"), 3)
      w2 = self.map(jax.random.normal(rng_z, z_BZ.shape), y_B)
      ws2 = jnp.broadcast_to(w2[:, None], ws.shape)
      cut = jax.random.randint(rng_cut, (w.shape[0],), 1, self.num_ws)
      cut = jnp.where(jax.random.uniform(rng_p, (w.shape[0],)) < self.mixing_prob, cut, self.num_ws)
      ws = mix_styles(ws, ws2, cut)
    return ws


class _DResBlock(nn.Module):
  """Two 3x3 convolutions and a 2x downsampling, plus a 1x1 skip, over sqrt(2)."""
  channels: int
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x):
    h = _lrelu(EqualConv(self.channels, 3, True, self.conv)(x))
    h = _downsample(_lrelu(EqualConv(self.channels, 3, True, self.conv)(h)))
    skip = EqualConv(self.channels, 1, False, self.conv)(_downsample(x))
    return (h + skip) / _GAIN


def minibatch_stddev(x, group_size=4):
  """x with one more channel: the standard deviation over groups of `group_size` images
  (each feature's, averaged over features and pixels), the same for every image of a group."""
  B, H, W, C = x.shape
  g = min(group_size, B)
  if B % g:
    raise ValueError(f"The minibatch standard deviation needs a batch divisible by {g}, got {B}.")
  y = x.reshape(g, B // g, H, W, C)
  std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)            # [B/g, H, W, C]
  std = jnp.mean(std, axis=(1, 2, 3))                  # [B/g]
  std = jnp.tile(std, g)[:, None, None, None]          # image i -> group i % (B/g)
  return jnp.concatenate([x, jnp.broadcast_to(std, (B, H, W, 1))], axis=-1)


class StyleGANDiscriminator(nn.Module):
  """The residual discriminator of the module doc."""
  channels: int = 128
  num_classes: int = 0
  mbstd_group: int = 4
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x_BHWC, y_B=None, train=True):
    H = x_BHWC.shape[1]
    if H == 28:
      x_BHWC = jnp.pad(x_BHWC, ((0, 0), (2, 2), (2, 2), (0, 0)))
    elif H != 32:
      raise ValueError(f"The StyleGAN discriminator is for 28x28 or 32x32 images, got {H}x{H}.")
    h = _lrelu(EqualConv(self.channels, 1, True, self.conv)(x_BHWC))
    for _ in range(3):  # 32 -> 16 -> 8 -> 4
      h = _DResBlock(self.channels, self.conv)(h)
    h = minibatch_stddev(h, self.mbstd_group)
    h = _lrelu(EqualConv(self.channels, 3, True, self.conv)(h))
    h = _lrelu(EqualDense(self.channels)(h.reshape(h.shape[0], -1)))
    out = EqualDense(1)(h)[:, 0]
    if self.num_classes:  # the projection term (Miyato & Koyama 2018)
      out = out + jnp.sum(nn.Embed(self.num_classes, self.channels)(y_B) * h, axis=-1) / np.sqrt(self.channels)
    return out
