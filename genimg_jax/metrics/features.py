"""Feature networks for the sample-quality metrics, each with the protocol it defines.

A FeatureNetwork maps images in [-1, 1] (NHWC, the dataset's size) to features (for
FD, KID, precision and recall) and class probabilities (for IS, or None), in jitted
batches. Its `protocol` says exactly what is computed and goes next to every number;
`trained_on` names the data its weights were trained on, so that a metric is not computed
with a network that has never seen the samples' kind of image (None: a general-purpose
network, Inception-v3 on ImageNet, as FID defines it).

This module knows no tasks: the task that trains a feature network builds its
FeatureNetwork (tasks/classifier.py); Inception-v3 is built here from its weights file.
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from genimg_jax import files, xla


class FeatureNetworkUnavailable(RuntimeError):
  """The network's weights are missing; the metric is skipped with this message."""


@dataclasses.dataclass
class FeatureNetwork:
  """name; apply(params, images [-1, 1] NHWC) -> (features [N, D], probs [N, K] or None);
  params; protocol (a JSON-able dict); trained_on: {"dataset", "image_shape"} or None."""
  name: str
  apply: Callable
  params: Any
  protocol: dict
  trained_on: Optional[dict] = None

  def __post_init__(self):
    self._fn = xla.jit(self.apply)

  def __call__(self, images):
    return self._fn(self.params, images)


def inception_network(weights_path):
  """Inception-v3 (2015-12-05 graph) pool features: the FID of the literature.

  Protocol: images are quantized to uint8 (as if saved as PNG), grayscale tiled to 3
  channels, resized to 299x299 with bilinear interpolation (jax.image.resize, float32,
  from the uint8 values), then mapped x / 128 - 1.
  """
  from genimg_jax.models import inception
  if not weights_path or not files.path(weights_path).exists():
    raise FeatureNetworkUnavailable(
        f"Inception-v3 weights not found at {weights_path!r} (metrics.inception_weights); "
        "FID with Inception is skipped")
  variables, sha256 = inception.load_params(weights_path)
  model = inception.InceptionV3()
  protocol = {"network": "Inception-v3 2015-12-05 (FID graph), pool3 features (2048)",
              "weights": str(weights_path), "weights_sha256": sha256,
              "trained_on": "ImageNet (ILSVRC-2012)",
              "input": "uint8-quantized, gray tiled to RGB, bilinear resize to 299x299 "
                       "(jax.image.resize), x/128-1",
              "dtype": "float32"}
  return FeatureNetwork("inception", lambda v, x: (model.apply(v, inception_input(x)), None),
                        variables, protocol)


def inception_input(x):
  """[-1, 1] float NHWC -> Inception-v3's input (see inception_network)."""
  u8 = jnp.round(jnp.clip((x + 1.0) * 127.5, 0, 255))
  if u8.shape[-1] == 1:
    u8 = jnp.tile(u8, (1, 1, 1, 3))
  if u8.shape[1:3] != (299, 299):
    u8 = jax.image.resize(u8, (u8.shape[0], 299, 299, 3), "bilinear")
  return u8 / 128.0 - 1.0
