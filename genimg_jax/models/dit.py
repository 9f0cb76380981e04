"""The Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), plain Flax linen.

DiT(z_BHWC, noise_B, y_B) -> the prediction [B, H, W, C] (whatever the formulation's F is).

* Patch embedding: non-overlapping patch_size x patch_size patches, flattened, one Dense
  to `hidden_size`; fixed 2-D sine-cosine position embeddings (half the channels for the
  row, half for the column, as DiT's / MAE's `get_2d_sincos_pos_embed`).
* Conditioning c: the sinusoidal embedding of the noise conditioning (256 frequencies,
  models/unet.py's; [B, K]: each of K time variables embedded) through a 2-layer SiLU MLP, plus a class embedding with one more
  "null" class (index num_classes) for classifier-free guidance when num_classes > 0.
* `depth` blocks with adaLN-Zero: from SiLU(c) one Dense gives (shift, scale, gate) for
  the attention and for the MLP; LayerNorm without its own affine, x * (1 + scale) +
  shift, the branch's output times its gate; the Dense starts at zero, so every block
  starts as the identity. Self-attention with `num_heads` heads through
  jax.nn.dot_product_attention (the fused kernel where the platform has one), an MLP of
  mlp_ratio x hidden_size with tanh-GELU.
* `text` (a text encoder of models/text.py): y_B are caption token ids [B, L]; the pooled
  caption is added to c, and every block has cross-attention to the token features
  (models.text.CrossAttention) after its self-attention. The empty caption is the null.
* The final layer: adaLN (shift, scale), a Dense to patch_size^2 x C starting at zero (the
  network starts by predicting 0), and the patches put back in place.

Sizes: DiT-S/2 is hidden 384, depth 12, 6 heads, patch 2; the MNIST recipes use far less
(experiments/flow_mnist.py). H and W must be multiples of patch_size.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genimg_jax.models.text import CrossAttention
from genimg_jax.models.unet import noise_embedding


def sincos_2d(h, w, dim):
  """Fixed 2-D sine-cosine position embeddings [h * w, dim] (dim a multiple of 4)."""
  def one_axis(pos, d):
    omega = 1.0 / 10_000**(np.arange(d // 2) / (d / 2))
    out = np.outer(pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  emb = np.concatenate([one_axis(rows.reshape(-1), dim // 2), one_axis(cols.reshape(-1), dim // 2)],
                       axis=1)
  return jnp.asarray(emb, jnp.float32)


def _modulate(x, shift, scale):
  return x * (1.0 + scale[:, None]) + shift[:, None]


def _norm():
  return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False)


class DiTBlock(nn.Module):
  hidden_size: int
  num_heads: int
  mlp_ratio: float

  @nn.compact
  def __call__(self, x, c, text=None):
    B, N, D = x.shape
    mod = nn.Dense(6 * D, kernel_init=nn.initializers.zeros)(nn.silu(c))
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
    h = _modulate(_norm()(x), shift_a, scale_a)
    qkv = nn.Dense(3 * D)(h).reshape(B, N, 3, self.num_heads, D // self.num_heads)
    attn = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    x = x + gate_a[:, None] * nn.Dense(D)(attn.reshape(B, N, D))
    if text is not None:
      x = CrossAttention(self.num_heads)(x, *text)
    h = _modulate(_norm()(x), shift_m, scale_m)
    h = nn.Dense(D)(nn.gelu(nn.Dense(int(D * self.mlp_ratio))(h), approximate=True))
    return x + gate_m[:, None] * h


class DiT(nn.Module):
  out_channels: int
  patch_size: int = 2
  hidden_size: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  num_classes: int = 0
  text: Any = None

  @nn.compact
  def __call__(self, z_BHWC, noise_B, y_B=None, train=False):
    B, H, W, C = z_BHWC.shape
    p, D = self.patch_size, self.hidden_size
    if H % p or W % p:
      raise ValueError(f"DiT: image size {H}x{W} is not a multiple of model.patch_size {p}.")
    if D % 4 or D % self.num_heads:
      raise ValueError(f"DiT: model.hidden_size {D} must be a multiple of 4 and of "
                       f"model.num_heads {self.num_heads}.")
    h, w = H // p, W // p
    patches = z_BHWC.reshape(B, h, p, w, p, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, h * w, -1)
    x = nn.Dense(D)(patches) + sincos_2d(h, w, D)[None]
    c = nn.Dense(D)(nn.silu(nn.Dense(D)(noise_embedding(noise_B, 256))))
    text = None
    if self.text is not None:
      features, mask, pooled = self.text(y_B)
      c = c + nn.Dense(D)(pooled)
      text = (features, mask)
    elif self.num_classes:
      c = c + nn.Embed(self.num_classes + 1, D)(y_B)  # + the null class
    for _ in range(self.depth):
      x = DiTBlock(D, self.num_heads, self.mlp_ratio)(x, c, text)
    shift, scale = jnp.split(nn.Dense(2 * D, kernel_init=nn.initializers.zeros)(nn.silu(c)), 2,
                             axis=-1)
    x = nn.Dense(p * p * self.out_channels, kernel_init=nn.initializers.zeros)(
        _modulate(_norm()(x), shift, scale))
    x = x.reshape(B, h, w, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, self.out_channels)
