"""The GAN task: the whole two-player update as one pure, jitted step.

Per call of train_step: `gan.n_critic` discriminator updates (lax.scan, each on its
own slice of the real batch and fresh noise), then one generator update, then the
EMA of the generator's weights. State layout:
  params       {"g": ..., "d": ...}        opt_state {"g": ..., "d": ...}
  batch_stats  {"g": G BatchNorm statistics (StyleGAN: the running mean of w), "d": D
               spectral-norm vectors / BatchNorm statistics, "pl_mean": the running mean
               of the path length, with gan.pl_weight > 0}
  ema_params   EMA of G's params ({} when gan.ema_decay = 0)
The penalty (gan.penalty) enters D's loss with gan.penalty_weight on every D step, or,
with gan.penalty_every = k > 1, lazily: on every k-th D step, weighted k. In training
the generator gets its own rngs ("noise", "mixing": the StyleGAN generator's noise
inputs and style mixing); at evaluation the StyleGAN generator samples with the
truncation trick at gan.truncation_psi, and any generator's z can be truncated to
[-t, t] (gan.z_truncation, BigGAN's trick). gan.g_ortho_weight > 0 adds BigGAN's
orthogonal regularization of G's weights to G's loss ("g_ortho"); gan.pl_weight > 0 adds
StyleGAN2's path-length regularization ("pl", lazily on every gan.pl_every-th G step,
weighted by it, on train.batch_size / gan.pl_batch_shrink fresh samples; "pl_mean" its
running mean), and then G's adversarial loss is logged apart ("g_adversarial").
Metrics: d_loss, g_loss, d_real, d_fake (mean D outputs), the penalty (0 on the D steps
a lazy penalty skips), and the gradient norms of both players. The evaluators (config.evals) use samples,
about_samples and grid_samples: the EMA generator's images.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genimg_jax import data, images, optim, parallel, state as state_lib, xla
from genimg_jax.models import gan as gan_models
from genimg_jax.objectives import gan as gan_obj


class GANTask:
  """Plugs the two-player GAN update into the training loop."""

  def __init__(self, config):
    self.config = config
    g = config.gan
    self.d_loss_fn, self.g_loss_fn = gan_obj.gan_losses(g.loss)
    if g.penalty != "none" and g.penalty not in gan_obj.PENALTIES:
      raise ValueError(f"Unknown gan.penalty {g.penalty!r}; allowed: "
                       f"{['none'] + sorted(gan_obj.PENALTIES)}")
    if g.n_critic <= 0:
      raise ValueError(f"gan.n_critic must be positive, got {g.n_critic}.")
    if not 0.0 <= g.ema_decay < 1.0:
      raise ValueError(f"gan.ema_decay must be in [0, 1), got {g.ema_decay}.")
    if g.penalty_weight < 0:
      raise ValueError(f"gan.penalty_weight must be >= 0, got {g.penalty_weight}.")
    if config.data.preprocess != "symmetric":
      raise ValueError("GAN generators end in tanh: data.preprocess must be 'symmetric', "
                       f"got {config.data.preprocess!r}.")
    if config.d_optim.lr <= 0:
      raise ValueError(f"d_optim.lr must be positive, got {config.d_optim.lr}.")
    if g.penalty_every < 1:
      raise ValueError(f"gan.penalty_every must be >= 1 (1 = every D step), got {g.penalty_every}.")
    # the truncation trick: an input of the StyleGAN generator at evaluation
    self._g_eval_kwargs = {}
    if config.model.name == "stylegan":
      self._g_eval_kwargs = {"truncation_psi": float(g.truncation_psi)}
    elif g.truncation_psi != 1.0:
      raise ValueError("gan.truncation_psi applies to the stylegan generator (model.name="
                       f"'stylegan'), not to {config.model.name!r}.")
    if g.z_truncation < 0 or g.g_ortho_weight < 0:
      raise ValueError("gan.z_truncation (0 = off) and gan.g_ortho_weight must be >= 0, got "
                       f"{g.z_truncation} and {g.g_ortho_weight}.")
    if g.pl_weight < 0 or (g.pl_weight > 0 and config.model.name != "stylegan"):
      raise ValueError("gan.pl_weight (path-length regularization; 0 = off) must be >= 0 and "
                       f"applies to the stylegan generator; got {g.pl_weight} with "
                       f"{config.model.name!r}.")
    if g.pl_weight > 0 and (g.pl_every < 1 or g.pl_batch_shrink < 1
                            or config.train.batch_size % g.pl_batch_shrink):
      raise ValueError("gan.pl_every must be >= 1 and gan.pl_batch_shrink divide "
                       f"train.batch_size; got {g.pl_every}, {g.pl_batch_shrink} and "
                       f"{config.train.batch_size}.")
    self.image_shape = data.image_shape(config)
    self.generator, self.discriminator = gan_models.build_gan(config.model, self.image_shape)
    self.g_tx = optim.build_optimizer(config.optim, config.train.steps)
    self.d_tx = optim.build_optimizer(config.d_optim, config.train.steps * g.n_critic)
    self.examples_per_step = config.train.batch_size * g.n_critic
    self.conditional = config.model.num_classes > 0
    self._generate = xla.jit(self.generate)

  # --- networks with their collections ------------------------------------------
  def _g(self, g_params, g_stats, z, y, train, rng=None):
    """G(z, y) -> (images, new G stats). rng, in training: the generator's own draws (the
    StyleGAN generator's noise inputs and style mixing; other generators draw none)."""
    variables = {"params": g_params, **({"batch_stats": g_stats} if g_stats else {})}
    if train and g_stats:
      rngs = {} if rng is None else {"noise": jax.random.fold_in(rng, 0),
                                     "mixing": jax.random.fold_in(rng, 1)}
      x, upd = self.generator.apply(variables, z, y, train=True, mutable=["batch_stats"],
                                    rngs=rngs)
      return x, upd["batch_stats"]
    return self.generator.apply(variables, z, y, train=False, **self._g_eval_kwargs), g_stats

  def _d(self, d_params, d_stats, x, y, train):
    """D(x, y) -> (outputs [B], new D stats)."""
    variables = {"params": d_params, **({"batch_stats": d_stats} if d_stats else {})}
    if train and d_stats:
      out, upd = self.discriminator.apply(variables, x, y, train=True, mutable=["batch_stats"])
      return out, upd["batch_stats"]
    return self.discriminator.apply(variables, x, y, train=False), d_stats

  def sample_labels(self, rng, batch_size):
    """Uniform class labels for a batch of samples, or None for an unconditional G."""
    if not self.conditional:
      return None
    return jax.random.randint(rng, (batch_size,), 0, self.config.model.num_classes)

  # --- the interface the loop uses -----------------------------------------------
  def init_state(self, rng):
    kg, kd = jax.random.split(rng)
    z = jnp.zeros((2, self.config.model.latent_dim))
    y = jnp.zeros((2,), jnp.int32) if self.conditional else None
    gv = self.generator.init(kg, z, y, train=False)
    dv = self.discriminator.init(kd, jnp.zeros((2, *self.image_shape)), y, train=False)
    params = {"g": gv["params"], "d": dv["params"]}
    opt_state = {"g": self.g_tx.init(params["g"]), "d": self.d_tx.init(params["d"])}
    stats = {"g": gv.get("batch_stats", {}), "d": dv.get("batch_stats", {})}
    if self.config.gan.pl_weight > 0:
      stats["pl_mean"] = jnp.zeros(())
    ema = gv["params"] if self.config.gan.ema_decay > 0 else {}
    return state_lib.create(params, opt_state, ema_params=ema, batch_stats=stats)

  def _d_objective(self, d_params, d_stats, real, y_real, fake, y_fake, rng, d_step):
    g = self.config.gan
    d_real, d_stats = self._d(d_params, d_stats, real, y_real, True)
    d_fake, d_stats = self._d(d_params, d_stats, fake, y_fake, True)
    loss = self.d_loss_fn(d_real, d_fake)
    parts = {"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
    if g.penalty != "none":
      # Penalties differentiate D w.r.t. its input; the labels of real images are used
      # for interpolates too (as in conditional WGAN-GP implementations).
      d_fn = lambda x: self._d(d_params, d_stats, x, y_real, False)[0]
      penalty = lambda: gan_obj.PENALTIES[g.penalty](d_fn, real, fake, rng)
      if g.penalty_every == 1:
        pen = penalty()
      else:  # lazy regularization (Karras et al. 2020): every k-th D step, weighted k
        pen = jax.lax.cond(d_step % g.penalty_every == 0, penalty, lambda: jnp.zeros(()))
      parts[g.penalty] = pen
      loss = loss + g.penalty_weight * g.penalty_every * pen
    parts["d_loss"] = loss
    return loss, (parts, d_stats)

  def train_step(self, state, batch, rng):
    """n_critic D updates, one G update, EMA: (state, batch, rng) -> (state, metrics)."""
    g_cfg, B = self.config.gan, self.config.train.batch_size
    rng = jax.random.fold_in(rng, state.step)
    # [n_critic * B] -> n_critic slices of B rows; the split keeps each device's rows local.
    reals = batch["image"].reshape(B, g_cfg.n_critic, *self.image_shape).swapaxes(0, 1)
    labels = batch["label"].reshape(B, g_cfg.n_critic).swapaxes(0, 1)
    p, o, stats = state.params, state.opt_state, state.batch_stats

    def d_update(carry, inputs):
      d_params, d_opt, d_stats, g_stats = carry
      real, y_real, key, d_step = inputs
      kz, ky, kp = jax.random.split(key, 3)
      y_real = y_real if self.conditional else None
      y_fake = self.sample_labels(ky, B)
      z = jax.random.normal(kz, (B, self.config.model.latent_dim))
      fake, _ = self._g(p["g"], g_stats, z, y_fake, True,  # batch stats, not stored
                        jax.random.fold_in(key, 3))
      fake = jax.lax.stop_gradient(fake)
      (_, (parts, d_stats)), grads = jax.value_and_grad(self._d_objective, has_aux=True)(
          d_params, d_stats, real, y_real, fake, y_fake, kp, d_step)
      updates, d_opt = self.d_tx.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
      parts["d_grad_norm"] = state_lib.tree_norm(grads)
      return (d_params, d_opt, d_stats, g_stats), parts

    d_keys = jax.random.split(jax.random.fold_in(rng, 0), g_cfg.n_critic)
    d_steps = state.step * g_cfg.n_critic + jnp.arange(g_cfg.n_critic)  # D steps so far
    (d_params, d_opt, d_stats, _), d_parts = jax.lax.scan(
        d_update, (p["d"], o["d"], stats["d"], stats["g"]), (reals, labels, d_keys, d_steps))
    d_parts = jax.tree.map(lambda v: v[-1], d_parts)

    kz, ky = jax.random.split(jax.random.fold_in(rng, 1))
    z = jax.random.normal(kz, (B, self.config.model.latent_dim))
    y_fake = self.sample_labels(ky, B)

    def g_objective(g_params):
      fake, g_stats = self._g(g_params, stats["g"], z, y_fake, True, jax.random.fold_in(rng, 2))
      d_fake, _ = self._d(d_params, d_stats, fake, y_fake, True)
      adversarial = self.g_loss_fn(d_fake)
      loss, parts = adversarial, {}
      if g_cfg.g_ortho_weight > 0:
        parts["g_ortho"] = gan_obj.orthogonal_penalty(g_params)
        loss = loss + g_cfg.g_ortho_weight * parts["g_ortho"]
      if g_cfg.pl_weight > 0:
        parts["g_adversarial"] = adversarial
        term, parts["pl"], parts["pl_mean"] = self.path_length_term(
            g_params, stats["g"], state.step, stats["pl_mean"], jax.random.fold_in(rng, 4))
        loss = loss + term
      return loss, (g_stats, parts)

    (g_loss, (g_stats, g_parts)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(p["g"])
    updates, g_opt = self.g_tx.update(g_grads, o["g"], p["g"])
    g_params = optax.apply_updates(p["g"], updates)
    ema = state.ema_params
    if g_cfg.ema_decay > 0:
      ema = state_lib.ema_update(ema, g_params, g_cfg.ema_decay)
    metrics = dict(d_parts, **g_parts, g_loss=g_loss, g_grad_norm=state_lib.tree_norm(g_grads))
    metrics["loss"] = d_parts["d_loss"] + g_loss  # the scalar whose finiteness is watched
    finite = state_lib.all_finite(metrics["loss"], g_grads, d_params)
    new_stats = {"g": g_stats, "d": d_stats}
    if g_cfg.pl_weight > 0:
      new_stats["pl_mean"] = g_parts["pl_mean"]
    new = {"params": {"g": g_params, "d": d_params}, "opt_state": {"g": g_opt, "d": d_opt},
           "batch_stats": new_stats, "ema_params": ema}
    return state_lib.guarded_apply(state, new, finite), metrics

  def path_length_term(self, g_params, g_stats, g_step, pl_mean, rng):
    """(the term G's loss adds, StyleGAN2's path-length penalty, the new running mean of
    the length) on batch_size / pl_batch_shrink fresh samples (with style mixing and
    noise, as in training): on every pl_every-th G step the term is pl_weight x pl_every
    x the penalty; on the others (0, 0, pl_mean)."""
    g = self.config.gan
    n = self.config.train.batch_size // g.pl_batch_shrink
    kz, ky, k_mix, k_noise, k_dir = jax.random.split(rng, 5)
    z = jax.random.normal(kz, (n, self.config.model.latent_dim))
    y = self.sample_labels(ky, n)
    variables = {"params": g_params, "batch_stats": g_stats}

    def penalty():
      ws, _ = self.generator.apply(variables, z, y, train=True, method="styles",
                                   mutable=["batch_stats"], rngs={"mixing": k_mix})
      synthesize = lambda ws: self.generator.apply(variables, ws, method="synthesize",
                                                   rngs={"noise": k_noise})
      pen, new_mean, _ = gan_obj.path_length_penalty(synthesize, ws, pl_mean, k_dir)
      return g.pl_weight * g.pl_every * pen, pen, new_mean

    if g.pl_every == 1:
      return penalty()
    zero = jnp.zeros(())
    return jax.lax.cond(g_step % g.pl_every == 0, penalty, lambda: (zero, zero, pl_mean))

  # --- sampling and evaluation ---------------------------------------------------------
  def sampling_params(self, state):
    """The generator weights used for samples and metrics: the EMA ones when on."""
    return state.ema_params if self.config.gan.ema_decay > 0 else state.params["g"]

  def generate(self, g_params, g_stats, z, y):
    """Images in [-1, 1] from the generator in inference mode."""
    return self._g(g_params, g_stats, z, y, False)[0]

  def samples(self, state, rng, n):
    """(n generator samples in [-1, 1], host float32 NHWC; int32 labels [n] (uniform) when
    conditional, else None), as the metrics and an export draw them."""
    params, stats = self.sampling_params(state), state.batch_stats["g"]
    batch_size = self.config.metrics.batch_size
    out, labels = [], []
    for i in range(0, n, batch_size):
      b = min(batch_size, n - i)
      kz, ky = jax.random.split(jax.random.fold_in(rng, i))
      z = self.eval_z(kz, b)
      y = self.sample_labels(ky, b)
      out.append(np.asarray(parallel.fetch(self._generate(params, stats, z, y))))
      labels.append(None if y is None else np.asarray(parallel.fetch(y), np.int32))
    return np.concatenate(out), (None if labels[0] is None else np.concatenate(labels))

  def eval_z(self, key, n):
    """The z of samples, metrics and grids: normal, or with gan.z_truncation = t > 0
    truncated to [-t, t] (BigGAN's truncation trick)."""
    shape, t = (n, self.config.model.latent_dim), self.config.gan.z_truncation
    return jax.random.truncated_normal(key, -t, t, shape) if t > 0 else jax.random.normal(key, shape)

  def about_samples(self):
    """What produces the samples of the metrics and of an export (their protocol)."""
    g = self.config.gan
    about = {"sampler": "EMA generator" if g.ema_decay > 0 else "generator",
             "labels": "uniform over classes" if self.conditional else "none"}
    if g.z_truncation > 0:
      about["z_truncation"] = g.z_truncation
    if self.config.model.name == "stylegan":
      about["truncation_psi"] = g.truncation_psi
    return about

  def fixed_noise(self, n):
    """The same z (and labels) at every evaluation, so grids are comparable over steps."""
    z = self.eval_z(jax.random.PRNGKey(self.config.seed + 1), n)
    y = jnp.arange(n) % self.config.model.num_classes if self.conditional else None
    return z, y

  def eval_keys(self, rng):
    """The sample metrics draw from the evaluation key itself."""
    return {"sample_quality": rng}

  def grid_samples(self, state, rng, n):
    """n uint8 samples of fixed_noise: the same z (and labels) at every evaluation."""
    del rng
    z, y = self.fixed_noise(n)
    x = self._generate(self.sampling_params(state), state.batch_stats["g"], z, y)
    return images.to_uint8(parallel.fetch(x), (-1.0, 1.0))
