"""Flow matching / rectified flow on MNIST: ddpm_mnist's U-Net and training budget under
the straight path (1 - t) x + t eps, predicting its velocity eps - x.

  python launch.py --experiment=classifier_mnist      # once: the feature network of FD/IS
  python launch.py --experiment=flow_mnist
  python launch.py --experiment=flow_mnist:dit        # the DiT backbone instead of the U-Net
  python launch.py --experiment=flow_mnist:conditional  # class-conditional, guided sampling
  python launch.py --experiment=flow_mnist --experiment.eval.sampler=heun \\
      --experiment.eval.sample_steps=25 --evaluate=heun25   # evaluate again, other sampler

Recipe: ddpm_mnist's (the U-Net of 620k parameters, Adam 2e-3 with warm-up and cosine
decay, batch 64, 7,000 steps, EMA 0.999, the same evaluation protocol), with the
formulation "flow" (objectives/diffusion.py) on the "flow" schedule; training times t
logit-normal(0, 1) (SD3, Esser et al. 2024: ln(t / (1 - t)) ~ N(0, 1), diffusion.noise =
"log_normal"), the unweighted velocity MSE (loss "target_mse"); sampled with Euler steps
uniform in t (eval.rho = 1), 50 network evaluations, the flow's own sampler. Variants:
`dit` (models/dit.py: patch 2, width 96, 4 blocks, 4 heads; 723k parameters),
`conditional` (labels dropped 10% of the time, guidance 1), `fashion`, `runlocal`.

Expected: FID 19.2 (N = 2,000); 40 + 11 min.
"""
from experiments import ddpm_mnist
from genimg_jax import configs

VARIANTS = ("dit", "conditional", "fashion", "runlocal")


def use_dit(c, runlocal):
  """The DiT backbone for 28x28 images: 196 tokens of 2x2 patches."""
  c.model.name = "dit"
  c.model.patch_size = 2
  c.model.hidden_size = 96
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_ratio = 4.0
  c.optim.lr = 1e-3  # Adam's step for a transformer: half the U-Net's
  if runlocal:  # 49 tokens of 4x4 patches, one block: the tests' compile time
    c.model.patch_size = 4
    c.model.hidden_size = 32
    c.model.depth = 1
    c.model.num_heads = 2
  return c


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "flow_mnist")
  c = ddpm_mnist.get_config(",".join(sorted(variants - {"dit"})))
  configs.flow_matching(c)
  if "dit" in variants:
    use_dit(c, "runlocal" in variants)
  return c
