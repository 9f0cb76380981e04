"""Which formulation, at how many network evaluations: ddpm_mnist (v-prediction, DDIM),
flow_mnist (flow matching, Euler) and edm_mnist (EDM, Heun), each sampled again with its
own sampler at about 10, 25 and 50 NFE.

  python launch.py --experiment=ddpm_mnist       # once each: the three runs it evaluates
  python launch.py --experiment=flow_mnist
  python launch.py --experiment=edm_mnist
  python launch.py --experiment=diffusion_mnist_formulations --sweep   # then the study

An evaluation study across three runs (`evaluates` maps each trial to its run's workdir):
the three share the U-Net, the optimizer, the 7,000 steps and the data, and differ only
in the formulation (objectives/diffusion.py), its training noise levels and its loss, so
the table and the plot of classifier FD against NFE compare formulations at one budget.
Each trial scores 500 samples under the MNIST classifier; Heun's steps are (NFE + 1) / 2.

Expected: not measured yet.
"""
from experiments import ddpm_mnist, edm_mnist, flow_mnist
from genimg_jax import configs

FORMULATIONS = {"v": ddpm_mnist, "flow": flow_mnist, "edm": edm_mnist}
RUNS = {"v": "ddpm_mnist", "flow": "flow_mnist", "edm": "edm_mnist"}  # their default workdirs
NFES = (10, 25, 50)
REPORT = {"metrics": ["test/nfe", "test/classifier/fd", "test/classifier/is",
                      "test/classifier/precision", "test/classifier/recall"],
          "xy": ("test/nfe", "test/classifier/fd"), "lines": "diffusion.target",
          "caption": "ddpm_mnist (v), flow_mnist (flow) and edm_mnist (edm), each sampled "
                     "again from its EMA weights with its own sampler: classifier metrics of "
                     "500 samples against the test set, per network evaluations (NFE)."}
# the fields in which the three runs' configs differ
_FIELDS = ("diffusion.target", "diffusion.schedule", "diffusion.noise", "diffusion.noise_mean",
           "diffusion.noise_std", "diffusion.sigma_data", "diffusion.loss_weighting",
           "eval.sampler", "eval.rho")


def evaluates(arg=None):
  """Each trial's run: the workdir of the experiment of its formulation."""
  suffix = "_runlocal" if arg == "runlocal" else ""
  return lambda trial: f"workdirs/{RUNS[trial['diffusion.target']]}{suffix}"


def get_config(arg=None):
  configs.variants(arg, ("runlocal",), "diffusion_mnist_formulations")
  c = ddpm_mnist.get_config(arg)
  c.metrics.num_samples = 500
  c.metrics.inception_num_samples = 0  # the classifier's FD: cheap, and enough to rank
  return c


def _trial(module, arg, nfe):
  c = module.get_config(arg)
  trial = {f: c[f.split(".")[0]][f.split(".")[1]] for f in _FIELDS}
  trial["eval.sample_steps"] = (nfe + 1) // 2 if c.eval.sampler == "heun" else nfe
  return trial


def get_sweep(arg=None):
  nfes = (3,) if arg == "runlocal" else NFES
  return [_trial(module, arg, nfe) for module in FORMULATIONS.values() for nfe in nfes]
