"""MaskGIT (Chang et al. 2022) as pure functions: the masking schedule, the masked-token
loss, and iterative parallel decoding.

Training masks a fraction mask_ratio(u) = cos(pi u / 2), u ~ U(0, 1), of each sequence's
tokens (at least one; the positions uniform) and predicts the codes under the masks
(cross-entropy over the masked positions only). Decoding starts from a fully masked
sequence and, at each of `steps` steps, samples every masked position, keeps the most
confident samples and masks the rest again, so that after step t (0-based)
floor(L cos(pi/2 (t + 1) / steps)) tokens stay masked (at least one fewer than before, none
after the last step). Confidence is the log-probability of the sampled code plus Gumbel
noise of scale choice_temperature * (1 - (t + 1) / steps), MaskGIT's annealed randomness
in which tokens to keep. A fixed token is never masked again.
"""
import jax
import jax.numpy as jnp
import optax


def mask_ratio(u):
  """The cosine schedule: the fraction of tokens masked at progress u in [0, 1]."""
  return jnp.cos(jnp.pi / 2.0 * u)


def random_mask(rng, batch, length):
  """[batch, length] bool, True = masked: per sequence, ceil(mask_ratio(u) * length)
  positions (at least 1) drawn uniformly, u ~ U(0, 1)."""
  k_ratio, k_pos = jax.random.split(rng)
  n = jnp.ceil(mask_ratio(jax.random.uniform(k_ratio, (batch, 1))) * length)
  n = jnp.clip(n, 1, length)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, (batch, length)), -1), -1)
  return rank < n


def masked_token_loss(logits, tokens, mask):
  """(mean cross-entropy over the masked positions, accuracy of the argmax there);
  logits [B, L, K], tokens [B, L] int, mask [B, L] bool."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
  m = mask.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(m), 1.0)
  accuracy = jnp.sum((jnp.argmax(logits, -1) == tokens) * m) / count
  return jnp.sum(ce * m) / count, accuracy


def masked_after(t, steps, length, masked_now):
  """How many tokens stay masked after decoding step t (0-based) of `steps`:
  floor(length cos(pi/2 (t + 1) / steps)), at least one fewer than `masked_now`."""
  n = jnp.floor(length * mask_ratio((t + 1.0) / steps)).astype(jnp.int32)
  return jnp.clip(n, 0, jnp.maximum(masked_now - 1, 0))


def decode(logits_fn, rng, batch, length, mask_id, steps, temperature=1.0,
           choice_temperature=4.5):
  """[batch, length] int32 codes from iterative parallel decoding (see the module doc).

  logits_fn: tokens [B, L] (mask_id where masked) -> logits [B, L, K] over the K = mask_id
  codes (guidance, if any, applied inside). temperature > 0 scales the logits the codes are
  sampled from.
  """
  tokens = jnp.full((batch, length), mask_id, jnp.int32)

  def step(t, carry):
    tokens, rng = carry
    rng, k_code, k_choice = jax.random.split(rng, 3)
    logits = logits_fn(tokens)
    masked = tokens == mask_id
    sampled = jax.random.categorical(k_code, logits / temperature).astype(jnp.int32)
    sampled = jnp.where(masked, sampled, tokens)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), sampled[..., None], -1)[..., 0]
    noise = choice_temperature * (1.0 - (t + 1.0) / steps)
    confidence = logp + noise * jax.random.gumbel(k_choice, logp.shape)
    confidence = jnp.where(masked, confidence, jnp.inf)  # fixed tokens stay fixed
    keep_masked = masked_after(t, steps, length, jnp.sum(masked[0]))
    rank = jnp.argsort(jnp.argsort(confidence, -1), -1)  # 0 = the least confident
    return jnp.where(rank < keep_masked, mask_id, sampled), rng

  tokens, _ = jax.lax.fori_loop(0, steps, step, (tokens, rng))
  return tokens
