"""Feature networks for sample-quality metrics, each with the protocol it defines.

A feature network maps images in [-1, 1] (NHWC, the dataset's size) to features
(for FD, KID, precision/recall) and class probabilities (for IS), in jitted
batches. `protocol` says exactly what was computed, and goes next to every number.
"""
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genimg_jax import parallel


class FeatureNetworkUnavailable(RuntimeError):
  """The network's weights are missing; the metric is skipped with this message."""


class ClassifierFeatures:
  """The project's MNIST classifier (experiments/classifier_mnist.py), penultimate layer."""
  name = "classifier"

  def __init__(self, workdir):
    from genimg_jax import checkpoint, tasks
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
      raise FeatureNetworkUnavailable(
          f"no trained classifier in {workdir!r} (run `python launch.py "
          f"--experiment=classifier_mnist` first, or set metrics.classifier_workdir)")
    with open(cfg_path) as f:
      cfg = ml_collections.ConfigDict(json.load(f))
    task = tasks.build_task(cfg)
    ckpt = checkpoint.Checkpointer(workdir, 1)
    step = ckpt.latest_step()
    if step is None:
      raise FeatureNetworkUnavailable(f"no classifier checkpoint in {workdir!r}")
    abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    state, _ = ckpt.restore(step, abstract)
    ckpt.close()
    self.params = state.params
    self.model = task.model
    leaves = jax.tree.leaves(jax.device_get(self.params))
    self.sha256 = hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in leaves)).hexdigest()
    self.protocol = {"network": "genimg_jax CNNClassifier (classifier_mnist)",
                     "weights": os.path.abspath(workdir), "weights_step": int(step),
                     "weights_sha256": self.sha256, "features": "penultimate dense layer (256)",
                     "input": "images in [-1, 1] at dataset resolution, no resizing",
                     "dtype": "float32"}
    self._fn = jax.jit(lambda p, x: self._apply(p, x),
                       compiler_options=parallel.compiler_options())

  def _apply(self, params, x):
    logits, feats = self.model.apply(params, x)
    return feats, jax.nn.softmax(logits)

  def __call__(self, x):
    return self._fn(self.params, x)


class InceptionFeatures:
  """Inception-v3 (2015-12-05 graph) pool features: the FID of the literature.

  Protocol: images are quantized to uint8 (as if saved as PNG), grayscale tiled to 3
  channels, resized to 299x299 with bilinear interpolation (jax.image.resize, float32,
  from the uint8 values), then mapped x / 128 - 1.
  """
  name = "inception"

  def __init__(self, weights_path):
    from genimg_jax.models import inception
    if not weights_path or not os.path.exists(weights_path):
      raise FeatureNetworkUnavailable(
          f"Inception-v3 weights not found at {weights_path!r} (metrics.inception_weights); "
          "FID with Inception is skipped")
    self.variables, self.sha256 = inception.load_params(weights_path)
    self.model = inception.InceptionV3()
    self.protocol = {"network": "Inception-v3 2015-12-05 (FID graph), pool3 features (2048)",
                     "weights": os.path.abspath(weights_path), "weights_sha256": self.sha256,
                     "input": "uint8-quantized, gray tiled to RGB, bilinear resize to 299x299 "
                              "(jax.image.resize), x/128-1",
                     "dtype": "float32"}
    self._fn = jax.jit(self._apply, compiler_options=parallel.compiler_options())

  @staticmethod
  def preprocess(x):
    """[-1, 1] float NHWC -> Inception input (see class docstring)."""
    u8 = jnp.round(jnp.clip((x + 1.0) * 127.5, 0, 255))
    if u8.shape[-1] == 1:
      u8 = jnp.tile(u8, (1, 1, 1, 3))
    if u8.shape[1:3] != (299, 299):
      u8 = jax.image.resize(u8, (u8.shape[0], 299, 299, 3), "bilinear")
    return u8 / 128.0 - 1.0

  def _apply(self, variables, x):
    return self.model.apply(variables, self.preprocess(x)), None

  def __call__(self, x):
    return self._fn(self.variables, x)
