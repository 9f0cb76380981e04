"""The "reconstruction" evaluator: how well an autoencoder reconstructs the test set.

* PSNR and SSIM (dm-pix's conventions: data range 1, 11x11 Gaussian window, sigma 1.5,
  "valid" filtering) of each reconstruction against the test image's gray levels in
  [0, 1] (for binarized data: the image before binarization), averaged over the split;
* a grid ("reconstructions") of the first eval batch: alternating rows of inputs and their
  reconstructions.

Needs task.reconstruct(params, images) -> (inputs, reconstructions), both in [0, 1], and
task.eval_params(state).
"""
import dm_pix as pix
import jax.numpy as jnp
import numpy as np

from genimg_jax import images, parallel, xla
from genimg_jax.evaluators import common


def reconstruction_quality(recon, target):
  """(PSNR, SSIM) per image of reconstructions against targets, both [B, H, W, C] in [0, 1]."""
  recon, target = jnp.clip(recon, 0.0, 1.0), jnp.clip(target, 0.0, 1.0)
  return pix.psnr(recon, target), pix.ssim(recon, target)


def recon_grid(x, xr, ncols):
  """Alternating rows of originals and their reconstructions (uint8 grid)."""
  n = (len(x) // ncols // 2) * ncols
  rows = []
  for r in range(0, n, ncols):
    rows += [x[r:r + ncols], xr[r:r + ncols]]
  return images.make_grid(images.to_uint8(np.concatenate(rows)), ncols)


class Reconstruction:
  type = "reconstruction"
  needs = ("eval_params", "reconstruct")

  def __init__(self, config, task):
    self.config, self.task = config, task
    self._step = xla.jit(self.reconstruction_step)

  def reconstruction_step(self, params, batch):
    """Masked sums over one eval batch of the reconstructions' PSNR and SSIM."""
    _, xr = self.task.reconstruct(params, batch["image"])
    psnr, ssim = reconstruction_quality(xr, batch["original"])
    mask = batch["mask"]
    return {"psnr": jnp.sum(psnr * mask), "ssim": jnp.sum(ssim * mask), "count": jnp.sum(mask)}

  def __call__(self, state, mesh, rng, final):
    del rng, final  # deterministic
    params = self.task.eval_params(state)
    first = []
    s = common.test_set_sums(self.config, mesh, lambda b: self._step(params, b),
                             originals=True, first=first)
    n, g = s["count"], self.config.eval.grid_size
    x, xr = parallel.fetch(xla.jit(self.task.reconstruct, once=True)(params, first[0]["image"]))
    return ({"psnr": s["psnr"] / n, "ssim": s["ssim"] / n},
            {"reconstructions": recon_grid(x[:g * g], xr[:g * g], g)})
