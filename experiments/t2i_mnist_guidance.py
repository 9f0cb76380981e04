"""Adherence against FID across guidance scales: the finished t2i_mnist run, sampled again.

  python launch.py --experiment=t2i_mnist                    # once: the run it evaluates
  python launch.py --experiment=t2i_mnist_guidance --sweep   # then the study

An evaluation study (`evaluates`): every trial samples the checkpoint of workdirs/t2i_mnist
with classifier-free guidance scale w on the caption (eps = (1 + w) eps(z, caption) -
w eps(z, empty caption)), DDIM at 50 steps: the classifier's FD of 1,000 samples
prompted by captions of random test images, and the adherence of 500 samples in the
training and the held-out templates (evaluators/adherence.py). The report plots the
prompted-class accuracy against the FD per scale: how much fidelity adherence costs.
Table and reading: docs/studies/README.md.

Expected: held-out class adherence 87.6% without guidance, 99.8% at guidance 2; lowest
classifier FD 20.7 at guidance 0.5 (N = 1,000); 26 min (5 trials).
"""
from experiments import t2i_mnist
from genimg_jax import configs, sweep

REPORT = {"metrics": ["test/classifier/fd", "test/adherence/class_accuracy",
                      "test/adherence/class_accuracy_heldout", "test/adherence/attribute_corr",
                      "test/adherence/attribute_corr_heldout"],
          "main": "test/adherence/class_accuracy",
          "xy": ("test/classifier/fd", "test/adherence/class_accuracy"),
          "caption": "t2i_mnist (transformer text encoder), sampled again from its EMA weights "
                     "with DDIM (50 steps) at each guidance scale: classifier FD of 1,000 "
                     "samples prompted by test captions; adherence of 500 samples per "
                     "template set (prompted-class accuracy, attribute correlation)."}


def evaluates(arg=None):
  """The workdir of the finished run this study evaluates (launch.py's default for it)."""
  return "workdirs/t2i_mnist" + ("_runlocal" if arg == "runlocal" else "")


def get_config(arg=None):
  configs.variants(arg, ("runlocal",), "t2i_mnist_guidance")
  c = t2i_mnist.get_config(arg)
  if arg != "runlocal":
    t2i_mnist.study_metrics(c)
  return c


def get_sweep(arg=None):
  scales = [0.0, 2.0] if arg == "runlocal" else [0.0, 0.5, 1.0, 2.0, 4.0]
  return sweep.product(**{"eval.guidance": scales})
