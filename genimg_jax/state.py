"""Training state shared by every task, and the guarded parameter update."""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed as one pytree.

  `params` and `opt_state` are pytrees (for a GAN: dicts with "g" and "d").
  `extra` holds task-specific arrays (EMA weights, BatchNorm statistics).
  `nonfinite_step` is -1 until a step produces a non-finite loss; that step is
  recorded on device so the loop can name it without a host sync every step.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  extra: Any = flax.struct.field(default_factory=dict)
  nonfinite_step: jax.Array = flax.struct.field(default_factory=lambda: jnp.array(-1, jnp.int32))


def create(params, tx, extra=None):
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                    extra={} if extra is None else extra,
                    nonfinite_step=jnp.array(-1, jnp.int32))


def tree_norm(tree):
  return optax.tree.norm(tree)


def all_finite(*values):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(values)]))


def guarded_apply(state, new_fields, finite):
  """Advances the step; keeps the old fields if the step was not finite.

  new_fields: dict of TrainState fields (params, opt_state, extra) after the
  update. A non-finite step leaves the state as it was and records its index.
  """
  kept = {k: jax.tree.map(lambda new, old: jnp.where(finite, new, old), v, getattr(state, k))
          for k, v in new_fields.items()}
  # Steps are named 1-based, as in the progress lines and checkpoint numbers.
  nonfinite_step = jnp.where((state.nonfinite_step < 0) & ~finite, state.step + 1,
                             state.nonfinite_step)
  return state.replace(step=state.step + 1, nonfinite_step=nonfinite_step, **kept)
