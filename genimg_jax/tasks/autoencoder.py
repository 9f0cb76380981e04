"""The autoencoder task: the first stage of two-stage generation (VQ-VAE, FSQ, the KL
autoencoder of latent diffusion), trained to reconstruct, in the one loop.

Model: models/autoencoder.py (model.bottleneck: "vq" | "fsq" | "kl", models/bottlenecks.py).
Objective: objectives/autoencoder.py (reconstruction + the bottleneck's weighted terms).
State: params, and in batch_stats the VQ's EMA codebook (updated by the forward pass).
With the adversarial term (objective.adversarial_weight > 0), params and opt_state are
{"autoencoder": ..., "discriminator": ...}; eval_params gives the autoencoder's alone.

What it exposes to the evaluators (genimg_jax/evaluators/, declared in config.evals):
* reconstruct: test images and their reconstructions in [0, 1] (PSNR / SSIM and a grid);
* samples / about_samples: the reconstructions of the first N eval-split images, in
  [-1, 1]: scored by the sample-quality evaluator against the test split, their FD is
  the reconstruction FID (rFID) of the literature (its protocol records so);
* indices / codebook_size: the codes of a discrete bottleneck (the "codebook" evaluator).

What a run that uses a finished autoencoder (a prior over its latents) calls: latents,
decode, indices, decode_indices (on eval_params(state)).

LPIPS, the perceptual term of VQGAN and of latent diffusion's autoencoder, needs VGG
weights that cannot be downloaded here. Its stand-in is the optional feature term
(objective.features_weight > 0): the squared distance of the penultimate features of the
project's classifier (the run in objective.features_workdir, trained on the same data)
between an image and its reconstruction; the classifier is frozen, and results.json
records which weights were used (used_runs["feature_network"]).

The adversarial term (VQGAN, Esser et al. 2021): a patch discriminator (models/gan.py)
learns to tell training images from their reconstructions under the GAN loss
objective.adversarial_loss, and the autoencoder minimizes the generator's side of it,
weighted by objective.adversarial_weight. Both start at step objective.adversarial_start:
before it the term is logged but weighted 0, and the discriminator and its optimizer do
not move (the warm-up's steps still compute both networks: one compiled step serves the
whole run, selecting by the step number). The weight is fixed (VQGAN's adaptive weight, a
ratio of gradient norms at the decoder's last layer, is not built).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genimg_jax import data, optim, parallel, runs, state as state_lib, xla
from genimg_jax.models import autoencoder as ae_models
from genimg_jax.models import gan as gan_models
from genimg_jax.models.layers import conv_modules
from genimg_jax.objectives import autoencoder as ae_obj
from genimg_jax.objectives import gan as gan_obj


class AutoencoderTask:
  """Plugs the autoencoder objective into the training loop (see tasks/__init__.py)."""

  def __init__(self, config):
    self.config = config
    o = config.objective
    if config.data.preprocess != "symmetric":
      raise ValueError("The autoencoder task needs data.preprocess 'symmetric' ([-1, 1]), "
                       f"got {config.data.preprocess!r}.")
    if o.reconstruction not in ae_obj.RECONSTRUCTIONS:
      raise ValueError(f"Unknown objective.reconstruction {o.reconstruction!r}; allowed: "
                       f"{ae_obj.RECONSTRUCTIONS}")
    self.image_shape = data.image_shape(config)
    self.model = ae_models.build_autoencoder(config.model, self.image_shape)
    self.codebook_size = self.model.bottleneck.size
    self.tx = optim.build_optimizer(config.optim, config.train.steps)
    # a weight the config lacks is 0: the config.json of a run made before that term
    # (an autoencoder a prior restores) has no field for it, and was trained without it
    self.weights = {t: o.get(f"{t}_weight", 0.0) for t in ae_obj.TERMS}
    self.feature_run, features = None, None
    if self.weights["features"] > 0:
      self.feature_run, network = _feature_network(config)
      features = lambda x: network.apply(network.params, x)[0]
    self.loss_fn = functools.partial(ae_obj.autoencoder_loss, apply=self.model.apply,
                                     reconstruction=o.reconstruction, weights=self.weights,
                                     features=features)
    self.discriminator = None
    if self.weights["adversarial"] > 0:
      self.d_loss, self.g_loss = gan_obj.gan_losses(o.adversarial_loss)
      self.discriminator = gan_models.PatchDiscriminator(
          config.model.d_channels, config.model.d_layers,
          conv_modules(config.model.conv_impl)["conv"])
      self.d_tx = optim.build_optimizer(config.d_optim, config.train.steps)
    self._reconstruct = xla.jit(self.reconstruct)

  # --- the interface the loop uses -------------------------------------------
  def init_state(self, rng):
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    variables = self.model.init(rng, x)
    params, opt_state = variables["params"], self.tx.init(variables["params"])
    if self.discriminator is not None:
      d_params = self.discriminator.init(jax.random.fold_in(rng, 1), x)["params"]
      params = {"autoencoder": params, "discriminator": d_params}
      opt_state = {"autoencoder": opt_state, "discriminator": self.d_tx.init(d_params)}
    return state_lib.create(params, opt_state, batch_stats=variables.get("batch_stats", {}))

  def train_step(self, state, batch, rng):
    """One optimizer step on the batch: (state, batch, rng) -> (state, metrics); with the
    adversarial term, one step of each network on the same batch."""
    rng = jax.random.fold_in(rng, state.step)
    latent, restart = jax.random.split(rng)
    x, rngs = batch["image"], {"latent": latent, "restart": restart}
    params, opt_state, loss_kw = state.params, state.opt_state, {}
    if self.discriminator is not None:
      params, opt_state = state.params["autoencoder"], state.opt_state["autoencoder"]
      d_params, d_opt = state.params["discriminator"], state.opt_state["discriminator"]
      on = state.step >= self.config.objective.adversarial_start
      loss_kw = {"weights": dict(self.weights,
                                 adversarial=jnp.where(on, self.weights["adversarial"], 0.0)),
                 "adversarial": lambda xr: self.g_loss(
                     self.discriminator.apply({"params": d_params}, xr))}
    (loss, (parts, stats, xr)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
        params, state.batch_stats, x, rngs, **loss_kw)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(parts, grad_norm=state_lib.tree_norm(grads))
    checked = (loss, grads)
    if self.discriminator is not None:
      d_params, d_opt, d_loss, d_grads = self._discriminator_step(d_params, d_opt, x, xr, on)
      params = {"autoencoder": params, "discriminator": d_params}
      opt_state = {"autoencoder": opt_state, "discriminator": d_opt}
      metrics.update(d_loss=d_loss, d_grad_norm=state_lib.tree_norm(d_grads))
      checked += (d_loss, d_grads)
    finite = state_lib.all_finite(*checked)
    new_state = state_lib.guarded_apply(
        state, {"params": params, "opt_state": opt_state, "batch_stats": stats}, finite)
    return new_state, metrics

  def _discriminator_step(self, d_params, d_opt, x, xr, on):
    """(params, opt_state, loss, grads) of the discriminator after its step on images x
    against reconstructions xr; before adversarial_start (`on` False) its params and
    optimizer state stay as they are."""
    d_apply = lambda p, images: self.discriminator.apply({"params": p}, images)
    fake = jax.lax.stop_gradient(xr)
    d_loss, d_grads = jax.value_and_grad(
        lambda p: self.d_loss(d_apply(p, x), d_apply(p, fake)))(d_params)
    d_updates, new_opt = self.d_tx.update(d_grads, d_opt, d_params)
    d_params, d_opt = jax.tree.map(lambda new, old: jnp.where(on, new, old),
                                   (optax.apply_updates(d_params, d_updates), new_opt),
                                   (d_params, d_opt))
    return d_params, d_opt, d_loss, d_grads

  def used_runs(self):
    """What results.json records of the runs this one uses (train.used_runs): the
    feature term's classifier."""
    return {"feature_network": self.feature_run.record()} if self.feature_run else {}

  # --- what the evaluators and a prior use -----------------------------------------
  def eval_params(self, state):
    """The variables every method below takes: the autoencoder's params and the codebook's
    statistics."""
    params = state.params["autoencoder"] if self.discriminator is not None else state.params
    return {"params": params, **({"batch_stats": state.batch_stats}
                                 if state.batch_stats else {})}

  def reconstruct(self, variables, x):
    """(x, its reconstruction), both in [0, 1], for x in [-1, 1]."""
    xr, _, _ = self.model.apply(variables, x)
    return (x + 1.0) / 2.0, jnp.clip((xr + 1.0) / 2.0, 0.0, 1.0)

  def latents(self, variables, x):
    return self.model.apply(variables, x, method="latents")

  def decode(self, variables, z_q):
    return self.model.apply(variables, z_q, method="decode")

  def indices(self, variables, x):
    return self.model.apply(variables, x, method="indices")

  def decode_indices(self, variables, idx):
    return self.model.apply(variables, idx, method="decode_indices")

  def about_samples(self):
    return {"sampler": "reconstructions of the first N eval-split images (rFID)",
            "split": self.config.data.eval_split}

  def samples(self, state, rng, n):
    """(the reconstructions of the first n eval-split images in [-1, 1], their labels)."""
    del rng  # deterministic
    variables, mesh = self.eval_params(state), parallel.make_mesh()
    out, labels = [], []
    for local in data.eval_batches(self.config, num_examples_limit=n):
      batch = parallel.to_global(local, mesh)
      _, xr = self._reconstruct(variables, batch["image"])
      xr, label, mask = parallel.fetch((xr, batch["label"], batch["mask"]))
      keep = np.asarray(mask) > 0
      out.append(np.asarray(xr)[keep] * 2.0 - 1.0)
      labels.append(np.asarray(label)[keep])
    return np.concatenate(out)[:n], np.concatenate(labels)[:n]


def _feature_network(config):
  """(runs.Restored, FeatureNetwork) of the classifier in objective.features_workdir,
  checked to be a classifier trained on this run's data."""
  restored = runs.restore_used("objective.features_workdir", config.objective.features_workdir,
                               ("classifier",), "classifier_mnist", config.data.name)
  return restored, restored.task.feature_network(restored)
