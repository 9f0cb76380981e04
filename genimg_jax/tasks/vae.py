"""The VAE task: ELBO / IWAE training; test-set NLL, reconstruction quality, sample metrics.

What it exposes to the evaluators (genimg_jax/evaluators/, declared in config.evals):
* bound: the ELBO and its parts, and the IWAE bound with eval.iwae_k samples
  (eval.periodic_iwae_k at periodic evaluations) as the NLL, in nats per image and bits
  per dimension;
* reconstruct: the decoder's mean at the posterior mean, in [0, 1] (for the PSNR / SSIM
  of the "reconstruction" evaluator, against the test image's gray levels);
* samples / grid_samples: the decoder's mean E[x|z] at z ~ N(0, I), as the literature
  reports for Bernoulli decoders (not draws from p(x|z)).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genimg_jax import data, images, optim, parallel, state as state_lib, xla
from genimg_jax.models import vae as vae_models
from genimg_jax.objectives import vae as vae_obj

OBJECTIVES = ("elbo", "iwae")


class VAETask:
  """Plugs the VAE objectives into the training loop (see genimg_jax/tasks/__init__.py)."""

  def __init__(self, config):
    self.config = config
    o = config.objective
    if o.name not in OBJECTIVES:
      raise ValueError(f"Unknown objective {o.name!r} for the vae task; allowed: {OBJECTIVES}")
    if o.likelihood not in vae_obj.LIKELIHOODS:
      raise ValueError(f"Unknown likelihood {o.likelihood!r}; allowed: {sorted(vae_obj.LIKELIHOODS)}")
    if o.likelihood == "bernoulli" and config.data.preprocess not in ("binarize", "unit"):
      raise ValueError("The bernoulli likelihood needs data.preprocess 'binarize' or 'unit', "
                       f"got {config.data.preprocess!r}.")
    if o.likelihood != "bernoulli" and config.data.preprocess != "symmetric":
      raise ValueError(f"The {o.likelihood} likelihood needs data.preprocess 'symmetric' "
                       f"([-1, 1]), got {config.data.preprocess!r}.")
    if o.name == "iwae" and o.beta != 1.0:
      raise ValueError("objective.beta applies to the elbo objective only; the iwae objective "
                       "has no KL weight (set objective.beta=1).")
    for name in ("k",):
      if o[name] <= 0:
        raise ValueError(f"objective.{name} must be positive, got {o[name]}.")
    self.image_shape = data.image_shape(config)
    self.model = vae_models.build_vae(config.model, self.image_shape,
                                      vae_obj.LIKELIHOODS[o.likelihood])
    self.tx = optim.build_optimizer(config.optim, config.train.steps)
    self._eval_steps = {}  # iwae k -> jitted eval step
    self._sample = xla.jit(self.sample_images, static_argnums=2)
    self.value_range = (0.0, 1.0) if o.likelihood == "bernoulli" else (-1.0, 1.0)
    common = dict(model_apply=self.model.apply, likelihood=o.likelihood,
                  gaussian_scale=o.gaussian_scale)
    if o.name == "elbo":
      self.loss_fn = functools.partial(vae_obj.elbo_loss, beta=o.beta, **common)
    else:
      self.loss_fn = functools.partial(vae_obj.iwae_loss, k=o.k, **common)

  # --- the interface the loop uses -------------------------------------------
  def init_state(self, rng):
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    z = jnp.zeros((1, self.config.model.latent_dim), jnp.float32)
    params = self.model.init(rng, x, z)
    return state_lib.create(params, self.tx.init(params))

  def train_step(self, state, batch, rng):
    """One optimizer step on the batch: (state, batch, rng) -> (state, metrics)."""
    rng = jax.random.fold_in(rng, state.step)
    (loss, parts), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
        state.params, batch["image"], rng)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = state_lib.all_finite(loss, grads)
    new_state = state_lib.guarded_apply(state, {"params": params, "opt_state": opt_state}, finite)
    metrics = dict(parts, grad_norm=state_lib.tree_norm(grads),
                   param_norm=state_lib.tree_norm(state.params))
    return new_state, metrics

  def eval_step(self, params, batch, rng, iwae_k):
    """Masked sums over one eval batch: ELBO parts and the IWAE-k bound."""
    x, mask = batch["image"], batch["mask"]
    o, e = self.config.objective, self.config.eval
    r1, r2 = jax.random.split(rng)
    rec, kl = vae_obj.elbo_terms(self.model.apply, params, x, r1, o.likelihood, o.gaussian_scale)
    bound = vae_obj.iwae_bound(self.model.apply, params, x, r2, iwae_k, o.likelihood,
                               o.gaussian_scale, chunk=min(e.iwae_chunk, iwae_k))
    return {"rec": jnp.sum(rec * mask), "kl": jnp.sum(kl * mask),
            "iwae": jnp.sum(bound * mask), "count": jnp.sum(mask)}

  def finalize_eval(self, sums, iwae_k):
    """Sums over the eval set -> metrics (nats per image, bits per dim)."""
    n = sums["count"]
    dims = float(np.prod(self.image_shape))
    nll = -sums["iwae"] / n
    return {"elbo": -(sums["rec"] + sums["kl"]) / n, "rec": sums["rec"] / n,
            "kl": sums["kl"] / n, "nll": nll, "bits_per_dim": nll / (dims * np.log(2.0)),
            "iwae_k": iwae_k, "num_examples": int(n)}

  def sample_images(self, params, rng, n):
    """n samples (the mean of p(x|z) for z ~ N(0, I)) in [0, 1] as float [n, H, W, C]."""
    z = jax.random.normal(rng, (n, self.config.model.latent_dim))
    out = self.model.apply(params, z, method="decode")
    x = vae_obj.likelihood_mean(self.config.objective.likelihood, out)
    return (x - self.value_range[0]) / (self.value_range[1] - self.value_range[0])

  def reconstruct(self, params, x):
    """Mean reconstruction of x through the posterior mean, in [0, 1]."""
    mean, _ = self.model.apply(params, x, method="encode")
    out = self.model.apply(params, mean, method="decode")
    xr = vae_obj.likelihood_mean(self.config.objective.likelihood, out)
    lo, hi = self.value_range
    return (x - lo) / (hi - lo), (xr - lo) / (hi - lo)

  # --- what the evaluators use (genimg_jax/evaluators/) ----------------------------
  def eval_params(self, state):
    return state.params

  def eval_keys(self, rng):
    """The bound and the sample metrics both draw from the evaluation key itself."""
    return {"bound": rng, "sample_quality": rng}

  def bound(self, final):
    """(step, finish) of the "bound" evaluator: the IWAE bound with k = eval.iwae_k at the
    final evaluation, eval.periodic_iwae_k at the periodic ones."""
    e = self.config.eval
    k = e.iwae_k if final else e.periodic_iwae_k
    if k not in self._eval_steps:
      self._eval_steps[k] = xla.jit(functools.partial(self.eval_step, iwae_k=k))
    return self._eval_steps[k], functools.partial(self.finalize_eval, iwae_k=k)

  def grid_samples(self, state, rng, n):
    """n samples as uint8 from the fixed key PRNGKey(seed + 1): the same z at every step."""
    del rng
    samples = xla.jit(self.sample_images, static_argnums=2, once=True)(
        state.params, jax.random.PRNGKey(self.config.seed + 1), n)
    return images.to_uint8(parallel.fetch(samples))

  def about_samples(self):
    """What produces the samples of the metrics and of an export (their protocol)."""
    return {"sampler": "decoder mean E[x|z], z ~ N(0, I)"}

  def samples(self, state, rng, n):
    """(n samples in [-1, 1], None: no labels), as the metrics and an export draw them."""
    return self.sample(state.params, rng, n), None

  def sample(self, params, rng, n):
    """n samples (sample_images) in [-1, 1] as host float32 NHWC, in batches."""
    b = self.config.metrics.batch_size
    out = [np.asarray(parallel.fetch(self._sample(params, jax.random.fold_in(rng, i), min(b, n - i))))
           for i in range(0, n, b)]
    return np.concatenate(out) * 2.0 - 1.0
