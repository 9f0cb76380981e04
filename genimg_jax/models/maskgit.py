"""MaskGIT's bidirectional transformer over the codes of a discrete autoencoder.

tokens [B, L] (codes in [0, num_codes), num_codes = [MASK]) and class labels [B] (the
index num_classes = the "null" class of classifier-free guidance) -> logits [B, L,
num_codes]. A learned position embedding per token; when num_classes > 0 a class token is
put in front of the sequence (and left out of the output). Pre-LayerNorm blocks of
self-attention without a causal mask (every token sees every other) and a 4x GELU MLP.
"""
import flax.linen as nn
import jax.numpy as jnp


class MaskGITTransformer(nn.Module):
  num_codes: int
  length: int
  dim: int = 256
  depth: int = 4
  num_heads: int = 4
  num_classes: int = 0

  @nn.compact
  def __call__(self, tokens_BL, y_B=None):
    pos = self.param("position", nn.initializers.normal(0.02), (self.length, self.dim))
    x = nn.Embed(self.num_codes + 1, self.dim)(tokens_BL) + pos
    if self.num_classes:
      x = jnp.concatenate([nn.Embed(self.num_classes + 1, self.dim)(y_B)[:, None], x], 1)
    for _ in range(self.depth):
      h = nn.LayerNorm()(x)
      x = x + nn.MultiHeadDotProductAttention(self.num_heads)(h, h)
      h = nn.LayerNorm()(x)
      x = x + nn.Dense(self.dim)(nn.gelu(nn.Dense(4 * self.dim)(h)))
    x = nn.LayerNorm()(x)
    if self.num_classes:
      x = x[:, 1:]
    return nn.Dense(self.num_codes)(x)
