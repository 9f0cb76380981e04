"""VQ-VAE on MNIST (van den Oord et al. 2017): the tokenizer of a MaskGIT-style prior.

  python launch.py --experiment=classifier_mnist   # once: the feature network of rFID
  python launch.py --experiment=vqvae_mnist
  python launch.py --experiment=vqvae_mnist:fashion   # needs classifier_mnist:fashion

Model (models/autoencoder.py): a convolutional encoder of 2 stages (32, 64 channels) to
7x7 latents of 16 channels, each replaced by the nearest of 256 codes; the mirrored
decoder. The codebook learns by exponential moving averages (decay 0.99) with dead codes
restarted onto encoder outputs; commitment weight 0.25; squared error on [-1, 1];
Adam(1e-3), batch 128, 5,000 steps (~11 epochs). Evaluated on the 10,000 test images:
PSNR / SSIM, codebook usage and perplexity, and rFID (the classifier's FD of the 10,000
reconstructions against the test images).

Variants (every autoencoder experiment's): fashion (Fashion-MNIST and its classifier);
adversarial (VQGAN's term: a patch discriminator and the hinge loss at weight 0.1 from
half-way through training; not yet measured in a full run); runlocal (the tests' size).

Expected: test PSNR 26.58 dB, rFD 1.14 (classifier, N = 10,000); 20 + 1 min.
"""
from genimg_jax import configs

VARIANTS = ("fashion", "adversarial", "runlocal")


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "vqvae_mnist")
  c = configs.autoencoder_config()
  c.model.bottleneck = "vq"
  return finish(c, variants)


def finish(c, variants):
  """The variants every autoencoder experiment shares."""
  if "fashion" in variants:
    configs.on_dataset(c, "fashion_mnist")
  if "runlocal" in variants:
    runlocal(c)
  if "adversarial" in variants:
    c.objective.adversarial_weight = 0.1
    c.objective.adversarial_start = c.train.steps // 2
  return c


def runlocal(c):
  """The tiny variant the tests run (every autoencoder experiment's)."""
  c.model.channels = 8
  c.model.num_codes = 32
  c.model.code_dim = 4
  c.model.fsq_levels = (4, 3)
  c.train.batch_size = 32
  c.train.steps = 20
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.eval.num_examples = 200
  c.metrics.num_samples = 200
  c.metrics.kid_subsets = 10
  c.metrics.kid_subset_size = 100
  return c
