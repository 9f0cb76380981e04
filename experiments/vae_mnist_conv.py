"""Convolutional VAE on dynamically binarized MNIST.

  python launch.py --experiment=vae_mnist_conv

Encoder: two stages of (3x3 stride-2 conv, 3x3 conv), 16 then 32 channels, ReLU,
dense heads to a 50-d Gaussian. Decoder: the mirror, with 4x4 stride-2 transposed
convolutions. Bernoulli likelihood, ELBO, Adam with cosine decay.
A convolutional decoder costs ~40x the MLP's per sample on a CPU, so the final
evaluation uses IWAE k=100 (not 5000) on the full test set: an upper bound a little
above the k=5000 one. See the README table for the measured result.
"""
from genimg_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.model.name = "conv_vae"
  c.model.hidden = 16               # channels of the first stage (doubling per stage)
  c.model.depth = 2
  c.model.latent_dim = 50
  c.model.activation = "relu"
  c.objective.likelihood = "bernoulli"
  c.data.preprocess = "binarize"
  c.train.batch_size = 100
  c.train.steps = 5_000
  c.train.log_every = 500
  c.train.checkpoint_every = 2_000
  c.optim.lr = 1e-3
  c.optim.schedule = "cosine"
  c.eval.batch_size = 100
  c.eval.iwae_k = 100
  c.eval.iwae_chunk = 50
  if arg == "runlocal":
    c.model.hidden = 8
    c.train.steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.eval.iwae_k = 4
    c.eval.iwae_chunk = 2
    c.eval.periodic_iwae_k = 2
    c.eval.num_examples = 200
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of vae_mnist_conv; allowed: runlocal")
  return c
