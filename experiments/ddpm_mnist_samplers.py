"""Which sampler at how many steps: the finished ddpm_mnist run, sampled again.

  python launch.py --experiment=ddpm_mnist                    # once: the run it evaluates
  python launch.py --experiment=ddpm_mnist_samplers --sweep   # then the study

An evaluation study (`evaluates`): every trial evaluates the checkpoint of workdirs/ddpm_mnist
with other sampler settings, no training: DDPM (ancestral), DDIM (eta = 0) and Heun (EDM's
second-order sampler, 2 x steps - 1 network evaluations) at several numbers of steps.
Each trial scores 500 samples under the MNIST classifier (FD, KID,
precision/recall, IS) and records its NFE; the report plots FD against NFE per sampler.

Expected: lowest classifier FD 52.0 (DDPM, 25 steps, N = 500).
"""
from experiments import ddpm_mnist
from genimg_jax import configs, sweep

REPORT = {"metrics": ["test/nfe", "test/classifier/fd", "test/classifier/is",
                      "test/classifier/precision", "test/classifier/recall"],
          "xy": ("test/nfe", "test/classifier/fd"), "lines": "eval.sampler",
          "caption": "ddpm_mnist (unconditional), sampled again from its EMA weights: "
                     "classifier metrics of 500 samples against the test set, per sampler "
                     "and number of network evaluations (NFE)."}


def evaluates(arg=None):
  """The workdir of the finished run this study evaluates (launch.py's default for it)."""
  return "workdirs/ddpm_mnist" + ("_runlocal" if arg == "runlocal" else "")


def get_config(arg=None):
  configs.variants(arg, ("runlocal",), "ddpm_mnist_samplers")
  c = ddpm_mnist.get_config(arg)
  c.metrics.num_samples = 500       # ~10 minutes of sampling for the 9 trials on 2 CPU cores
  c.metrics.inception_num_samples = 0  # the classifier's FD: cheap, and enough to rank
  return c


def get_sweep(arg=None):
  if arg == "runlocal":
    return sweep.product(**{"eval.sampler": ["ddim", "heun"], "eval.sample_steps": [2]})
  return (sweep.product(**{"eval.sampler": ["ddpm", "ddim"], "eval.sample_steps": [10, 25, 50]})
          + sweep.product(**{"eval.sampler": ["heun"], "eval.sample_steps": [5, 13, 25]}))
