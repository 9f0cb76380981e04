"""Classifier-free guidance: the finished ddpm_mnist:conditional run at several guidance scales.

  python launch.py --experiment=ddpm_mnist:conditional        # once: the run it evaluates
  python launch.py --experiment=ddpm_mnist_guidance --sweep   # then the study

An evaluation study (`evaluates`): every trial samples the checkpoint of
workdirs/ddpm_mnist_conditional with guidance scale w (eps = (1 + w) eps(z, y) -
w eps(z, null)), labels uniform over the classes, DDIM at 50 steps; the sampler is
compiled once for every scale. Classifier FD against IS per scale: the trade-off between
fidelity and diversity that guidance controls.

Expected: lowest classifier FD 15.7 at guidance 0.5 (N = 2,000); 39 min (6 trials).
"""
from experiments import ddpm_mnist
from genimg_jax import configs, sweep

REPORT = {"metrics": ["test/classifier/fd", "test/classifier/is",
                      "test/classifier/precision", "test/classifier/recall"],
          "xy": ("test/classifier/is", "test/classifier/fd"),
          "caption": "ddpm_mnist:conditional, sampled again from its EMA weights with DDIM "
                     "(50 steps) at each classifier-free guidance scale: classifier metrics "
                     "of 2,000 samples (labels uniform) against the test set."}


def evaluates(arg=None):
  """The workdir of the finished run this study evaluates (launch.py's default for it)."""
  return "workdirs/ddpm_mnist_conditional" + (",runlocal" if arg == "runlocal" else "")


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "ddpm_mnist_guidance")
  return ddpm_mnist.get_config(",".join(["conditional", *sorted(variants)]))


def get_sweep(arg=None):
  scales = [0.0, 1.0] if arg == "runlocal" else [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]
  return sweep.product(**{"eval.guidance": scales})
