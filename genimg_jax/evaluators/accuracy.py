"""The "accuracy" evaluator: a classifier's test-set accuracy and mean cross-entropy.

Needs task.logits(params, images) -> [N, K] and task.eval_params(state).
"""
import jax.numpy as jnp
import optax

from genimg_jax import xla
from genimg_jax.evaluators import common


class Accuracy:
  type = "accuracy"
  needs = ("eval_params", "logits")

  def __init__(self, config, task):
    self.config, self.task = config, task
    self._step = xla.jit(self.accuracy_step)

  def accuracy_step(self, params, batch):
    """Masked sums over one eval batch: correct predictions, cross-entropy, examples."""
    logits = self.task.logits(params, batch["image"])
    correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]) * batch["mask"]
    return {"correct": correct.sum(), "loss": loss.sum(), "count": batch["mask"].sum()}

  def __call__(self, state, mesh, rng, final):
    del rng, final
    params = self.task.eval_params(state)
    s = common.test_set_sums(self.config, mesh, lambda b: self._step(params, b))
    return {"accuracy": s["correct"] / s["count"], "loss": s["loss"] / s["count"],
            "num_examples": int(s["count"])}, {}
