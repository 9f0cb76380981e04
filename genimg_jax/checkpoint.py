"""Checkpoints with orbax's CheckpointManager: the train state plus a small JSON record.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `meta` holds what is not an
array: the experiment name and the cumulative training time.
"""
import os

from absl import logging
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves every `every` steps and at the end, keeps the last `keep`, restores the latest."""

  def __init__(self, workdir, keep):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "meta"))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, meta):
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore(self, step, abstract_state):
    """Restores (state, meta) at `step` with the shardings of `abstract_state`."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def close(self):
    self.manager.close()
