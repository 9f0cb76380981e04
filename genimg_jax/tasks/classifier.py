"""The classifier task: cross-entropy training and test accuracy, in the same loop.

The trained classifier (experiments/classifier_mnist.py) is the feature network of
the cheap MNIST Frechet distance and of the classifier Inception Score.
"""
import jax
import jax.numpy as jnp
import optax

from genimg_jax import data, optim, parallel, state as state_lib
from genimg_jax.models.classifier import CNNClassifier


class ClassifierTask:

  def __init__(self, config):
    self.config = config
    builder = data.get_builder(config)
    self.image_shape = tuple(builder.info.features["image"].shape)
    self.num_classes = builder.info.features["label"].num_classes
    self.model = CNNClassifier(self.num_classes, config.model.hidden)
    self.tx = optim.build_optimizer(config.optim, config.train.steps)
    self._eval = None

  def init_state(self, rng):
    params = self.model.init(rng, jnp.zeros((1, *self.image_shape)))
    return state_lib.create(params, self.tx)

  def loss_fn(self, params, batch):
    logits, _ = self.model.apply(params, batch["image"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, {"loss": loss, "accuracy": acc}

  def train_step(self, state, batch, rng):
    del rng  # deterministic given the batch
    (loss, parts), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = state_lib.all_finite(loss, grads)
    new = state_lib.guarded_apply(state, {"params": params, "opt_state": opt_state}, finite)
    return new, dict(parts, grad_norm=state_lib.tree_norm(grads))

  def eval_step(self, params, batch):
    logits, _ = self.model.apply(params, batch["image"])
    correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]) * batch["mask"]
    return {"correct": correct.sum(), "loss": loss.sum(), "count": batch["mask"].sum()}

  def evaluate(self, state, mesh, rng, final):
    del rng, final
    if self._eval is None:
      self._eval = jax.jit(self.eval_step, compiler_options=parallel.compiler_options())
    sums = None
    for local in data.eval_batches(self.config, num_examples_limit=self.config.eval.num_examples):
      s = self._eval(state.params, parallel.to_global(local, mesh))
      sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = parallel.fetch(sums)
    return {"accuracy": sums["correct"] / sums["count"], "loss": sums["loss"] / sums["count"],
            "num_examples": int(sums["count"])}, {}
