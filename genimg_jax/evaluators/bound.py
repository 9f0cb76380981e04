"""The "bound" evaluator: a task's bound on the test set's likelihood (VAE: the ELBO and
the IWAE bound as the NLL; diffusion: the variational bound in bits/dim).

The task gives, for a final or a periodic evaluation, `bound(final) -> (step, finish)`:
step(params, batch, rng) -> masked sums over one global eval batch (compiled by the
task), finish(sums over the split) -> metrics. Batch i draws from fold_in(rng, i).
"""
from genimg_jax.evaluators import common


class Bound:
  type = "bound"
  needs = ("eval_params", "bound")

  def __init__(self, config, task):
    self.config, self.task = config, task

  def __call__(self, state, mesh, rng, final):
    step, finish = self.task.bound(final)
    params = self.task.eval_params(state)
    sums = common.test_set_sums(self.config, mesh, lambda b, r: step(params, b, r), rng)
    return finish(sums), {}
