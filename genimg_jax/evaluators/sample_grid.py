"""The "sample_grid" evaluator: an eval.grid_size x eval.grid_size grid of samples
("samples": samples.png and the TensorBoard image), from the task's fixed noise so that
grids are comparable across steps.

Needs task.grid_samples(state, rng, n) -> uint8 [n, H, W, C].
"""
from genimg_jax import images


class SampleGrid:
  type = "sample_grid"
  needs = ("grid_samples",)

  def __init__(self, config, task):
    self.config, self.task = config, task

  def __call__(self, state, mesh, rng, final):
    del mesh, final  # a grid is cheap; sampled replicated
    g = self.config.eval.grid_size
    return {}, {"samples": images.make_grid(self.task.grid_samples(state, rng, g * g), g)}
