"""The classifier task: cross-entropy training and test accuracy, in the same loop.

A trained classifier (experiments/classifier_mnist.py, on MNIST or Fashion-MNIST) is the
feature network of the cheap, domain-specific Frechet distance and of the classifier
Inception Score: `feature_network(workdir)` loads it from its workdir.
"""
import hashlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genimg_jax import checkpoint, data, files, optim, parallel, state as state_lib, xla
from genimg_jax.metrics import FeatureNetwork, FeatureNetworkUnavailable
from genimg_jax.models.classifier import CNNClassifier


class ClassifierTask:

  def __init__(self, config):
    self.config = config
    builder = data.get_builder(config)
    self.image_shape = tuple(builder.info.features["image"].shape)
    self.num_classes = builder.info.features["label"].num_classes
    self.model = CNNClassifier(self.num_classes, config.model.features)
    self.tx = optim.build_optimizer(config.optim, config.train.steps)
    self._eval = None

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

  def eval_step(self, params, batch):
    logits, _ = self.model.apply(params, batch["image"])
    correct = (jnp.argmax(logits, -1) == batch["label"]) * batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]) * batch["mask"]
    return {"correct": correct.sum(), "loss": loss.sum(), "count": batch["mask"].sum()}

  def evaluate(self, state, mesh, rng, final):
    del rng, final
    if self._eval is None:
      self._eval = xla.jit(self.eval_step)
    sums = None
    for local in data.eval_batches(self.config, num_examples_limit=self.config.eval.num_examples):
      s = self._eval(state.params, parallel.to_global(local, mesh))
      sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    sums = parallel.fetch(sums)
    return {"accuracy": sums["correct"] / sums["count"], "loss": sums["loss"] / sums["count"],
            "num_examples": int(sums["count"])}, {}


def _config_of(workdir):
  path = files.join(workdir, "config.json")
  if not path.exists():
    raise FeatureNetworkUnavailable(
        f"no trained classifier in {workdir!r} (run `python launch.py "
        f"--experiment=classifier_mnist` first, or set metrics.classifier_workdir)")
  return ml_collections.ConfigDict(files.read_json(path))


def trained_on(workdir):
  """{"dataset", "image_shape"} of the classifier in `workdir`, from its config.json alone
  (cheap: what the tasks check before training). Raises FeatureNetworkUnavailable."""
  cfg = _config_of(workdir)
  return {"dataset": cfg.data.name, "image_shape": list(data.image_shape(cfg))}


def feature_network(workdir):
  """The trained classifier in `workdir` as a FeatureNetwork: its penultimate layer as
  features, its softmax as class probabilities. Raises FeatureNetworkUnavailable."""
  cfg = _config_of(workdir)
  task = ClassifierTask(cfg)
  ckpt = checkpoint.Checkpointer(workdir, 1)
  step = ckpt.latest_step()
  if step is None:
    ckpt.close()
    raise FeatureNetworkUnavailable(f"no classifier checkpoint in {workdir!r}")
  abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
  state, _ = ckpt.restore(step, abstract)
  ckpt.close()
  leaves = jax.tree.leaves(jax.device_get(state.params))
  sha256 = hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in leaves)).hexdigest()
  on = {"dataset": cfg.data.name, "image_shape": list(task.image_shape)}
  protocol = {"network": f"genimg_jax CNNClassifier ({cfg.experiment or 'classifier'})",
              "weights": str(workdir), "weights_step": int(step),
              "weights_sha256": sha256, "trained_on": on["dataset"],
              "features": f"penultimate dense layer ({cfg.model.features})",
              "input": "images in [-1, 1] at dataset resolution, no resizing",
              "dtype": "float32"}

  def apply(params, x):
    logits, feats = task.model.apply(params, x)
    return feats, jax.nn.softmax(logits)

  return FeatureNetwork("classifier", apply, state.params, protocol, trained_on=on)
