"""MeanFlow on MNIST (Geng et al. 2025): a one-step generator trained from scratch on
ddpm_mnist's U-Net, evaluated at 1, 2 and 4 network evaluations.

  python launch.py --experiment=classifier_mnist      # once: the feature network of FD/IS
  python launch.py --experiment=meanflow_mnist
  python launch.py --experiment=meanflow_mnist --experiment.eval.sample_steps=2 \
      --evaluate=steps2                               # evaluate again at 2 steps
  python launch.py --experiment=meanflow_mnist --experiment.eval.sample_steps=4 \
      --evaluate=steps4                               # and at 4
  python launch.py --experiment=meanflow_mnist --experiment.eval.sampler=euler \
      --experiment.eval.sample_steps=50 --evaluate=euler50

Recipe: ddpm_mnist's U-Net (620k parameters, here with the two time embeddings (t, t - r)
of tasks/meanflow.py), Adam 2e-3 with warm-up and cosine decay, batch 64, EMA 0.999,
4,500 steps (sized for about 40 minutes of training here: a step also runs the jax.jvp
through the network), evaluated as ddpm_mnist:long (the published FID protocol: 10,000
samples against the 10,000 test images; the test bound in bits/dim; every 1,000 steps the
sample metrics of 500 samples, the FID-against-steps curve), with the paper's CIFAR-10
settings of MeanFlow: 75% of the (r, t) draws with r != t, logit-normal(-2, 2) times,
adaptive loss weight p = 0.75 (c = 1e-3); sampled in one network evaluation
(eval.sampler "meanflow", eval.sample_steps 1). At r = t the network is a flow model, so
`--experiment.eval.sampler=euler` samples it as flow_mnist would. The 4,500 steps are far
from converged (docs/results.md: FID and classifier FD against steps).
Variants: `dit` (flow_mnist's DiT), `fashion`, `runlocal`.

Expected: FID 253.7 at 1 step (N = 10,000); 37 + 16 min.
"""
from experiments import ddpm_mnist, flow_mnist
from genimg_jax import configs

VARIANTS = ("dit", "fashion", "runlocal")
STEPS = 4500  # training steps (not runlocal)


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "meanflow_mnist")
  runlocal = "runlocal" in variants
  base = sorted(variants - {"dit"}) + ([] if runlocal else ["long"])
  c = configs.meanflow(ddpm_mnist.get_config(",".join(base)))
  if not runlocal:
    c.train.steps = STEPS
    c.train.eval_every = 1000
  c.meanflow.ratio = 0.75
  c.meanflow.time_mean, c.meanflow.time_std = -2.0, 2.0
  c.meanflow.adaptive_p = 0.75
  c.eval.sample_steps = 1
  if "dit" in variants:
    flow_mnist.use_dit(c, runlocal)
  return c
