"""DCGAN on MNIST with the non-saturating loss: class-conditional by default.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=gan_mnist
  python launch.py --experiment=gan_mnist:unconditional          # the same GAN without labels
  python launch.py --experiment=gan_mnist:fashion                # on Fashion-MNIST (needs
  python launch.py --experiment=gan_mnist:unconditional,fashion  #  classifier_mnist:fashion)
  python launch.py --experiment=gan_mnist:unconditional,infogan  # Lucic et al.'s architecture
  python launch.py --experiment=gan_mnist:unconditional,infogan,long  # trained ~an hour here

G: [z(64), label embedding(64)] -> Dense to 7x7x128 -> BN-ReLU -> 4x4 stride-2
transposed conv to 14x14x64 -> BN-ReLU -> transposed conv to 28x28x1 -> tanh.
D: 4x4 stride-2 convs (32, 64 channels), LeakyReLU(0.2), linear output plus the
projection term <embed(label), features> (Miyato & Koyama 2018). Batch 64, 14,000 steps
(~15 epochs), Adam(2e-4, b1=0.5) for both, EMA of G (0.999) for samples and metrics.
Final metrics: Inception-v3 FID, KID, precision and recall on 10,000 samples against the
10,000 test images (the published protocol), and FD/KID/precision/recall/IS under the
project's classifier on 10,000 samples (labels uniform); every 2,000 steps the same on
1,000 samples (the metrics against training steps).

Conditional by default because it reaches a classifier IS near that of real test images
in this budget, which the unconditional one does not.

`infogan`: the architecture of Lucic et al. 2018 ("Are GANs Created Equal?") on MNIST,
InfoGAN's: a fully connected layer of 1024 units in G (z -> FC-BN-ReLU -> the seed) and
in D (after its convolutions, 64 and 128 channels with BatchNorm), with this recipe's
loss, optimizers and EMA; about four times the FLOPs of a step, so 6,500 steps (~7
epochs). Unconditional, it reaches a lower FID in those steps than the default reaches in
30,000 (docs/results.md).

`long`: the same recipe trained longer, evaluated every 4,000 steps: 30,000 steps, or
12,000 with `infogan` (about an hour of training on the 2-core reference machine). The
learning rate is constant, so a long run's first steps compute what the default run does.

Expected: FID 8.09 (N = 10,000); 10 + 24 min.
"""
from genimg_jax import configs

VARIANTS = ("unconditional", "fashion", "infogan", "long", "runlocal")


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "gan_mnist")
  c = unconditional()
  if "unconditional" not in variants:
    c.model.num_classes = 10         # label-conditional G, projection D
  if "fashion" in variants:
    configs.on_dataset(c, "fashion_mnist")
  if "infogan" in variants:
    infogan(c)
  if "long" in variants:
    c.train.steps = 12_000 if "infogan" in variants else 30_000
    c.train.eval_every = 4000
  return runlocal(c) if "runlocal" in variants else c


def unconditional():
  """The unconditional DCGAN recipe; hinge_sn_mnist, wgan_gp_mnist and gan_mnist_study build on it."""
  c = configs.gan_config()
  c.model.name = "dcgan"
  c.model.channels = 32
  c.model.latent_dim = 64
  c.model.d_norm = "none"
  c.gan.loss = "non_saturating"
  c.gan.penalty = "none"
  c.train.batch_size = 64
  c.train.steps = 14_000             # ~15 epochs
  c.train.log_every = 250
  c.train.checkpoint_every = 1000
  c.train.eval_every = 2000          # sample grid and metrics of 1,000 samples
  c.metrics.periodic_num_samples = 1000
  return c


def infogan(c):
  """Lucic et al.'s (InfoGAN's) MNIST networks in place of the default DCGAN's."""
  c.model.fc_units = 1024
  c.model.d_channels = 64            # D: 64, 128 channels
  c.model.d_norm = "batch"
  c.train.steps = 6500               # a step costs about four of the default's
  return c


def runlocal(c):
  """The tiny variant every GAN experiment's tests use."""
  c.model.channels = 8
  c.train.steps = 20
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.eval_every = 0
  c.metrics.periodic_num_samples = 0
  c.metrics.num_samples = 200
  c.metrics.inception_num_samples = 0   # Inception is tested on its own (reference.npz)
  c.metrics.inception_weights = ""
  c.metrics.kid_subsets = 10
  c.metrics.kid_subset_size = 100
  return c
