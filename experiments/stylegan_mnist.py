"""A StyleGAN2-style GAN on MNIST (Karras et al. 2020), unconditional.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=stylegan_mnist
  python launch.py --experiment=stylegan_mnist:fashion   # needs classifier_mnist:fashion
  python launch.py --experiment=stylegan_mnist --experiment.gan.truncation_psi=0.7 \\
      --evaluate=psi0.7                            # evaluate again with the truncation trick

Networks (models/stylegan.py): a mapping network of 2 equalized dense layers at learning
rate x 0.01 (the paper's CIFAR-10 setting) to w of 128; a synthesis network of 64
channels from a learned 4x4 constant to 32x32 (centre-cropped to 28x28) with modulated
and demodulated convolutions, noise inputs and skip ToRGBs; a residual discriminator of
64 channels with the minibatch standard deviation. The paper's small-dataset recipe:
the non-saturating loss, lazy R1 on real images (gamma 0.01, i.e. gan.penalty_weight =
gamma / 2, every 16 D steps), style mixing with probability 0.9, Adam(2.5e-3, b1 = 0,
b2 = 0.99) for both, EMA of G 0.995 (the paper's 10k-image half-life at batch 64),
batch 64, 10,000 steps. Path-length regularization is off, as in StyleGAN2-ADA's
CIFAR-10 configuration (`--experiment.gan.pl_weight=2`: the paper's weight, on every 4th
G step on half a batch). Evaluated as gan_mnist (FID on 10,000 samples against the
10,000 test images, the classifier metrics), without truncation (psi = 1).

Expected: not measured yet.
"""
from experiments import gan_mnist
from genimg_jax import configs

VARIANTS = ("fashion", "runlocal")


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "stylegan_mnist")
  c = gan_mnist.unconditional()
  c.model.name = "stylegan"
  c.model.channels = 64
  c.model.w_dim = 128
  c.model.mapping_layers = 2
  c.model.mapping_lr_mul = 0.01
  c.model.mixing_prob = 0.9
  c.gan.loss = "non_saturating"
  c.gan.penalty = "r1"
  c.gan.penalty_weight = 0.005       # gamma / 2, gamma = 0.01
  c.gan.penalty_every = 16
  c.gan.ema_decay = 0.995
  for o in (c.optim, c.d_optim):
    o.lr, o.b1, o.b2 = 2.5e-3, 0.0, 0.99
  c.train.steps = 10_000
  if "fashion" in variants:
    configs.on_dataset(c, "fashion_mnist")
  if "runlocal" in variants:
    gan_mnist.runlocal(c)
    c.model.channels, c.model.w_dim = 8, 16
    c.gan.penalty_every = 4
  return c
