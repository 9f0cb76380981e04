"""A small CNN classifier on MNIST: the feature network of the cheap MNIST FD and IS.

  python launch.py --experiment=classifier_mnist

The GAN experiments read it from workdirs/classifier_mnist (metrics.classifier_workdir).
Inputs are scaled to [-1, 1], the range of GAN samples.
Measured (2026-11-21, 2 CPU cores, shared with a test run): test accuracy 99.25%,
6.9 min wall-clock.
"""
from genimg_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.task = "classifier"
  c.data.preprocess = "symmetric"
  c.model.name = "cnn"
  c.model.hidden = 256             # feature dimension
  c.train.batch_size = 128
  c.train.steps = 3000             # ~6.4 epochs
  c.train.log_every = 500
  c.train.checkpoint_every = 1000
  c.optim.lr = 1e-3
  c.optim.schedule = "cosine"
  c.eval.batch_size = 500
  if arg == "runlocal":
    c.train.steps = 60
    c.train.log_every = 20
    c.train.checkpoint_every = 60
    c.eval.num_examples = 1000
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of classifier_mnist; allowed: runlocal")
  return c
