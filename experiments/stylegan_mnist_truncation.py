"""The truncation trick: the finished stylegan_mnist run sampled at several psi.

  python launch.py --experiment=stylegan_mnist                     # once: the run it evaluates
  python launch.py --experiment=stylegan_mnist_truncation --sweep  # then the study

An evaluation study (`evaluates`): every trial samples the EMA generator of
workdirs/stylegan_mnist with w' = w_avg + psi (w - w_avg) (psi = 1: no truncation, psi
= 0: every sample the mean w's image). FID, precision and recall per psi: the trade-off
between fidelity (precision) and diversity (recall) that truncation controls.

Expected: not measured yet.
"""
from experiments import stylegan_mnist
from genimg_jax import configs, sweep

REPORT = {"metrics": ["test/inception/fd", "test/inception/precision", "test/inception/recall",
                      "test/classifier/fd"],
          "xy": ("test/inception/recall", "test/inception/precision"),
          "caption": "stylegan_mnist, sampled again from its EMA generator at each truncation "
                     "psi: Inception FID, precision and recall of 10,000 samples against the "
                     "10,000 test images."}


def evaluates(arg=None):
  """The workdir of the finished run this study evaluates (launch.py's default for it)."""
  return "workdirs/stylegan_mnist" + (",runlocal" if arg == "runlocal" else "")


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "stylegan_mnist_truncation")
  return stylegan_mnist.get_config(",".join(sorted(variants)))


def get_sweep(arg=None):
  psis = [1.0, 0.5] if arg == "runlocal" else [1.0, 0.9, 0.8, 0.7, 0.5, 0.3]
  return sweep.product(**{"gan.truncation_psi": psis})
