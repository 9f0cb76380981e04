"""SNGAN (Miyato et al. 2018) on CIFAR-10: ResNet G and spectrally normalized ResNet D, hinge loss.

  python launch.py --experiment=sngan_cifar10          # paper settings, for a TPU/GPU

Paper settings: batch 64, n_critic 5, Adam(2e-4, b1=0, b2=0.9), 50k G steps with a
linearly decaying rate in the paper (cosine here), G 256 / D 128 channels.
FID with Inception-v3 on 10,000 samples against the test split.
`sngan_cifar10:runlocal` runs here on tfds.testing.mock_data (CIFAR-10 is not on
disk): random images with CIFAR-10's shapes, only to check that the code runs.

Expected: for a GPU or TPU: not measured here.
"""
from genimg_jax import configs


def get_config(arg=None):
  c = configs.gan_config()
  configs.on_dataset(c, "cifar10")
  c.data.shuffle_buffer = 50_000
  c.model.name = "resnet"
  c.model.channels = 256
  c.model.d_channels = 128
  c.model.latent_dim = 128
  c.model.d_norm = "spectral"
  c.gan.loss = "hinge"
  c.gan.n_critic = 5
  c.gan.ema_decay = 0.9999
  c.optim.lr = c.d_optim.lr = 2e-4
  c.optim.b1 = c.d_optim.b1 = 0.0
  c.optim.b2 = c.d_optim.b2 = 0.9
  c.optim.schedule = c.d_optim.schedule = "cosine"
  c.train.batch_size = 64
  c.train.steps = 50_000
  c.train.log_every = 500
  c.train.checkpoint_every = 5000
  c.train.eval_every = 5000
  c.metrics.classifier_workdir = ""   # the MNIST classifier does not apply
  c.metrics.inception_num_samples = 10_000
  if arg == "runlocal":
    c.model.channels = 16
    c.model.d_channels = 16
    c.gan.n_critic = 2
    c.train.batch_size = 8
    c.train.steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.eval_every = 0
    c.metrics.inception_weights = ""
    c.data.shuffle_buffer = 100
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of sngan_cifar10; allowed: runlocal")
  return c
