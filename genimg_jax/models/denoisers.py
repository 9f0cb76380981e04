"""The diffusion task's networks, built by model.name: the one place a backbone is registered.

A denoiser is a Flax module called as `model(z_BHWC, noise_B, y_B, train=...)`: the noisy
image, the parameterization's noise conditioning (objectives.diffusion.noise_conditioning
of the log-SNR: the network never sees the objective's constants; [B, K] for K time
variables, e.g. MeanFlow's (t, t - r), each embedded on its own), the class labels
(None when unconditional; index model.num_classes is the null class of guidance), and
it returns a prediction of the image's shape. With a text encoder (models/text.py) y_B are
caption token ids [B, L] instead of labels. A new backbone is a module in models/ and
one entry in `build_denoiser`.
"""
from genimg_jax.models import layers
from genimg_jax.models.dit import DiT
from genimg_jax.models.unet import UNet

DENOISERS = ("unet", "dit")


def build_denoiser(model_config, image_shape, forward_differentiable=False, text=None):
  """The denoising network named by model_config.name, for images of image_shape (HWC).

  forward_differentiable: for a task that differentiates the network forward (jax.jvp):
  layers.conv_modules' forms that jax.jvp goes through. text: a text encoder module
  (models.text.build_text_encoder) for a text-conditioned denoiser."""
  m = model_config
  if m.name == "unet":
    modules = layers.conv_modules(m.conv_impl, forward_differentiable)
    return UNet(image_shape[-1], m.channels, tuple(m.channel_mults), m.num_res_blocks,
                tuple(m.attention_resolutions), m.dropout, m.num_classes, m.norm_groups,
                modules["conv"], modules["group_norm"], text,
                tuple(m.get("cross_attention_resolutions", ())))
  if m.name == "dit":
    return DiT(image_shape[-1], m.patch_size, m.hidden_size, m.depth, m.num_heads, m.mlp_ratio,
               m.num_classes, text)
  raise ValueError(f"Unknown model {m.name!r} for the diffusion task; allowed: {DENOISERS}")
