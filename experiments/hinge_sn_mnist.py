"""Hinge loss with a spectrally normalized discriminator (Miyato et al. 2018) on MNIST.

  python launch.py --experiment=hinge_sn_mnist

Expected: not measured yet.
"""
from experiments import gan_mnist
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "hinge_sn_mnist")
  c = gan_mnist.unconditional()
  c.gan.loss = "hinge"
  c.model.d_norm = "spectral"
  c.optim.b1 = c.d_optim.b1 = 0.0
  c.optim.b2 = c.d_optim.b2 = 0.9
  c.d_optim.lr = 4e-4                # TTUR-style faster D
  return gan_mnist.runlocal(c) if "runlocal" in variants else c
