"""The diffusion task: a denoising network (models/denoisers.py, by model.name) trained in
the one loop, sampled by DDPM, DDIM, Euler or Heun (samplers.py).

Training (objectives/diffusion.py): one noise level per image from diffusion.noise, the
loss of diffusion.loss_weighting on the output of the formulation diffusion.target (eps,
x0, v, flow or edm: its input scaling, noise conditioning and output map); an EMA of the
weights (diffusion.ema_decay) is what samples and metrics use. Class-conditional models
(model.num_classes > 0) drop the label with probability diffusion.label_dropout (the
"null" class), so that one network gives the conditional and the unconditional
predictions of classifier-free guidance (Ho & Salimans 2021):
eps = (1 + w) eps(z, y) - w eps(z, null), w = eval.guidance, on the eps of every
formulation's output map (guiding x0, v or the flow's velocity instead is the same
combination: each is affine in the network's output at a fixed z).

What it exposes to the evaluators (genimg_jax/evaluators/, config.evals; EMA weights):
* bound: the bound on the test set in bits/dim (objectives.diffusion.nll_bound):
  eval.bound_time_samples one-sample estimates per image, averaged; its standard error
  over the test images; the parts (prior, diffusion, decoder) in nats per image;
* grid_samples: samples from fixed noise (fixed labels: 0..9 in turn) with the eval sampler;
* samples: from eval.sampler with eval.sample_steps steps on the grid of eval.schedule
  (eval.eta for DDIM; eval.rho and eval.churn for Euler and Heun, in the formulation's ODE
  variables) and guidance eval.guidance, clipped and turned into images by the encoder
  (genimg_jax/encoders.py; pixels: [-1, 1], quantized to uint8 first); about_samples (the
  sampler, its grid, its NFE and the guidance) goes into each metric's protocol. A
  sampler is compiled once per (sampler, steps); the guidance scale is an argument.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genimg_jax import encoders, images, optim, parallel, samplers, state as state_lib, xla
from genimg_jax.models import denoisers
from genimg_jax.objectives import diffusion as diff


class DiffusionTask:
  """Plugs the diffusion objective into the training loop (see tasks/__init__.py)."""
  SAMPLERS = samplers.SAMPLERS  # eval.sampler's values
  TIME_VARIABLES = 1  # columns of the network's noise conditioning (1: a [B] vector)

  def __init__(self, config):
    self.config = config
    d, m, e = config.diffusion, config.model, config.eval
    for name, value, allowed in (("diffusion.target", d.target, diff.TARGETS),
                                 ("diffusion.loss_weighting", d.loss_weighting, diff.WEIGHTINGS),
                                 ("diffusion.noise", d.noise, diff.NOISE_LEVELS),
                                 ("diffusion.schedule", d.schedule, diff.SCHEDULES),
                                 ("eval.schedule", e.schedule or d.schedule, diff.SCHEDULES),
                                 ("eval.sampler", e.sampler, self.SAMPLERS)):
      if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; allowed: {allowed}")
    if d.noise_std <= 0 or d.sigma_data <= 0:
      raise ValueError("diffusion.noise_std and diffusion.sigma_data must be positive.")
    if e.rho <= 0 or e.churn < 0:
      raise ValueError(f"eval.rho must be positive and eval.churn >= 0, got {e.rho}, {e.churn}.")
    self.schedule = diff.logsnr_schedule(d.schedule)  # the bound's endpoints
    self.grid_schedule = diff.logsnr_schedule(e.schedule or d.schedule)  # the samplers'
    self.formulation = diff.formulation(d.target, d.sigma_data)
    self.levels = diff.noise_levels(d.noise, self.schedule, d.noise_mean, d.noise_std)
    if not 0.0 <= d.ema_decay < 1.0:
      raise ValueError(f"diffusion.ema_decay must be in [0, 1), got {d.ema_decay}.")
    if not 0.0 <= d.label_dropout < 1.0:
      raise ValueError(f"diffusion.label_dropout must be in [0, 1), got {d.label_dropout}.")
    if e.sample_steps < 1 or e.bound_time_samples < 1:
      raise ValueError("eval.sample_steps and eval.bound_time_samples must be positive.")
    self.encoder = encoders.build_encoder(config)  # what the network generates in
    self.image_shape = self.encoder.shape
    if not self.encoder.has_bound and any(
        v.get("type") == "bound" for v in config.get("evals", {}).values()):
      raise ValueError("The bound in bits/dim is defined for pixel models only: leave the "
                       "'bound' evaluator out of config.evals (--experiment.evals.bound.type=none).")
    self.conditional = m.num_classes > 0
    self.model = denoisers.build_denoiser(m, self.image_shape)
    self.tx = optim.build_optimizer(config.optim, config.train.steps)
    self._samplers = {}  # (sampler, steps, eta) -> jitted sample function
    self._bound = xla.jit(self.bound_step)

  # --- the network ----------------------------------------------------------------------
  def predict(self, params, z, logsnr, labels, train=False, rng=None):
    """The network's output F at the VP z (the formulation scales the input and conditions
    on its own noise variable)."""
    rngs = {"dropout": rng} if train else {}
    f = self.formulation
    inputs = z if f.network_input is None else f.network_input(z, logsnr)
    return self.model.apply({"params": params}, inputs, f.c_noise(logsnr), labels,
                            train=train, rngs=rngs)

  def null_labels(self, n):
    return jnp.full((n,), self.config.model.num_classes, jnp.int32) if self.conditional else None

  def train_conditioning(self, batch, rng):
    """The network's conditioning on a training batch (classifier-free guidance's
    dropout applied), or None: the seam a conditioning other than class labels
    (tasks/text_to_image.py: captions) replaces, with null_labels, draw_conditioning and
    grid_conditioning."""
    return self.drop_labels(rng, batch["label"]) if self.conditional else None

  def draw_conditioning(self, rng, n):
    """(conditioning of n samples for the metrics, their int32 class labels): labels
    uniform over the classes."""
    y = jax.random.randint(rng, (n,), 0, self.config.model.num_classes)
    return y, y

  def grid_conditioning(self, n):
    """The conditioning of the sample grid's n images: labels 0..9 in turn."""
    return jnp.arange(n) % self.config.model.num_classes

  def drop_labels(self, rng, labels):
    """The training labels of classifier-free guidance: each replaced by the null class
    with probability diffusion.label_dropout."""
    drop = jax.random.bernoulli(rng, self.config.diffusion.label_dropout, labels.shape)
    return jnp.where(drop, self.config.model.num_classes, labels)

  # --- the interface the loop uses --------------------------------------------------------
  def init_state(self, rng):
    z = jnp.zeros((1, *self.image_shape), jnp.float32)
    k = self.TIME_VARIABLES
    params = self.model.init(rng, z, jnp.zeros((1,) if k == 1 else (1, k)),
                             self.null_labels(1))["params"]
    ema = params if self.config.diffusion.ema_decay > 0 else {}
    return state_lib.create(params, self.tx.init(params), ema_params=ema)

  def loss(self, params, x, labels, rng, dropout_rng):
    """(loss, parts) of the training objective on the batch x (labels already dropped)."""
    predict = lambda z, logsnr: self.predict(params, z, logsnr, labels, True, dropout_rng)
    return diff.diffusion_loss(predict, x, rng, levels=self.levels, formulation=self.formulation,
                               weighting=self.config.diffusion.loss_weighting)

  def train_step(self, state, batch, rng):
    """One optimizer step on the batch: (state, batch, rng) -> (state, metrics)."""
    d = self.config.diffusion
    rng = jax.random.fold_in(rng, state.step)
    k_loss, k_dropout, k_labels = jax.random.split(rng, 3)
    x = self.encoder.encode(batch["image"])
    labels = self.train_conditioning(batch, k_labels)
    loss_fn = lambda params: self.loss(params, x, labels, k_loss, k_dropout)
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if d.ema_decay > 0:
      ema = state_lib.ema_update(ema, params, d.ema_decay)
    finite = state_lib.all_finite(loss, grads)
    new = state_lib.guarded_apply(state, {"params": params, "opt_state": opt_state,
                                          "ema_params": ema}, finite)
    return new, dict(parts, grad_norm=state_lib.tree_norm(grads),
                     param_norm=state_lib.tree_norm(state.params))

  # --- sampling --------------------------------------------------------------------------
  def sampling_params(self, state):
    return state.ema_params if self.config.diffusion.ema_decay > 0 else state.params

  def denoiser(self, params, labels, guidance):
    """(z, logsnr) -> (x0_hat, eps_hat), guided when the model is conditional."""
    to_x0_eps = self.formulation.to_x0_eps

    def denoise(z, logsnr):
      if not self.conditional:
        return to_x0_eps(self.predict(params, z, logsnr, None), z, logsnr)
      both = self.predict(params, jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]),
                          jnp.concatenate([labels, self.null_labels(len(labels))]))
      _, eps_c = to_x0_eps(both[:len(z)], z, logsnr)
      _, eps_u = to_x0_eps(both[len(z):], z, logsnr)
      eps = (1.0 + guidance) * eps_c - guidance * eps_u
      alpha, sigma = diff.alpha_sigma(logsnr[:, None, None, None])
      return (z - sigma * eps) / alpha, eps

    return denoise

  def sample_fn(self, sampler, steps, eta):
    """The compiled sampler: (params, noise, labels, rng, guidance) -> images in [-1, 1]."""
    key = (sampler, steps, eta)
    if key not in self._samplers:
      e = self.config.eval

      def run(params, noise, labels, rng, guidance):
        return samplers.sample(self.denoiser(params, labels, guidance), noise, rng, name=sampler,
                               steps=steps, schedule=self.grid_schedule, eta=eta,
                               ode=self.formulation.ode, rho=float(e.rho), churn=float(e.churn),
                               clip=self.encoder.clip)
      self._samplers[key] = xla.jit(run)
    return self._samplers[key]

  def sample(self, params, rng, n, batch_size, labels=None, noise=None, return_labels=False):
    """n samples with the eval sampler, as the encoder's images (pixels: quantized to uint8,
    as float [-1, 1], host NHWC);
    with return_labels, (samples, int32 labels [n] or None)."""
    e = self.config.eval
    fn = self.sample_fn(e.sampler, e.sample_steps, float(e.eta))
    out, drawn = [], []
    for i in range(0, n, batch_size):
      b = min(batch_size, n - i)
      k_noise, k_labels, k_sampler = jax.random.split(jax.random.fold_in(rng, i), 3)
      z = noise[i:i + b] if noise is not None else jax.random.normal(k_noise, (b, *self.image_shape))
      y = None
      if self.conditional:
        y, classes = ((labels[i:i + b], labels[i:i + b]) if labels is not None
                      else self.draw_conditioning(k_labels, b))
        drawn.append(np.asarray(parallel.fetch(classes), np.int32))
      x = parallel.fetch(fn(params, z, y, k_sampler, jnp.float32(e.guidance)))
      out.append(self.encoder.to_images(x))
    if return_labels:
      return np.concatenate(out), (np.concatenate(drawn) if drawn else None)
    return np.concatenate(out)

  def about_samples(self):
    """What produces the samples of the metrics and of an export (their protocol)."""
    e = self.config.eval
    return {"sampler": f"{e.sampler}, EMA weights" if self.config.diffusion.ema_decay > 0
            else e.sampler, "sample_steps": e.sample_steps,
            "nfe": samplers.nfe(e.sampler, e.sample_steps), "eta": float(e.eta),
            "schedule": e.schedule or self.config.diffusion.schedule,
            **({"rho": float(e.rho), "churn": float(e.churn), "ode": self.formulation.ode}
               if e.sampler in ("euler", "heun") else {}),
            "guidance": float(e.guidance),
            "labels": "uniform over classes" if self.conditional else "none",
            "quantized": "uint8"}

  def samples(self, state, rng, n):
    """(n samples in [-1, 1], their labels or None), as the metrics and an export draw them."""
    return self.sample(self.sampling_params(state), rng, n, self.config.metrics.batch_size,
                       return_labels=True)

  def used_runs(self):
    """What results.json records of the runs this one uses (train.used_runs): the
    autoencoder of a latent model."""
    return {"autoencoder": self.encoder.record()} if hasattr(self.encoder, "record") else {}

  # --- evaluation ------------------------------------------------------------------------
  def bound_step(self, params, batch, rng):
    """Masked sums over one eval batch of the bound's parts, and of the squared NLL."""
    S = self.config.eval.bound_time_samples
    predict = lambda z, logsnr: self.predict(params, z, logsnr, self.null_labels(len(z)))
    parts = [diff.nll_bound(predict, batch["image"], jax.random.fold_in(rng, s),
                            schedule=self.schedule, formulation=self.formulation)
             for s in range(S)]
    per_image = {k: sum(p[k] for p in parts) / S for k in parts[0]}  # mean over t samples
    mask = batch["mask"]
    out = {k: jnp.sum(v * mask) for k, v in per_image.items()}
    out["nll_sq"] = jnp.sum(per_image["nll"]**2 * mask)
    out["count"] = jnp.sum(mask)
    return out

  def bound_finish(self, sums):
    """Sums over the test set -> {"bits_per_dim", "bits_per_dim_stderr", "nll", "prior", ...}."""
    n = float(sums["count"])
    nats_per_bit = float(np.prod(self.image_shape)) * np.log(2.0)
    nll = sums["nll"] / n
    std = np.sqrt(max(sums["nll_sq"] / n - nll**2, 0.0) * n / max(n - 1, 1))
    out = {k: sums[k] / n for k in ("prior", "diffusion", "decoder")}
    out.update(nll=nll, bits_per_dim=nll / nats_per_bit,
               bits_per_dim_stderr=std / np.sqrt(n) / nats_per_bit,
               bound_time_samples=self.config.eval.bound_time_samples, num_examples=int(n))
    return out

  # --- what the evaluators use (genimg_jax/evaluators/) ----------------------------------
  def eval_params(self, state):
    return self.sampling_params(state)

  def eval_keys(self, rng):
    """The bound, the grid and the sample metrics: the three parts of the evaluation key."""
    return dict(zip(("bound", "sample_grid", "sample_quality"), jax.random.split(rng, 3)))

  def bound(self, final):
    """(step, finish) of the "bound" evaluator: the same at every evaluation."""
    del final
    if not self.encoder.has_bound:
      raise ValueError("The bound in bits/dim is defined for pixel models only: leave the "
                       "'bound' evaluator out of config.evals.")
    return self._bound, self.bound_finish

  def grid_samples(self, state, rng, n):
    """n uint8 samples from fixed noise PRNGKey(seed + 1) (labels 0..9 in turn)."""
    fixed = jax.random.normal(jax.random.PRNGKey(self.config.seed + 1), (n, *self.image_shape))
    labels = self.grid_conditioning(n) if self.conditional else None
    grid = self.sample(self.sampling_params(state), rng, n, n, labels, fixed)
    return images.to_uint8((grid + 1.0) / 2.0)
