"""EDM on MNIST (Karras et al. 2022): ddpm_mnist's U-Net and training budget under EDM's
preconditioning, noise distribution, loss weight and Heun sampler.

  python launch.py --experiment=classifier_mnist      # once: the feature network of FD/IS
  python launch.py --experiment=edm_mnist
  python launch.py --experiment=edm_mnist:dit         # the DiT backbone instead of the U-Net
  python launch.py --experiment=edm_mnist:conditional
  python launch.py --experiment=edm_mnist --experiment.eval.churn=10 --evaluate=churn10

Recipe: ddpm_mnist's (the U-Net of 620k parameters, Adam 2e-3 with warm-up and cosine
decay, batch 64, 7,000 steps, EMA 0.999, the same evaluation protocol), with the
formulation "edm" (c_in, c_skip, c_out, c_noise = ln(sigma) / 4 with sigma_data = 0.5),
training sigmas log-normal with P_mean = -1.2, P_std = 1.2 (diffusion.noise =
"log_normal"), EDM's weight lambda(sigma) = 1 / c_out^2 (loss "target_mse"), sigma from
0.002 to 80 (schedule "edm"); sampled with EDM's deterministic Heun sampler, 18 steps on
the rho = 7 grid (35 network evaluations; eval.churn > 0 is its stochastic sampler).
Variants: `dit` (flow_mnist's DiT), `conditional`, `fashion`, `runlocal`.

Expected: FID 18.05 (N = 2,000); 37 + 4 min.
"""
from experiments import ddpm_mnist, flow_mnist
from genimg_jax import configs

VARIANTS = ("dit", "conditional", "fashion", "runlocal")


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "edm_mnist")
  c = ddpm_mnist.get_config(",".join(sorted(variants - {"dit"})))
  configs.edm(c, steps=3 if "runlocal" in variants else 18)
  if "dit" in variants:
    flow_mnist.use_dit(c, "runlocal" in variants)
  return c
