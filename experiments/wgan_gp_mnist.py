"""WGAN-GP (Gulrajani et al. 2017) on MNIST: Wasserstein loss, gradient penalty 10, 5 critic steps.

  python launch.py --experiment=wgan_gp_mnist

Expected: not measured yet.
"""
from experiments import gan_mnist
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "wgan_gp_mnist")
  c = gan_mnist.unconditional()
  c.gan.loss = "wasserstein"
  c.gan.penalty = "wgan_gp"
  c.gan.penalty_weight = 10.0
  c.gan.n_critic = 5
  c.model.d_norm = "layer"          # no BatchNorm in a penalized critic
  c.optim.lr = c.d_optim.lr = 1e-4
  c.optim.b1 = c.d_optim.b1 = 0.0
  c.optim.b2 = c.d_optim.b2 = 0.9
  return gan_mnist.runlocal(c) if "runlocal" in variants else c
