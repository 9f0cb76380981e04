"""A small CNN classifier, used as a cheap domain-specific feature network for FD on MNIST."""
import flax.linen as nn


class CNNClassifier(nn.Module):
  """conv32-pool-conv64-pool-dense(features)-dense(classes). Returns (logits, features)."""
  num_classes: int = 10
  features: int = 256

  @nn.compact
  def __call__(self, x_BHWC):
    h = nn.relu(nn.Conv(32, (3, 3))(x_BHWC))
    h = nn.max_pool(h, (2, 2), (2, 2))
    h = nn.relu(nn.Conv(64, (3, 3))(h))
    h = nn.max_pool(h, (2, 2), (2, 2))
    feats = nn.relu(nn.Dense(self.features)(h.reshape(h.shape[0], -1)))
    return nn.Dense(self.num_classes)(feats), feats
