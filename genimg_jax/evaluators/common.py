"""What the test-set evaluators share: one pass over the eval split, summing a step."""
import jax
import jax.numpy as jnp

from genimg_jax import data, parallel


def test_set_sums(config, mesh, step, rng=None, originals=False, first=None):
  """Sums over the eval split (its first eval.num_examples examples when > 0) of
  step(batch) or, with rng, step(batch, fold_in(rng, i)) for the i-th global batch: a dict
  of masked sums, summed on the devices and fetched. originals: the batches also carry
  "original" (data.eval_batches). first: a list that receives the first global batch."""
  sums = None
  batches = data.eval_batches(config, num_examples_limit=config.eval.num_examples,
                              originals=originals)
  for i, local in enumerate(batches):
    batch = parallel.to_global(local, mesh)
    s = step(batch) if rng is None else step(batch, jax.random.fold_in(rng, i))
    sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    if first is not None and not first:
      first.append(batch)
  return parallel.fetch(sums)
