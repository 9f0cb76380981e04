"""A BigGAN-style GAN on MNIST (Brock et al. 2019), class-conditional.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=biggan_mnist
  python launch.py --experiment=biggan_mnist:fashion   # needs classifier_mnist:fashion
  python launch.py --experiment=biggan_mnist --experiment.gan.z_truncation=1.0 \\
      --evaluate=trunc1.0                          # evaluate again with truncated z

Networks (models/biggan.py): G from a 7x7 seed through two up-blocks of 64 channels with
conditional BatchNorm on [a shared class embedding of 32, the block's chunk of z]
(z of 96 in 3 chunks: the seed's and one per block), self-attention at 14x14; D SNGAN's
residual D of 64 channels with self-attention after its first block and the projection
term; spectral normalization in G and D. BigGAN's recipe: the hinge loss, 2 D steps per
G step, Adam(b1 = 0, b2 = 0.999) with G 1e-4 and D 4e-4 (the two-timescale rule of
SAGAN, Zhang et al. 2019), orthogonal regularization of G 1e-4, EMA of G 0.999; batch 64,
10,000 G steps. Evaluated as gan_mnist (FID on 10,000 samples against the 10,000 test
images, labels uniform, the classifier metrics), without truncation.

Expected: not measured yet.
"""
from experiments import gan_mnist
from genimg_jax import configs

VARIANTS = ("fashion", "runlocal")


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "biggan_mnist")
  c = gan_mnist.unconditional()
  c.model.name = "biggan"
  c.model.num_classes = 10
  c.model.channels = 64
  c.model.latent_dim = 96
  c.model.embed_dim = 32
  c.model.attention_resolution = 14
  c.model.d_norm = "spectral"
  c.gan.loss = "hinge"
  c.gan.n_critic = 2
  c.gan.g_ortho_weight = 1e-4
  c.gan.ema_decay = 0.999
  c.optim.lr, c.d_optim.lr = 1e-4, 4e-4
  for o in (c.optim, c.d_optim):
    o.b1, o.b2 = 0.0, 0.999
  c.train.steps = 10_000
  if "fashion" in variants:
    configs.on_dataset(c, "fashion_mnist")
  if "runlocal" in variants:
    gan_mnist.runlocal(c)
    c.model.channels, c.model.latent_dim, c.model.embed_dim = 8, 12, 8
  return c
