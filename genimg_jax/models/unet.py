"""The DDPM / ADM U-Net (Ho et al. 2020; Dhariwal & Nichol 2021), plain Flax linen.

UNet(z_BHWC, noise_B, y_B) -> the prediction (eps, x0 or v) [B, H, W, C].

* The noise level enters as a sinusoidal embedding of noise_B, the parameterization's
  noise conditioning (objectives.diffusion.noise_conditioning: the log-SNR mapped onto
  DDPM's time steps [0, 1000], so discrete and continuous time share it; [B, K] for K
  time variables, each embedded), through a 2-layer MLP (SiLU) of 4 x channels, added
  inside every residual block.
* Residual blocks: GroupNorm, SiLU, 3x3 conv, + the embedding, GroupNorm, SiLU, dropout,
  3x3 conv; a 1x1 conv on the skip when the channels change.
* `channel_mults` per resolution (the first at the input's), `num_res_blocks` blocks per
  resolution, self-attention (one head, a residual GroupNorm-QKV block) at the spatial
  sizes in `attention_resolutions`, a stride-2 3x3 convolution down and nearest x2 plus
  a 3x3 convolution up, skip connections concatenated on the way up; the output
  layer starts at zero (the network starts by predicting 0).
* `num_classes` > 0: a class embedding added to the time embedding, with one more
  "null" class (index num_classes) that classifier-free guidance uses for the
  unconditional prediction.
* `text` (a text encoder of models/text.py): y_B are caption token ids [B, L]; the pooled
  caption is added to the time embedding, and cross-attention to the token features
  (models.text.CrossAttention) follows every residual block at the spatial sizes in
  `cross_attention_resolutions` and the middle blocks. The empty caption is the null.

Sized by config, from ~1M parameters for 28x28 MNIST to Ho et al.'s 35.7M CIFAR-10 net
(channels 128, mults (1, 2, 2, 2), 2 blocks, attention at 16, dropout 0.1).
The convolutions and group norms are the `conv` and `norm` fields (nn.Conv and
nn.GroupNorm by default; the forms of models/cpu_layers.py on a CPU).
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from genimg_jax.models.layers import upsample_nearest
from genimg_jax.models.text import CrossAttention

ModuleDef = Any


def timestep_embedding(noise_B, dim, max_period=10_000.0):
  """Sinusoidal embedding [B, dim] of the noise conditioning (DDPM's on its time steps)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
  args = noise_B[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def noise_embedding(noise, dim):
  """The embedding of a denoiser's noise conditioning: timestep_embedding [B, dim] of a
  [B] conditioning; of a [B, K] one (several time variables, e.g. MeanFlow's (t, t - r)),
  each column's embedding side by side, [B, K * dim]."""
  if noise.ndim == 1:
    return timestep_embedding(noise, dim)
  return jnp.concatenate([timestep_embedding(noise[:, k], dim) for k in range(noise.shape[1])],
                         axis=-1)


class ResBlock(nn.Module):
  channels: int
  dropout: float
  groups: int
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.GroupNorm

  @nn.compact
  def __call__(self, x, emb, train):
    h = nn.silu(self.norm(num_groups=self.groups)(x))
    h = self.conv(self.channels, (3, 3))(h)
    h = h + nn.Dense(self.channels)(nn.silu(emb))[:, None, None, :]
    h = nn.silu(self.norm(num_groups=self.groups)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = self.conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
    skip = x if x.shape[-1] == self.channels else self.conv(self.channels, (1, 1))(x)
    return skip + h


class AttnBlock(nn.Module):
  """Single-head self-attention over the H x W positions, residual."""
  groups: int
  norm: ModuleDef = nn.GroupNorm

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    h = self.norm(num_groups=self.groups)(x).reshape(B, H * W, C)
    q, k, v = jnp.split(nn.Dense(3 * C)(h), 3, axis=-1)
    weights = nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(C), axis=-1)
    h = nn.Dense(C, kernel_init=nn.initializers.zeros)(jnp.einsum("bqk,bkc->bqc", weights, v))
    return x + h.reshape(B, H, W, C)


class UNet(nn.Module):
  out_channels: int
  channels: int = 32
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  attention_resolutions: Sequence[int] = ()
  dropout: float = 0.0
  num_classes: int = 0
  groups: int = 8
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.GroupNorm
  text: Any = None
  cross_attention_resolutions: Sequence[int] = ()

  @nn.compact
  def __call__(self, z_BHWC, noise_B, y_B=None, train=False):
    ch = self.channels
    emb = noise_embedding(noise_B, ch)
    emb = nn.Dense(4 * ch)(nn.silu(nn.Dense(4 * ch)(emb)))
    features = None
    if self.text is not None:
      features, mask, pooled = self.text(y_B)
      emb = emb + nn.Dense(4 * ch)(pooled)
    elif self.num_classes:
      emb = emb + nn.Embed(self.num_classes + 1, 4 * ch)(y_B)  # + the null class
    res_block = lambda c: ResBlock(c, self.dropout, self.groups, self.conv, self.norm)

    def block(c, middle=False):
      def apply(h, emb, train):
        h = res_block(c)(h, emb, train)
        if features is not None and (middle or h.shape[1] in self.cross_attention_resolutions):
          B, H, W, C = h.shape
          h = CrossAttention()(h.reshape(B, H * W, C), features, mask).reshape(B, H, W, C)
        return h
      return apply

    attention = lambda: AttnBlock(self.groups, self.norm)
    h = self.conv(ch, (3, 3))(z_BHWC)
    skips = [h]
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.num_res_blocks):
        h = block(ch * mult)(h, emb, train)
        if h.shape[1] in self.attention_resolutions:
          h = attention()(h)
        skips.append(h)
      if level < len(self.channel_mults) - 1:
        h = self.conv(h.shape[-1], (3, 3), strides=2)(h)
        skips.append(h)
    h = block(h.shape[-1], middle=True)(h, emb, train)
    h = attention()(h) if self.attention_resolutions else h
    h = block(h.shape[-1], middle=True)(h, emb, train)
    for level, mult in reversed(list(enumerate(self.channel_mults))):
      for _ in range(self.num_res_blocks + 1):
        h = block(ch * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
        if h.shape[1] in self.attention_resolutions:
          h = attention()(h)
      if level > 0:
        size = skips[-1].shape[1:3]
        h = upsample_nearest(h)[:, :size[0], :size[1]]
        h = self.conv(h.shape[-1], (3, 3))(h)
    h = nn.silu(self.norm(num_groups=self.groups)(h))
    return self.conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
