"""DCGAN on MNIST with the non-saturating loss: the default GAN.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=gan_mnist

G: z(64) -> 7x7x64 -> BN-ReLU -> 4x4 stride-2 transposed conv to 14x14x32 -> BN-ReLU
-> transposed conv to 28x28x1 -> tanh. D: 4x4 stride-2 convs (32, 64), LeakyReLU(0.2),
linear. (Half the DCGAN paper's widths, to fit 30 minutes of 2 CPU cores.) Adam(2e-4, b1=0.5) for both; EMA of G (0.999) for samples and metrics.
Final metrics on 10,000 samples vs the test split: FD/KID/precision/recall/IS with
the project's classifier, and FID/KID/PR with Inception-v3 on 1,000 samples.
Measured (2026-11-21, 2 CPU cores): classifier IS 6.83, FD(classifier) 124.6 (floor
3.17), FID(Inception, N=1000) 61.3 (floor 11.5); 21.4 min training + 14.8 min metrics,
with D's convolutions as nn.Conv, before layers.StridedConv made the step ~3x faster.
(Short of the IS 9.0 goal: this budget and width are not enough; see README.)
"""
from genimg_jax import configs


def get_config(arg=None):
  c = configs.gan_config()
  c.model.name = "dcgan"
  c.model.hidden = 32
  c.model.latent_dim = 64
  c.model.d_norm = "none"
  c.gan.loss = "non_saturating"
  c.gan.penalty = "none"
  c.train.batch_size = 64
  c.train.steps = 5000               # ~5.3 epochs
  c.train.log_every = 250
  c.train.checkpoint_every = 1000
  c.train.eval_every = 1000          # sample grid to TensorBoard (metrics only at the end)
  return runlocal(c) if arg == "runlocal" else _check(arg, c)


def runlocal(c):
  """The tiny variant every GAN experiment's tests use."""
  c.model.hidden = 8
  c.train.steps = 20
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.eval_every = 0
  c.metrics.num_samples = 200
  c.metrics.inception_num_samples = 0   # Inception is tested on its own (reference.npz)
  c.metrics.inception_weights = ""
  c.metrics.kid_subsets = 10
  c.metrics.kid_subset_size = 100
  return c


def _check(arg, c):
  if arg:
    raise ValueError(f"Unknown variant {arg!r}; allowed: runlocal")
  return c
