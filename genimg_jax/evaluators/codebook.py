"""The "codebook" evaluator: how a discrete autoencoder uses its codes on the test set.

* usage: the fraction of the codebook's codes that some test image's latent takes;
* perplexity: exp of the entropy of the codes' histogram over every latent position of
  the test set (the codebook size when every code is equally used, 1 when one code is).

Needs task.indices(params, images) -> int codes, task.codebook_size and task.eval_params.
"""
import jax
import jax.numpy as jnp

from genimg_jax import xla
from genimg_jax.evaluators import common
from genimg_jax.models import bottlenecks


class Codebook:
  type = "codebook"
  needs = ("eval_params", "indices", "codebook_size")

  def __init__(self, config, task):
    if not task.codebook_size:
      raise ValueError(f"evals: the codebook evaluator needs a discrete bottleneck; "
                       f"model.bottleneck={config.model.bottleneck!r} has no codebook.")
    self.config, self.task = config, task
    self._step = xla.jit(self.histogram_step)

  def histogram_step(self, params, batch):
    """The codes' counts over one eval batch's real rows."""
    idx = self.task.indices(params, batch["image"])
    onehot = jax.nn.one_hot(idx.reshape(idx.shape[0], -1), self.task.codebook_size)
    return {"counts": jnp.einsum("bpk,b->k", onehot, batch["mask"])}

  def __call__(self, state, mesh, rng, final):
    del rng, final  # deterministic
    params = self.task.eval_params(state)
    counts = common.test_set_sums(self.config, mesh, lambda b: self._step(params, b))["counts"]
    return {k: float(v) for k, v in bottlenecks.histogram_statistics(counts).items()}, {}
