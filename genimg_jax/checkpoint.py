"""Checkpoints with orbax's CheckpointManager: the train state plus a small JSON record.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `meta` holds what is not an
array: the experiment name, the cumulative training time and the data batches
skipped by non-finite rollbacks. Orbax writes each step to a temporary folder and
renames it when complete, so an interrupted save never looks like a checkpoint;
a complete one that was damaged later (a truncated file) fails to restore and is
set aside as `corrupt-<step>`, and the previous one is used.
"""
import os
import time

from absl import logging
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves, keeps the last `keep`, restores the latest readable checkpoint."""

  def __init__(self, workdir, keep):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.keep = keep
    self.manager = self._new_manager()

  def _new_manager(self):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
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

  def restore_latest(self, abstract_state):
    """(step, state, meta) of the newest checkpoint that restores, or None.

    An unreadable one is renamed corrupt-<step> (kept for inspection) with a warning.
    """
    self.manager.reload()
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, abstract_state)
        return step, state, meta
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        logging.warning("Checkpoint at step %d in %s is unreadable (%s: %s); falling back to "
                        "the previous one.", step, self.directory, type(e).__name__, str(e)[:300])
        self._set_aside(step)
    return None

  def _set_aside(self, step):
    if jax.process_index() == 0:
      src = os.path.join(self.directory, str(step))
      os.rename(src, os.path.join(self.directory, f"corrupt-{step}-{int(time.time())}"))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.manager.close()
    self.manager = self._new_manager()

  def close(self):
    self.manager.close()
