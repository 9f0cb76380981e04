"""Latent diffusion on MNIST (Rombach et al. 2022): the diffusion task over klae_mnist's
latents, decoded for every metric.

  python launch.py --experiment=classifier_mnist   # once: the feature network of FD/IS
  python launch.py --experiment=klae_mnist          # the autoencoder (5,000 steps)
  python launch.py --experiment=ldm_mnist

The autoencoder is the run in latent.autoencoder_workdir at checkpoint
latent.autoencoder_step (both part of this run's identity: another autoencoder, or the
same workdir at another step, is refused; results.json's used_runs records its weights'
sha256 and the latent scale). The network sees its 7x7x4 latents times 1 / their std
(encoders.py: Latent): ddpm_mnist's formulation (v-prediction, cosine schedule, DDIM 50
steps, EMA) with a U-Net of one resolution (7x7: 64 channels, 2 residual blocks). No
bound in bits/dim (it would need the decoder's likelihood). Samples are decoded, then
scored as ddpm_mnist's are.

  runlocal: python launch.py --experiment=klae_mnist:runlocal --workdir=/tmp/klae
            python launch.py --experiment=ldm_mnist:runlocal \\
                --experiment.latent.autoencoder_workdir=/tmp/klae

Expected: FID 15.07 (N = 2,000); 16 + 5 min.
"""
from experiments import ddpm_mnist, klae_mnist
from genimg_jax import configs

VARIANTS = ("runlocal",)


def get_config(arg=None):
  variants = configs.variants(arg, VARIANTS, "ldm_mnist")
  c = ddpm_mnist.get_config(",".join(sorted(variants)))
  c.model.channel_mults = (1,)   # 7x7 latents: one resolution
  c.latent.autoencoder_workdir = "workdirs/klae_mnist"
  c.latent.autoencoder_step = klae_mnist.get_config().train.steps
  if "runlocal" in variants:
    c.latent.autoencoder_workdir = "workdirs/klae_mnist_runlocal"
    c.latent.autoencoder_step = klae_mnist.get_config("runlocal").train.steps
    c.latent.scale_images = 200
  else:
    c.model.channels = 64
    c.model.num_res_blocks = 2
  return configs.with_evals(c, "sample_grid", "sample_quality")

