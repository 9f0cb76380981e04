"""Sample-quality metrics: statistics on features, feature networks, scores of samples.

  sample_quality  FD, KID, precision/recall, IS on feature arrays (numpy, float64)
  features        FeatureNetwork and Inception-v3 (the FID network)
  scores          a set of samples scored against real images, reference-feature cache
"""
from genimg_jax.metrics.features import (FeatureNetwork, FeatureNetworkUnavailable,
                                         inception_network)
from genimg_jax.metrics.scores import compare, real_images, reference_features, score

__all__ = ["FeatureNetwork", "FeatureNetworkUnavailable", "inception_network", "compare",
           "real_images", "reference_features", "score"]
