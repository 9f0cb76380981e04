"""Training state shared by every task, and the guarded parameter update."""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed as one pytree.

  params, opt_state: what the optimizer updates (for a GAN: dicts with "g" and "d").
  ema_params: an exponential moving average of the params that samples and metrics use
    (the GAN's generator, a diffusion model's network); {} when the task keeps none.
  batch_stats: Flax's "batch_stats" collections (BatchNorm statistics, spectral-norm
    vectors), updated by the forward pass rather than the optimizer; {} when none.
  nonfinite_step: -1 until a step produces a non-finite loss or gradient; that step
    (1-based) is recorded on device, so the loop can name it without a host sync per step.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = flax.struct.field(default_factory=dict)
  batch_stats: Any = flax.struct.field(default_factory=dict)
  nonfinite_step: jax.Array = flax.struct.field(default_factory=lambda: jnp.array(-1, jnp.int32))


def create(params, opt_state, ema_params=None, batch_stats=None):
  """A state at step 0. opt_state: the optimizer's init of params."""
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=opt_state,
                    ema_params={} if ema_params is None else ema_params,
                    batch_stats={} if batch_stats is None else batch_stats,
                    nonfinite_step=jnp.array(-1, jnp.int32))


def tree_norm(tree):
  return optax.tree.norm(tree)


def all_finite(*values):
  """Whether every element of every leaf of `values` is finite (a bool scalar).

  One flag per leaf, combined by counting the finite leaves with a dot product: every
  parameter's guarded update reads the result, and XLA:CPU copies a chain of scalar ands
  (what jnp.all of the stacked flags compiles to) into each of those hundreds of fusions,
  where a dot is computed once (train-step compile times: benchmarks/README.md).
  """
  flags = jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(values)])
  flags = flags.astype(jnp.float32)
  return flags @ flags == flags.shape[0]


def ema_update(ema, params, decay):
  """decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def guarded_apply(state, new_fields, finite):
  """Advances the step; keeps every other field as it was if the step was not finite.

  new_fields: dict of TrainState fields (params, opt_state, ema_params, batch_stats)
  after the update. A non-finite step leaves them as they were and records its index,
  so the state the loop checkpoints never holds a non-finite update.
  """
  kept = {k: jax.tree.map(lambda new, old: jnp.where(finite, new, old), v, getattr(state, k))
          for k, v in new_fields.items()}
  nonfinite_step = jnp.where((state.nonfinite_step < 0) & ~finite, state.step + 1,
                             state.nonfinite_step)
  return state.replace(step=state.step + 1, nonfinite_step=nonfinite_step, **kept)
