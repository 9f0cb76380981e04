"""Convolutional VAE on dynamically binarized MNIST.

  python launch.py --experiment=vae_mnist_conv
  python launch.py --experiment=vae_mnist_conv:fashion   # Fashion-MNIST, gray levels in [0, 1]

Encoder: two stages of (3x3 stride-2 conv, 3x3 conv), 16 then 32 channels, ReLU,
dense heads to a 50-d Gaussian. Decoder: the mirror, with 4x4 stride-2 transposed
convolutions. Bernoulli likelihood, ELBO, Adam with cosine decay, 5,000 steps of
batch 100. A convolutional decoder costs ~40x the MLP's per sample on a CPU, so the
final evaluation uses IWAE k=100 (not 5000) on the full test set: an upper bound a
little above the k=5000 one.

Expected: test NLL 93.11 nats (IWAE, k = 100); 6 + 43 min.
"""
from experiments import vae_mnist
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("fashion", "runlocal"), "vae_mnist_conv")
  c = configs.vae_config()
  c.model.name = "conv_vae"
  c.model.channels = 16             # channels of the first stage (doubling per stage)
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
  if "fashion" in variants:
    configs.on_dataset(c, "fashion_mnist")
    c.data.preprocess = "unit"
  if "runlocal" in variants:
    vae_mnist.runlocal(c)
    c.model.channels = 8
    c.eval.iwae_k = 4
    c.eval.iwae_chunk = 2
  return c
