"""Evaluators: what a run measures, declared in its config and shared by every task.

A config declares its evaluators in `config.evals`, one entry per evaluator:
`config.evals.<name>.type` is one of EVALUATORS below ("none": declared but not run, so
that a command line can switch one off: `--experiment.evals.bound.type=none`).
`from_config(config, task)` builds them once, before any compute, and refuses an
evaluator whose task lacks what it needs; the loop calls the result at every evaluation:
`evals(state, mesh, rng, final) -> (metrics, {name: uint8 grid})`.

Types, what each reports, and what it needs from the task (its capabilities):
  bound           the test-set bound (VAE: ELBO, IWAE NLL; diffusion: bits/dim)
                  task.eval_params(state), task.bound(final) -> (step, finish)
  reconstruction  test-set PSNR / SSIM of reconstructions and their grid
                  task.eval_params(state), task.reconstruct(params, images)
  sample_quality  FD / KID / precision, recall / IS under each feature network
                  task.samples(state, rng, n), task.about_samples()
  sample_grid     a grid of samples from fixed noise
                  task.grid_samples(state, rng, n)
  accuracy        test-set accuracy and cross-entropy of a classifier
                  task.eval_params(state), task.logits(params, images)
  codebook        test-set usage and perplexity of a discrete autoencoder's codes
                  task.eval_params(state), task.indices(params, images), task.codebook_size
  adherence       a text-conditioned model's prompted-class accuracy and prompted-vs-
                  measured attribute correlations (training and held-out phrasings)
                  task.prompt_samples(state, rng, n, heldout), task.attribute_levels, task.captioner

Settings: each evaluator reads the config section that already held them, so that every
recorded command still means what it meant: sample_quality reads `metrics.*`
(evaluators/sample_quality.py); the test-set evaluators read `eval.batch_size` and
`eval.num_examples`, the bound also its task's eval fields (eval.iwae_k,
eval.bound_time_samples), the grids `eval.grid_size`.

Keys: each evaluator draws from its own key of the evaluation key: fold_in(rng, crc32 of
its type), unless the task fixes it with `eval_keys(rng) -> {type: key}` (the keys under
which its recorded numbers were measured).
"""
import zlib

import jax

from genimg_jax.evaluators.accuracy import Accuracy
from genimg_jax.evaluators.adherence import Adherence
from genimg_jax.evaluators.bound import Bound
from genimg_jax.evaluators.codebook import Codebook
from genimg_jax.evaluators.reconstruction import Reconstruction
from genimg_jax.evaluators.sample_grid import SampleGrid
from genimg_jax.evaluators.sample_quality import SampleQuality

EVALUATORS = {"bound": Bound, "reconstruction": Reconstruction,
              "sample_quality": SampleQuality, "sample_grid": SampleGrid,
              "accuracy": Accuracy, "codebook": Codebook, "adherence": Adherence}


class Evaluators:
  """The evaluators of a run, {name: evaluator}, called together (see the module doc)."""

  def __init__(self, task, evaluators):
    self.task = task
    self.evaluators = evaluators

  def keys(self, rng):
    fixed = self.task.eval_keys(rng) if hasattr(self.task, "eval_keys") else {}
    return {name: fixed[e.type] if e.type in fixed
            else jax.random.fold_in(rng, zlib.crc32(e.type.encode()) & 0x7FFFFFFF)
            for name, e in self.evaluators.items()}

  def __call__(self, state, mesh, rng, final):
    """Every evaluator at this state: (metrics, {grid name: uint8 grid}). final: the run's
    last evaluation (the full protocol) rather than a periodic one."""
    metrics, grids = {}, {}
    for name, key in self.keys(rng).items():
      m, g = self.evaluators[name](state, mesh, key, final)
      for out, new, what in ((metrics, m, "metric"), (grids, g, "grid")):
        clash = set(out) & set(new)
        if clash:
          raise ValueError(f"Evaluator {name!r} reports the {what}(s) {sorted(clash)} that "
                           "another evaluator in config.evals already reported.")
        out.update(new)
    return metrics, grids


def from_config(config, task):
  """The evaluators of config.evals for this task. Raises ValueError (before any compute)
  for an unknown type, a task without what an evaluator needs, or an evaluator's own
  check (e.g. a feature network trained on other data than the run's)."""
  built = {}
  for name, spec in config.get("evals", {}).items():
    kind = spec.get("type", "")
    if kind == "none":
      continue
    if kind not in EVALUATORS:
      raise ValueError(f"Unknown evals.{name}.type {kind!r}; allowed: "
                       f"{sorted(EVALUATORS) + ['none']}")
    cls = EVALUATORS[kind]
    missing = [c for c in cls.needs if not hasattr(task, c)]
    if missing:
      raise ValueError(f"evals.{name}: the {kind} evaluator needs a task that has "
                       f"{', '.join(missing)}; the {config.task} task has not (set "
                       f"--experiment.evals.{name}.type=none, or remove it from the experiment).")
    built[name] = cls(config, task)
  return Evaluators(task, built)


__all__ = ["EVALUATORS", "Evaluators", "from_config"]
