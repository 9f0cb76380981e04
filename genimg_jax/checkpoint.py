"""Checkpoints with orbax's CheckpointManager: the train state plus a small JSON record.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `meta` holds what is not an array:
the experiment name, the cumulative training time, the data batches skipped by
non-finite rollbacks, the last logged train metrics and the launches so far. Orbax
writes each step to a temporary folder and renames it when complete, so an interrupted
save never looks like a checkpoint.

Restoring the latest step tells two failures apart:
* the checkpoint holds a state of another structure or other shapes than the config
  builds (another model, another optimizer): `StateMismatch`, a user error; no file is
  touched;
* the checkpoint's files do not read as data (a truncated or zeroed file): it is set
  aside as `corrupt-<step>-<time>` with a warning, and the previous one is used.

A save on a disk without room for it raises `DiskFull` (a user error) and leaves the
previous checkpoints as they were: on a local disk the free space is checked before
writing (orbax's writer threads print a traceback for each file they fail to write), and
a save that fails anyway for want of space has its partial folder removed.
"""
import contextlib
import errno
import shutil
import time

from absl import logging
import jax
import orbax.checkpoint as ocp

from genimg_jax import files


class StateMismatch(ValueError):
  """A checkpoint's state has another structure or shapes than the config builds."""


class DiskFull(ValueError):
  """No room on the workdir's disk for a checkpoint (a user error: exit code 2)."""


# Room asked for beyond the state's bytes: orbax's metadata and the JSON record.
SAVE_MARGIN_BYTES = 1 << 20


def is_disk_full(e):
  """Whether an exception (or one it was raised from) says the disk is full."""
  while e is not None:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e) or "os_error_code='28'" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def _key(k):
  for attr in ("name", "key", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def shapes_by_path(tree):
  """{"params/Dense_0/kernel": (shape, dtype name), ...} of a state or its checkpoint metadata."""
  return {"/".join(_key(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def mismatch(saved, expected, limit=8):
  """Lines describing how two shapes_by_path dicts differ ([] when they agree)."""
  lines = [f"  {p}: in the checkpoint {saved.get(p, '(absent)')}, this config "
           f"{expected.get(p, '(absent)')}"
           for p in sorted(set(saved) | set(expected)) if saved.get(p) != expected.get(p)]
  return lines[:limit] + ([f"  ... and {len(lines) - limit} more"] if len(lines) > limit else [])


class Checkpointer:
  """Saves, keeps the last `keep`, restores the latest readable checkpoint."""

  def __init__(self, workdir, keep, storage_retry_seconds=300.0):
    self.directory = files.join(workdir, "checkpoints")
    self.keep = keep
    self.retry_seconds = storage_retry_seconds
    self.last_good = None  # the newest step this process saved or restored
    self.manager = self._new_manager()

  def _new_manager(self):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
                                             enable_async_checkpointing=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, meta):
    """Saves `state` and `meta` as step `step`; raises DiskFull, keeping the previous
    checkpoints, when the disk has no room for it, and files.StorageUnavailable when the
    storage does not answer within storage_retry_seconds of retries (a save that failed
    half-way is written again from the start; the previous checkpoints stay intact)."""
    self._check_room(step, state)

    def attempt():
      if self.manager is None:
        self.manager = self._new_manager()
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
      self.manager.wait_until_finished()

    def start_over():  # a fresh manager: the failed one may hold the half-written step
      with contextlib.suppress(Exception):
        self.manager.close()
      self.manager = None
      with contextlib.suppress(Exception):
        files.remove_tree(self.directory / str(step))

    try:
      files.retrying(attempt, f"Saving the checkpoint at step {step}", self.retry_seconds,
                     before_retry=start_over)
      self.last_good = step
    except files.StorageUnavailable as e:
      last = (f"the last good checkpoint (step {self.last_good}) is intact"
              if self.last_good is not None else "there is no earlier checkpoint")
      raise files.StorageUnavailable(f"{e}; {last}. Rerun the same command once the storage "
                                     "answers: it resumes from there.") from None
    except Exception as e:
      if not is_disk_full(e):
        raise
      if jax.process_index() == 0 and not files.is_remote(self.directory):
        for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
          shutil.rmtree(partial, ignore_errors=True)
      raise self._disk_full(step, "the disk filled up while it was written") from None

  def _disk_full(self, step, why):
    self.manager.reload()
    kept = [s for s in self.manager.all_steps() if s != step]
    last = (f"the last good checkpoint (step {max(kept)}) is kept" if kept
            else "there is no earlier checkpoint")
    return DiskFull(f"No space left on device for the checkpoint at step {step} in "
                    f"{self.directory} ({why}); {last}. Free space and rerun the same "
                    "command to resume.")

  def _check_room(self, step, state):
    """Raises DiskFull before writing when a local disk has less room than the state needs
    (every process checks its own disk; all agree before anyone writes)."""
    ok, why = True, "another process's disk is full"
    if not files.is_remote(self.directory):
      need = SAVE_MARGIN_BYTES + sum(x.nbytes for x in jax.tree.leaves(state)
                                     if hasattr(x, "nbytes"))
      folder = self.directory if self.directory.exists() else self.directory.parent
      free = shutil.disk_usage(folder).free
      if free < need:
        ok, why = False, f"it needs about {need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free"
    everyone_ok = ok
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      import numpy as np
      everyone_ok = bool(np.min(multihost_utils.process_allgather(np.int32(ok))))
    if not everyone_ok:
      raise self._disk_full(step, why)

  def restore(self, step, abstract_state):
    """Restores (state, meta) at `step` with the shardings of `abstract_state`."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def check_structure(self, step, abstract_state):
    """Raises StateMismatch if the saved state's paths or shapes differ from abstract_state's.
    Returns False if the checkpoint's metadata does not read (a damaged checkpoint)."""
    try:
      saved = shapes_by_path(self.manager.item_metadata(step)["state"].tree)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      logging.warning("Checkpoint at step %d in %s: its metadata is unreadable (%s: %s).",
                      step, self.directory, type(e).__name__, str(e)[:300])
      return False
    lines = mismatch(saved, shapes_by_path(abstract_state))
    if lines:
      raise StateMismatch(
          f"The checkpoint at step {step} in {self.directory} holds a state of another "
          "structure or shape than this config builds:\n" + "\n".join(lines) + "\n"
          "The config or the code differs from the run's. Nothing was changed in the "
          "workdir: pass another --workdir for a new run, or --fresh to start this one "
          "afresh (the old run is moved aside, not deleted).")
    return True

  def restore_latest(self, abstract_state):
    """(step, state, meta) of the newest checkpoint that restores, or None.

    Raises StateMismatch (touching nothing) when the newest checkpoint holds another
    state than abstract_state. A damaged one is renamed corrupt-<step>-<time> (kept for
    inspection) with a warning, and the previous one is tried.
    """
    self.manager.reload()
    for step in sorted(self.manager.all_steps(), reverse=True):
      if self.check_structure(step, abstract_state):
        try:
          state, meta = self.restore(step, abstract_state)
          self.last_good = step
          return step, state, meta
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
          logging.warning("Checkpoint at step %d in %s is unreadable (%s: %s).", step,
                          self.directory, type(e).__name__, str(e)[:300])
      logging.warning("Setting the checkpoint at step %d aside and falling back to the "
                      "previous one.", step)
      self._set_aside(step)
    return None

  def _set_aside(self, step):
    if jax.process_index() == 0:
      files.move(self.directory / str(step),
                 self.directory / f"corrupt-{step}-{int(time.time())}")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.manager.close()
    self.manager = self._new_manager()

  def close(self):
    """Closes the manager; a storage that does not answer is only warned about here (what
    needed it has raised already)."""
    if self.manager is None or files.storage_unavailable():
      return
    try:
      self.manager.close()
    except Exception as e:  # noqa: BLE001
      if not files.is_transient(e):
        raise
      logging.warning("Closing the checkpoint manager of %s: %s", self.directory, files.brief(e))
