"""An FSQ autoencoder on MNIST (Mentzer et al. 2023: finite scalar quantization).

  python launch.py --experiment=fsq_mnist
  python launch.py --experiment=fsq_mnist:fashion

vqvae_mnist's encoder and decoder with the vector quantizer replaced by FSQ: 7x7 latents
of 4 channels, bounded and rounded to (8, 5, 5, 5) levels, an implied codebook of 1,000
codes with nothing to learn and no auxiliary loss. Training and evaluation as
vqvae_mnist.

Expected: test PSNR 27.87 dB, rFD 1.05 (classifier, N = 10,000); 20 + 1 min.
"""
from experiments import vqvae_mnist
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, vqvae_mnist.VARIANTS, "fsq_mnist")
  c = configs.autoencoder_config()
  c.model.bottleneck = "fsq"
  c.model.fsq_levels = (8, 5, 5, 5)
  return vqvae_mnist.finish(c, variants)
