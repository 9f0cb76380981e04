"""The MeanFlow task: a one- or few-step generator trained from scratch in the one loop
(objectives/meanflow.py), built on the diffusion task's flow formulation.

The network is a denoiser of models/denoisers.py (model.name) conditioned on two time
variables, (1000 t, 1000 (t - r)) as the paper's (t, t - r) embeddings, and predicts the
average velocity u(z_t, r, t) of the path z_t = (1 - t) x + t eps. Everything else is the
diffusion task's: the EMA weights for samples and metrics, label dropout for guidance,
the evaluators (bound, sample_grid, sample_quality) and their protocol. At r = t the
network is a flow model: `predict` is u(z_t, t, t), the instantaneous velocity under the
"flow" formulation, so the test bound in bits/dim and the many-step samplers (euler,
heun, ddim on the "flow" schedule) evaluate it as flow matching would.

eval.sampler "meanflow" (the default) is the paper's few-step sampler with
eval.sample_steps network evaluations (1: x = eps - u(eps, 0, 1)). Guidance, for a
conditional model, combines the conditional and unconditional average velocities as the
diffusion task combines eps (affine in the output at fixed z); the paper's training-time
guidance (folded into the target) is not implemented.

jax.jvp runs through the network, so it is built with the layer forms that jax.jvp goes
through (denoisers.build_denoiser(forward_differentiable=True): on a CPU, the CPU forms
but for the strided convolutions' custom VJP).
"""
import jax.numpy as jnp

from genimg_jax import samplers, xla
from genimg_jax.models import denoisers
from genimg_jax.objectives import diffusion as diff
from genimg_jax.objectives import meanflow as mf
from genimg_jax.tasks import diffusion


class MeanFlowTask(diffusion.DiffusionTask):
  """The diffusion task with MeanFlow's network, loss and sampler (see the module doc)."""
  SAMPLERS = samplers.SAMPLERS + ("meanflow",)
  TIME_VARIABLES = 2  # (t, t - r)

  def __init__(self, config):
    d, m, f = config.diffusion, config.model, config.meanflow
    if d.target != "flow" or d.schedule != "flow":
      raise ValueError("The meanflow task trains on the flow path: diffusion.target and "
                       f"diffusion.schedule must be 'flow', got {d.target!r}, {d.schedule!r}.")
    if not 0.0 <= f.ratio <= 1.0 or f.time_std <= 0 or f.adaptive_p < 0 or f.adaptive_c <= 0:
      raise ValueError("meanflow.ratio must be in [0, 1], meanflow.time_std and adaptive_c "
                       f"positive and adaptive_p >= 0; got {f.ratio}, {f.time_std}, "
                       f"{f.adaptive_c}, {f.adaptive_p}.")
    super().__init__(config)
    self.model = denoisers.build_denoiser(m, self.image_shape, forward_differentiable=True)

  # --- the network ----------------------------------------------------------------------
  def average_velocity(self, params, z_t, r, t, labels, train=False, rng=None):
    """u(z_t, r, t) on the flow path's z_t = (1 - t) x + t eps; r, t: [B]."""
    rngs = {"dropout": rng} if train else {}
    noise = jnp.stack([1000.0 * t, 1000.0 * (t - r)], axis=-1)
    return self.model.apply({"params": params}, z_t, noise, labels, train=train, rngs=rngs)

  def predict(self, params, z, logsnr, labels, train=False, rng=None):
    """The instantaneous velocity u(z_t, t, t) at the VP z: the flow formulation's output."""
    t = diff.flow_time(logsnr)
    z_t = self.formulation.network_input(z, logsnr)
    return self.average_velocity(params, z_t, t, t, labels, train, rng)

  def loss(self, params, x, labels, rng, dropout_rng):
    f = self.config.meanflow
    u_fn = lambda z, r, t: self.average_velocity(params, z, r, t, labels, True, dropout_rng)
    return mf.meanflow_loss(u_fn, x, rng, mean=f.time_mean, std=f.time_std, ratio=f.ratio,
                            p=f.adaptive_p, c=f.adaptive_c)

  # --- sampling --------------------------------------------------------------------------
  def guided_velocity(self, params, labels, guidance):
    """(z_t, r, t) -> u, guided when the model is conditional: (1 + w) u_c - w u_null."""
    def u_fn(z, r, t):
      if not self.conditional:
        return self.average_velocity(params, z, r, t, None)
      both = self.average_velocity(params, jnp.concatenate([z, z]), jnp.concatenate([r, r]),
                                   jnp.concatenate([t, t]),
                                   jnp.concatenate([labels, self.null_labels(len(labels))]))
      return (1.0 + guidance) * both[:len(z)] - guidance * both[len(z):]
    return u_fn

  def sample_fn(self, sampler, steps, eta):
    if sampler != "meanflow":
      return super().sample_fn(sampler, steps, eta)
    key = (sampler, steps, eta)
    if key not in self._samplers:
      def run(params, noise, labels, rng, guidance):
        del rng  # deterministic given the noise
        return mf.sample(self.guided_velocity(params, labels, guidance), noise, steps,
                         self.encoder.clip)
      self._samplers[key] = xla.jit(run)
    return self._samplers[key]

  def about_samples(self):
    about = super().about_samples()
    if self.config.eval.sampler == "meanflow":
      about.update(sampler=about["sampler"].replace("meanflow", "meanflow (average velocity, "
                                                    "uniform steps in t)"))
      for k in ("eta", "schedule"):
        about.pop(k, None)
    return about
