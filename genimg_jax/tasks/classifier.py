"""The classifier task: cross-entropy training and test accuracy, in the same loop.

A trained classifier (experiments/classifier_mnist.py, on MNIST or Fashion-MNIST) is the
feature network of the cheap, domain-specific Frechet distance and of the classifier
Inception Score: the sample-quality evaluator restores it from its workdir
(genimg_jax/runs.py) and takes `feature_network(restored)`.

What it exposes to the evaluators (genimg_jax/evaluators/): eval_params(state) and
logits(params, images) (the "accuracy" evaluator).
"""
import jax
import jax.numpy as jnp
import optax

from genimg_jax import data, optim, state as state_lib
from genimg_jax.metrics import FeatureNetwork
from genimg_jax.models.classifier import CNNClassifier


class ClassifierTask:

  def __init__(self, config):
    self.config = config
    builder = data.get_builder(config)
    self.image_shape = tuple(builder.info.features["image"].shape)
    self.num_classes = builder.info.features["label"].num_classes
    self.model = CNNClassifier(self.num_classes, config.model.features)
    self.tx = optim.build_optimizer(config.optim, config.train.steps)

  def init_state(self, rng):
    params = self.model.init(rng, jnp.zeros((1, *self.image_shape)))
    return state_lib.create(params, self.tx.init(params))

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

  # --- what the evaluators use ------------------------------------------------------
  def eval_params(self, state):
    return state.params

  def logits(self, params, x):
    """Class logits [N, K] of images in [-1, 1]."""
    return self.model.apply(params, x)[0]

  def feature_network(self, restored):
    """This classifier, restored from its workdir (a runs.Restored), as the FeatureNetwork
    of the classifier metrics: its penultimate layer as features, its softmax as class
    probabilities."""
    cfg = restored.config
    on = {"dataset": cfg.data.name, "image_shape": list(self.image_shape)}
    protocol = {"network": f"genimg_jax CNNClassifier ({cfg.experiment or 'classifier'})",
                "weights": str(restored.workdir), "weights_step": restored.step,
                "weights_sha256": restored.params_sha256, "trained_on": on["dataset"],
                "features": f"penultimate dense layer ({cfg.model.features})",
                "input": "images in [-1, 1] at dataset resolution, no resizing",
                "dtype": "float32"}

    def apply(params, x):
      logits, feats = self.model.apply(params, x)
      return feats, jax.nn.softmax(logits)

    return FeatureNetwork("classifier", apply, restored.state.params, protocol, trained_on=on)
