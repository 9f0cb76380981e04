"""Text encoders and cross-attention: what a text-conditioned denoiser reads a caption with.

The interface. A text encoder is a Flax module called as `encoder(tokens_BL)` on token ids
[B, L] (genimg_jax/captions.py: 0 is padding, the words from the left) that returns
`(features [B, M, D], mask [B, M] bool, pooled [B, D])`: the token features that
cross-attention reads (mask: the real ones), and one vector for the whole caption that
is added to the noise embedding. The empty caption (all padding) has an all-False mask,
so cross-attention adds nothing for it: it is classifier-free guidance's null.

The encoders, by model.text_encoder (`build_text_encoder`):
  bow          bag of words: the caption's word counts [B, V], one Dense to D; a single
               feature token (the pooled vector).
  tfidf        the counts weighted by inverse document frequency (idf = log(1 / df), df
               over the training captions, captions.Captioner.document_frequency), L2
               normalized, one Dense; a single feature token.
               Both count only the words of their vocabulary (`word_weights`, the task's:
               the words the training captions contain), as scikit-learn's vectorizers
               ignore a word their fit never saw: such a word's Dense row never trains, and
               counting it would add its random initialization (under TF-IDF, at the
               largest idf) to the caption's vector.
  embedding    learned word embeddings [B, L, D]: the features are the words' embeddings,
               pooled their mean over the real tokens.
  transformer  learned word and position embeddings through `text_depth` pre-LayerNorm
               self-attention blocks (the padding masked out of the keys); pooled the
               masked mean of the outputs.
All are trained with the denoiser. A frozen pretrained encoder that a user brings is a
module with the same call (e.g. one that maps the ids back to strings, runs a pretrained
network under jax.lax.stop_gradient and returns its last hidden states and attention
mask), registered in `ENCODERS`.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ENCODERS = ("bow", "tfidf", "embedding", "transformer")


def _counts(tokens, vocab_size):
  """[B, V] word counts of token ids [B, L], padding (id 0) left out."""
  one_hot = jax.nn.one_hot(tokens, vocab_size, dtype=jnp.float32)
  return one_hot.sum(1).at[:, 0].set(0.0)


class BagOfWords(nn.Module):
  vocab_size: int
  dim: int
  word_weights: tuple = ()  # [V] each word's weight (tfidf: its idf; 0: not counted); () all 1
  normalize: bool = False   # tfidf: the weighted counts L2 normalized

  @nn.compact
  def __call__(self, tokens):
    x = _counts(tokens, self.vocab_size)
    if self.word_weights:
      x = x * jnp.asarray(self.word_weights, jnp.float32)
    if self.normalize:
      x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    pooled = nn.Dense(self.dim)(x)
    mask = (tokens > 0).any(1, keepdims=True)
    return pooled[:, None], mask, pooled


class WordEmbeddings(nn.Module):
  vocab_size: int
  dim: int

  @nn.compact
  def __call__(self, tokens):
    mask = tokens > 0
    x = nn.Embed(self.vocab_size, self.dim)(tokens) * mask[..., None]
    pooled = x.sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
    return x, mask, pooled


class TransformerEncoder(nn.Module):
  vocab_size: int
  dim: int
  depth: int = 2
  num_heads: int = 4
  max_length: int = 16

  @nn.compact
  def __call__(self, tokens):
    B, L = tokens.shape
    mask = tokens > 0
    pos = self.param("position", nn.initializers.normal(0.02), (self.max_length, self.dim))
    x = nn.Embed(self.vocab_size, self.dim)(tokens) + pos[None, :L]
    attend = mask[:, None, None, :]  # [B, heads, queries, keys]
    for _ in range(self.depth):
      h = nn.LayerNorm()(x)
      h = nn.MultiHeadDotProductAttention(self.num_heads)(h, h, mask=attend)
      x = x + h
      h = nn.LayerNorm()(x)
      x = x + nn.Dense(self.dim)(nn.gelu(nn.Dense(4 * self.dim)(h)))
    x = nn.LayerNorm()(x) * mask[..., None]
    pooled = x.sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
    return x, mask, pooled


def build_text_encoder(name, vocab_size, dim, depth=2, num_heads=4, word_weights=None):
  """The text encoder named by model.text_encoder (module doc). word_weights [V]: the bag
  encoders' weight of each word's count (bow: 1 for the vocabulary's words, 0 for the
  others; None: every word 1; tfidf: the idf, 0 outside the vocabulary; required); the
  embedding and transformer encoders do not use it."""
  weights = () if word_weights is None else tuple(float(v) for v in np.asarray(word_weights))
  if name == "bow":
    return BagOfWords(vocab_size, dim, weights)
  if name == "tfidf":
    if word_weights is None:
      raise ValueError("The tfidf encoder needs the inverse document frequencies.")
    return BagOfWords(vocab_size, dim, weights, normalize=True)
  if name == "embedding":
    return WordEmbeddings(vocab_size, dim)
  if name == "transformer":
    return TransformerEncoder(vocab_size, dim, depth, num_heads)
  raise ValueError(f"Unknown model.text_encoder {name!r}; allowed: {ENCODERS}")


class CrossAttention(nn.Module):
  """Residual attention from the positions of x [B, N, C] to the text features [B, M, D]
  (padding masked out); a caption with no real token adds nothing. The output projection
  starts at zero (the block starts as the identity)."""
  num_heads: int = 1

  @nn.compact
  def __call__(self, x, features, mask):
    B, N, C = x.shape
    heads = self.num_heads
    q = nn.Dense(C)(nn.LayerNorm()(x)).reshape(B, N, heads, C // heads)
    k = nn.Dense(C)(features).reshape(B, -1, heads, C // heads)
    v = nn.Dense(C)(features).reshape(B, -1, heads, C // heads)
    logits = jnp.einsum("bnhc,bmhc->bhnm", q, k) / math.sqrt(C // heads)
    logits = jnp.where(mask[:, None, None, :], logits, -1e9)
    weights = jax.nn.softmax(logits, axis=-1)
    h = jnp.einsum("bhnm,bmhc->bnhc", weights, v).reshape(B, N, C)
    h = nn.Dense(C, kernel_init=nn.initializers.zeros)(h)
    return x + h * mask.any(1)[:, None, None]
