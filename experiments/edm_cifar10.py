"""EDM on CIFAR-10, for a GPU or TPU: ddpm_cifar10's 35.7M-parameter U-Net and schedule of
training under EDM's preconditioning (sigma_data 0.5), log-normal sigmas (P_mean -1.2,
P_std 1.2), its loss weight, and its Heun sampler at 18 steps (35 NFE).

  python launch.py --experiment=edm_cifar10
  python launch.py --experiment=edm_cifar10:runlocal --mock_data=64   # checks the code here

EDM reports CIFAR-10 FID 1.97 (unconditional, 35 NFE) with its DDPM++ network (56M
parameters, batch 512, 200M images); this recipe keeps ddpm_cifar10's network and budget,
so its comparison with ddpm_cifar10 is the formulation's. The final evaluation: Inception
FID of 10,000 samples, and the test bound in bits/dim. CIFAR-10 is not on this machine's
disk: the runlocal variant runs on --mock_data.

Expected: for a GPU or TPU: not measured here.
"""
from experiments import ddpm_cifar10
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "edm_cifar10")
  c = ddpm_cifar10.get_config(",".join(sorted(variants)))
  configs.edm(c, steps=2 if "runlocal" in variants else 18)
  if "runlocal" in variants:  # one resolution, no attention: the tests' compile time
    c.model.channel_mults, c.model.attention_resolutions = (1,), ()
  return c
