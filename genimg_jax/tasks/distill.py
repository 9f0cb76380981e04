"""The progressive distillation task: one round of Salimans & Ho (2022) in the one loop
(objectives/distillation.py), from a finished diffusion run.

The teacher is the run in distill.teacher_workdir at its checkpoint distill.teacher_step,
restored through runs.restore (its EMA weights, when it has them); both fields are part of
this run's identity, so resuming with another teacher, or the same workdir at another
step, is refused like any changed field; the teacher's record (workdir, step, sha256 of
its weights) goes into results.json's used_runs, its workdir and step into every sample
metric's protocol. The student is the teacher's network (model, diffusion and data fields
must equal the teacher's: the task refuses a mismatch), initialised from the teacher's
weights, and trained so that one of its DDIM steps on the grid of distill.student_steps
uniform steps in t does what two of the teacher's do. It is sampled by DDIM (eta 0) at eval.sample_steps = distill.student_steps;
every evaluator of the diffusion task (bound, grid, sample metrics) applies unchanged.

Rounds (2N -> N -> N / 2 ...) are runs: the next round names this workdir as its teacher
(experiments/distill_mnist.py chains them from ddpm_mnist). Class-conditional teachers are
refused: distilling guidance into the student (Meng et al. 2023) is not implemented.
"""
import json

from genimg_jax import runs, state as state_lib
from genimg_jax.objectives import distillation
from genimg_jax.tasks import diffusion

# The teacher's fields the student must share: its network, formulation and data.
SHARED_WITH_TEACHER = ("model", "diffusion.target", "diffusion.schedule", "diffusion.sigma_data",
                       "data.name", "data.preprocess")


def _field(config, dotted):
  """The field's value as config.json holds it (tuples as lists)."""
  for part in dotted.split("."):
    config = config.get(part) if hasattr(config, "get") else None
  return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config))


class DistillTask(diffusion.DiffusionTask):
  """The diffusion task whose loss is one round of progressive distillation (module doc)."""

  def __init__(self, config):
    d = config.distill
    if d.student_steps < 1 or d.teacher_step < 1:
      raise ValueError("distill.student_steps and distill.teacher_step must be positive, got "
                       f"{d.student_steps} and {d.teacher_step}.")
    if config.eval.sampler != "ddim" or config.eval.eta != 0:
      raise ValueError("A progressively distilled student samples by deterministic DDIM: "
                       "eval.sampler must be 'ddim' and eval.eta 0, got "
                       f"{config.eval.sampler!r}, {config.eval.eta}.")
    if config.model.num_classes > 0:
      raise ValueError("The distill task distills unconditional teachers only (guidance "
                       "distillation is not implemented): model.num_classes must be 0.")
    teacher_config = runs.config_of_used("distill.teacher_workdir", d.teacher_workdir,
                                         ("diffusion", "distill"), "ddpm_mnist")
    differ = [f for f in SHARED_WITH_TEACHER if _field(config, f) != _field(teacher_config, f)]
    if differ:
      raise ValueError(f"The student must be its teacher's network on its data: {', '.join(differ)} "
                       f"differ from the run in {d.teacher_workdir!r}. Build the config from "
                       "the teacher's experiment.")
    super().__init__(config)
    self.teacher = runs.restore(d.teacher_workdir, d.teacher_step)
    self.teacher_params = self.teacher.task.sampling_params(self.teacher.state)

  def init_state(self, rng):
    """The student starts as the teacher (its weights, and its EMA)."""
    del rng
    params = self.teacher_params
    ema = params if self.config.diffusion.ema_decay > 0 else {}
    return state_lib.create(params, self.tx.init(params), ema_params=ema)

  def loss(self, params, x, labels, rng, dropout_rng):
    del labels  # unconditional (checked at build)
    to_x0_eps = self.formulation.to_x0_eps
    student = lambda z, logsnr: to_x0_eps(self.predict(params, z, logsnr, None, True, dropout_rng),
                                          z, logsnr)
    teacher = self.teacher.task.denoiser(self.teacher_params, None, 0.0)
    return distillation.distillation_loss(student, teacher, x, rng,
                                          student_steps=self.config.distill.student_steps,
                                          schedule=self.grid_schedule,
                                          clip=self.encoder.clip)

  def used_runs(self):
    """What results.json records of the teacher (and of a latent model's autoencoder)."""
    return dict(super().used_runs(), teacher=self.teacher.record())

  def about_samples(self):
    t = self.teacher
    return dict(super().about_samples(), teacher=f"{t.workdir} at step {t.step}, "
                f"{2 * self.config.distill.student_steps} DDIM steps distilled")
