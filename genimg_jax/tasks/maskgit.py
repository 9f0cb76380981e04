"""The maskgit task: a MaskGIT prior (Chang et al. 2022) over the codes of a finished
discrete autoencoder (VQ or FSQ, tasks/autoencoder.py), in the one loop.

The autoencoder is the run in latent.autoencoder_workdir at checkpoint
latent.autoencoder_step (encoders.autoencoder_run: a run of the autoencoder task, on this
run's data and data.preprocess, with a codebook). It stays frozen: each training batch is
turned into its h x w code indices inside the train step, and results.json records its
weights (used_runs["autoencoder"]); a resume refuses it once its workdir holds other
weights.

Model: models/maskgit.py (a bidirectional transformer, class-conditional with a null class
when model.num_classes > 0). Objective: objectives/maskgit.py (the cosine masking
schedule, cross-entropy on the masked codes). Class labels are replaced by the null class
with probability maskgit.label_dropout in training (classifier-free guidance).

Samples: eval.sample_steps steps of iterative parallel decoding (objectives/maskgit.py:
decode; eval.temperature, eval.choice_temperature), labels uniform over the classes,
logits guided as (1 + guidance) * conditional - guidance * unconditional (eval.guidance;
0 = the conditional logits alone), then decoded by the autoencoder and quantized to uint8 levels
as every image model's samples are. No likelihood is reported.

What it exposes to the evaluators: samples / about_samples (sample_quality) and
grid_samples (sample_grid, labels 0..9 in turn, a fixed key).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genimg_jax import data, encoders, images, optim, parallel, state as state_lib, xla
from genimg_jax.models import maskgit as maskgit_models
from genimg_jax.objectives import maskgit as mg


class MaskGITTask:
  """Plugs the MaskGIT objective into the training loop (see tasks/__init__.py)."""

  def __init__(self, config):
    self.config = config
    e = config.eval
    if e.sample_steps < 1 or e.temperature <= 0:
      raise ValueError(f"eval.sample_steps must be >= 1 and eval.temperature > 0, got "
                       f"{e.sample_steps} and {e.temperature}.")
    self.autoencoder = encoders.autoencoder_run(config, "vqvae_mnist")
    ae = self.autoencoder.task
    if not getattr(ae, "codebook_size", 0):
      raise ValueError(f"The autoencoder in latent.autoencoder_workdir="
                       f"{config.latent.autoencoder_workdir!r} has no codebook (its bottleneck "
                       f"is {self.autoencoder.config.model.bottleneck!r}): MaskGIT models the "
                       "codes of a 'vq' or 'fsq' autoencoder.")
    self.ae_variables = ae.eval_params(self.autoencoder.state)
    self._indices, self._decode = ae.indices, xla.jit(ae.decode_indices)
    self.num_codes = ae.codebook_size  # also the [MASK] token
    self.image_shape = data.image_shape(config)
    self.token_shape = tuple(jax.eval_shape(ae.indices, self.ae_variables,
                                            jnp.zeros((1, *self.image_shape))).shape[1:])
    self.length = int(np.prod(self.token_shape))
    m = config.model
    self.conditional = m.num_classes > 0
    self.model = maskgit_models.MaskGITTransformer(self.num_codes, self.length, m.dim, m.depth,
                                                   m.num_heads, m.num_classes)
    self.tx = optim.build_optimizer(config.optim, config.train.steps)
    self._decoders = {}

  # --- the interface the loop uses -------------------------------------------
  def init_state(self, rng):
    tokens = jnp.zeros((1, self.length), jnp.int32)
    params = self.model.init(rng, tokens, jnp.zeros((1,), jnp.int32))["params"]
    return state_lib.create(params, self.tx.init(params))

  def tokens(self, x):
    """Images [B, H, W, C] in [-1, 1] -> their codes [B, L] under the frozen autoencoder."""
    return self._indices(self.ae_variables, x).reshape(x.shape[0], self.length)

  def train_step(self, state, batch, rng):
    """One optimizer step: (state, batch, rng) -> (state, metrics)."""
    rng = jax.random.fold_in(rng, state.step)
    k_mask, k_drop = jax.random.split(rng)
    tokens = self.tokens(batch["image"])
    mask = mg.random_mask(k_mask, *tokens.shape)
    inputs = jnp.where(mask, self.num_codes, tokens)
    y = None
    if self.conditional:
      drop = jax.random.bernoulli(k_drop, self.config.maskgit.label_dropout, batch["label"].shape)
      y = jnp.where(drop, self.config.model.num_classes, batch["label"])

    def loss_fn(params):
      logits = self.model.apply({"params": params}, inputs, y)
      loss, accuracy = mg.masked_token_loss(logits, tokens, mask)
      return loss, {"loss": loss, "masked_accuracy": accuracy,
                    "mask_ratio": jnp.mean(mask.astype(jnp.float32))}

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = state_lib.all_finite(loss, grads)
    new_state = state_lib.guarded_apply(state, {"params": params, "opt_state": opt_state}, finite)
    return new_state, dict(parts, grad_norm=state_lib.tree_norm(grads))

  def used_runs(self):
    """What results.json records of the runs this one uses: the autoencoder."""
    return {"autoencoder": self.autoencoder.record()}

  # --- sampling ----------------------------------------------------------------------
  def eval_params(self, state):
    return state.params

  def logits_fn(self, params, labels, guidance):
    """tokens -> logits, guided when the model is conditional."""
    def logits(tokens):
      if not self.conditional:
        return self.model.apply({"params": params}, tokens)
      null = jnp.full_like(labels, self.config.model.num_classes)
      both = self.model.apply({"params": params}, jnp.concatenate([tokens, tokens]),
                              jnp.concatenate([labels, null]))
      cond, uncond = both[:len(tokens)], both[len(tokens):]
      return (1.0 + guidance) * cond - guidance * uncond
    return logits

  def _decoder(self, n):
    """The jitted decoding of n sequences (one compiled program per batch size)."""
    if n not in self._decoders:
      e = self.config.eval
      def run(params, labels, rng, guidance):
        return mg.decode(self.logits_fn(params, labels, guidance), rng, n, self.length,
                         self.num_codes, e.sample_steps, e.temperature, e.choice_temperature)
      self._decoders[n] = xla.jit(run)
    return self._decoders[n]

  def sample(self, params, rng, n, batch_size, labels=None):
    """(n samples as float32 images in [-1, 1] at uint8 levels, host NHWC; their int32
    labels or None)."""
    out, drawn = [], []
    for i in range(0, n, batch_size):
      b = min(batch_size, n - i)
      k_labels, k_decode = jax.random.split(jax.random.fold_in(rng, i))
      y = (labels[i:i + b] if labels is not None else
           jax.random.randint(k_labels, (b,), 0, max(self.config.model.num_classes, 1)))
      y = jnp.asarray(y, jnp.int32)
      codes = self._decoder(b)(params, y, k_decode, jnp.float32(self.config.eval.guidance))
      x = self._decode(self.ae_variables, codes.reshape(b, *self.token_shape))
      out.append(encoders.uint8_levels(parallel.fetch(x)))
      drawn.append(np.asarray(parallel.fetch(y), np.int32))
    return np.concatenate(out), (np.concatenate(drawn) if self.conditional else None)

  def about_samples(self):
    e = self.config.eval
    return {"sampler": f"maskgit {e.sample_steps} steps", "nfe": e.sample_steps,
            "temperature": float(e.temperature), "choice_temperature": float(e.choice_temperature),
            "guidance": float(e.guidance),
            "labels": "uniform over classes" if self.conditional else "none",
            "quantized": "uint8"}

  def samples(self, state, rng, n):
    """(n samples in [-1, 1], their labels or None), as the metrics draw them."""
    return self.sample(state.params, rng, n, self.config.metrics.batch_size)

  def grid_samples(self, state, rng, n):
    """n uint8 samples from the fixed key PRNGKey(seed + 1) (labels 0..9 in turn)."""
    del rng
    labels = np.arange(n) % max(self.config.model.num_classes, 1)
    grid, _ = self.sample(state.params, jax.random.PRNGKey(self.config.seed + 1), n, n, labels)
    return images.to_uint8((grid + 1.0) / 2.0)
