"""Class-conditional DCGAN on MNIST with the non-saturating loss: the default GAN.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=gan_mnist
  python launch.py --experiment=gan_mnist:unconditional   # the same GAN without labels

G: [z(64), label embedding(64)] -> Dense to 7x7x128 -> BN-ReLU -> 4x4 stride-2
transposed conv to 14x14x64 -> BN-ReLU -> transposed conv to 28x28x1 -> tanh.
D: 4x4 stride-2 convs (32, 64 channels), LeakyReLU(0.2), linear output plus the
projection term <embed(label), features> (Miyato & Koyama 2018). Batch 64,
10,000 steps, Adam(2e-4, b1=0.5) for both, EMA of G (0.999) for samples and metrics.
Final metrics on 10,000 samples (labels uniform) vs the test split: FD/KID/precision/
recall/IS with the project's classifier, and FID/KID/PR with Inception-v3 on 1,000.

Why conditional by default: the issue's target is an Inception-Score-style score of
9.0 from the project's classifier within 30 minutes of this 2-core machine. The score
rewards confident and class-balanced samples; the unconditional DCGAN did not reach it
in this budget (measured: IS 7.15 after the same 10,000 steps, FD(classifier) 97.7;
6.83 after 5,000), while the label-conditional one does. The unconditional recipe stays one
argument away (`:unconditional`) and is what hinge_sn_mnist, wgan_gp_mnist and
gan_mnist_study build on.

Measured (2026-11-22, 2 CPU cores, idle): classifier IS 9.76 (real test images: 9.78),
FD(classifier) 11.1 (floor 3.17), precision 0.71, recall 0.75; FID(Inception, N=1000)
19.2 (floor 11.5); 19.2 min training + 6.2 min metrics, 25.7 min wall.
"""
from genimg_jax import configs

VARIANTS = ("unconditional", "runlocal")


def get_config(arg=None):
  c = unconditional()
  if arg != "unconditional":
    c.model.num_classes = 10         # label-conditional G, projection D
  return runlocal(c) if arg == "runlocal" else _check(arg, c)


def unconditional():
  """The unconditional DCGAN recipe; hinge_sn_mnist, wgan_gp_mnist and gan_mnist_study build on it."""
  c = configs.gan_config()
  c.model.name = "dcgan"
  c.model.hidden = 32
  c.model.latent_dim = 64
  c.model.d_norm = "none"
  c.gan.loss = "non_saturating"
  c.gan.penalty = "none"
  c.train.batch_size = 64
  c.train.steps = 10_000             # ~10.7 epochs
  c.train.log_every = 250
  c.train.checkpoint_every = 1000
  c.train.eval_every = 1000          # sample grid to TensorBoard (metrics only at the end)
  return c


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


def _check(arg, c, allowed=VARIANTS):
  if arg and arg not in allowed:
    raise ValueError(f"Unknown variant {arg!r}; allowed: {', '.join(allowed)}")
  return c
