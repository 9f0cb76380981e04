"""Flow matching on CIFAR-10, for a GPU or TPU: ddpm_cifar10's 35.7M-parameter U-Net and
schedule of training under the flow formulation (velocity on (1 - t) x + t eps, SD3's
logit-normal t, the unweighted velocity MSE), sampled with Euler steps uniform in t.

  python launch.py --experiment=flow_cifar10
  python launch.py --experiment=flow_cifar10:runlocal --mock_data=64   # checks the code here

Rectified flow (Liu et al. 2022) reports CIFAR-10 FID 2.58 with its own network and an
adaptive solver (127 NFE); this recipe is ddpm_cifar10's network, so the comparison with
ddpm_cifar10 is the formulation's. The final evaluation: Inception FID of 10,000 samples
with 100 Euler steps, and the test bound in bits/dim. CIFAR-10 is not on this machine's
disk: the runlocal variant runs on --mock_data.

Expected: for a GPU or TPU: not measured here.
"""
from experiments import ddpm_cifar10
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "flow_cifar10")
  c = ddpm_cifar10.get_config(",".join(sorted(variants)))
  configs.flow_matching(c)
  if "runlocal" in variants:  # one resolution, no attention: the tests' compile time
    c.model.channel_mults, c.model.attention_resolutions = (1,), ()
  return c
