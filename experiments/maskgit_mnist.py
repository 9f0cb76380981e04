"""MaskGIT on MNIST (Chang et al. 2022): a transformer prior over vqvae_mnist's codes.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=vqvae_mnist         # the autoencoder (5,000 steps)
  python launch.py --experiment=maskgit_mnist

The autoencoder is the run in latent.autoencoder_workdir at checkpoint
latent.autoencoder_step (both part of this run's identity: another autoencoder, or the
same workdir at another step, is refused; results.json's used_runs records its weights'
sha256). Each training image becomes its 7x7 codes (256 of them); a bidirectional
transformer (4 blocks of width 128, 0.87M parameters, a class token with a null class for
guidance) learns to predict masked codes under the cosine masking schedule. AdamW with
MaskGIT's betas (0.9, 0.96) and weight decay 0.045, learning rate 4e-4 (not tuned here)
after 500 warm-up steps, cosine decay; batch 64, 5,000 steps (a size that trains in
minutes on a 2-core CPU, as ddpm_mnist's U-Net does). Samples: 8 decoding steps, labels uniform
over the classes, no guidance; decoded by the autoencoder and scored as ddpm_mnist's are
(N = 2,000).

  runlocal: python launch.py --experiment=vqvae_mnist:runlocal --workdir=/tmp/vq
            python launch.py --experiment=maskgit_mnist:runlocal \\
                --experiment.latent.autoencoder_workdir=/tmp/vq

Expected: FID 43.2 (N = 2,000); 18 + 3 min.
"""
from experiments import vqvae_mnist
from genimg_jax import configs

VARIANTS = ("runlocal",)


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "maskgit_mnist")
  c = configs.maskgit_config()
  c.latent.autoencoder_step = vqvae_mnist.get_config().train.steps
  if "runlocal" in variants:
    c.latent.autoencoder_workdir = "workdirs/vqvae_mnist_runlocal"
    c.latent.autoencoder_step = vqvae_mnist.get_config("runlocal").train.steps
    c.model.dim = 32
    c.model.depth = 1
    c.model.num_heads = 2
    c.eval.sample_steps = 4
    c.optim.warmup_steps = 2
    c.train.batch_size = 32
    c.train.steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.eval.grid_size = 2
    c.metrics.num_samples = 200
    c.metrics.inception_num_samples = 0
    c.metrics.kid_subsets = 10
    c.metrics.kid_subset_size = 100
  return c
