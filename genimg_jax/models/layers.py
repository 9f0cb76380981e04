"""Small building blocks shared by the models."""
import flax.linen as nn

ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
    "softplus": nn.softplus,
    "swish": nn.swish,
}


def get_activation(name):
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]
