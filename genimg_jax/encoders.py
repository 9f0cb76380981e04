"""What a diffusion-family task generates in: pixels today, an autoencoder's latents next.

The diffusion, meanflow and distill tasks train, sample and bound in the space of their
encoder. The encoder decides the assumptions that depend on that space, so that no task,
sampler or objective makes them on its own (edm2's training/encoders.py is the pattern):

  check(config)      refuses a config whose data does not fit (pixels: 8-bit images
                     scaled to [-1, 1], data.preprocess "symmetric")
  shape              the shape the network and the samplers work in, [H, W, C]
  clip               the range the samplers clip their x0 estimates to, or None
  to_images(x)       the sampler's outputs as the images the metrics see (host NHWC
                     float in [-1, 1]; pixels: quantized to uint8 first, as a PNG would be)
  has_bound          whether the test bound in bits/dim is defined (pixels: the discrete
                     8-bit decoder of objectives/diffusion.py's nll_bound)

`Pixels` is the identity. A latent encoder (an autoencoder restored from the workdir a run
names) adds encode/decode and answers the same questions for its latents; build_encoder is
where it plugs in.
"""
import numpy as np

from genimg_jax import data, images


class Pixels:
  """The identity encoder: the network sees 8-bit images in [-1, 1]."""
  clip = (-1.0, 1.0)
  has_bound = True

  def __init__(self, config):
    self.check(config)
    self.shape = tuple(data.image_shape(config))

  @staticmethod
  def check(config):
    if config.data.preprocess != "symmetric":
      raise ValueError("The diffusion task models 8-bit images in [-1, 1]: data.preprocess "
                       f"must be 'symmetric', got {config.data.preprocess!r}.")

  def encode(self, x):
    return x

  def to_images(self, x):
    """Sampler outputs [B, H, W, C] -> float32 in [-1, 1], quantized to uint8 levels."""
    return images.to_uint8(np.asarray(x), (-1.0, 1.0)).astype(np.float32) / 127.5 - 1.0


def build_encoder(config):
  """The encoder of a diffusion-family config: pixels (the only one so far)."""
  return Pixels(config)
