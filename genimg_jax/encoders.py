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

`Pixels` is the identity. `Latent` is a finished autoencoder run (tasks/autoencoder.py),
named by latent.autoencoder_workdir and latent.autoencoder_step: the task generates its
scaled latents and decodes them into images (latent diffusion, Rombach et al. 2022).
build_encoder picks one from the config. autoencoder_run restores the named autoencoder,
checked, for Latent and for any other model over its latents (tasks/maskgit.py's codes).
"""
import jax
import jax.numpy as jnp
import numpy as np

from genimg_jax import data, images, runs, xla


def uint8_levels(x):
  """Images [B, H, W, C] in [-1, 1] (clipped) -> float32 in [-1, 1] at uint8 levels, as a
  PNG of them would hold."""
  return images.to_uint8(np.asarray(x), (-1.0, 1.0)).astype(np.float32) / 127.5 - 1.0


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
    return uint8_levels(x)


class Latent:
  """The latents of a finished autoencoder run (see the module doc).

  The network sees latents(x) * scale, scale = 1 / the std of the latents of the first
  latent.scale_images training images (computed once at build time, recorded; as latent
  diffusion's scale factor, so that the diffusion sees unit-variance data whatever the
  autoencoder's range). Samples are decoded (latent / scale), clipped to [-1, 1] and
  quantized to uint8 levels as pixels are. The samplers do not clip latents, and the
  bound in bits/dim is not defined (it would need the decoder's likelihood).
  """
  clip = None
  has_bound = False

  def __init__(self, config):
    l = config.latent
    Pixels.check(config)
    self.restored = autoencoder_run(config, "klae_mnist")
    task = self.restored.task
    self.variables = task.eval_params(self.restored.state)
    H, W, C = data.image_shape(config)
    self.shape = tuple(jax.eval_shape(task.latents, self.variables,
                                      jnp.zeros((1, H, W, C))).shape[1:])
    latents = xla.jit(task.latents, once=True)
    z = [np.asarray(latents(self.variables, b["image"]))[b["mask"] > 0]
         for b in data.eval_batches(config, split=config.data.train_split,
                                    num_examples_limit=l.scale_images)]
    self.scale = float(1.0 / np.std(np.concatenate(z)))
    self._latents, self._decode = task.latents, xla.jit(task.decode)

  def encode(self, x):
    """Images in [-1, 1] -> scaled latents (traced into the train step)."""
    return self._latents(self.variables, x) * self.scale

  def to_images(self, z):
    """Sampled latents -> decoded images, float32 in [-1, 1] at uint8 levels."""
    x = np.asarray(self._decode(self.variables, jnp.asarray(z) / self.scale))
    return uint8_levels(x)

  def record(self):
    """What results.json records of the autoencoder: its weights and the scale."""
    return dict(self.restored.record(), scale=self.scale)


def autoencoder_run(config, example):
  """The finished autoencoder run (runs.Restored) that a latent model names in
  latent.autoencoder_workdir, at its checkpoint latent.autoencoder_step, checked to be an
  autoencoder trained on this run's data (`example`: the experiment that trains one, for
  the error) and on pixels in this run's data.preprocess range (it encodes this run's
  images). Raises runs.RunUnavailable or ValueError."""
  l = config.latent
  if l.autoencoder_step < 1:
    raise ValueError("latent.autoencoder_step must name the autoencoder's checkpoint (>= 1, "
                     f"e.g. its train.steps), got {l.autoencoder_step}.")
  return runs.restore_used("latent.autoencoder_workdir", l.autoencoder_workdir,
                          ("autoencoder",), example, config.data.name, l.autoencoder_step,
                          preprocess=config.data.preprocess)


def build_encoder(config):
  """The encoder of a diffusion-family config: Latent when latent.autoencoder_workdir
  names an autoencoder run, else Pixels."""
  if config.get("latent") and config.latent.autoencoder_workdir:
    return Latent(config)
  return Pixels(config)
