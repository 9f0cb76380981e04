"""What the training loop does when a step went wrong or the job must stop.

* Non-finite losses (train.on_nonfinite): NonFiniteGuard.check names the first bad
  step; "stop" raises NonFiniteLossError; "rollback" restores the last good checkpoint,
  skips the offending step's batch (its data index, recorded in the checkpoint, so a
  resumed run stays exact) and returns the (step, state, batches) to go on from, at most
  train.max_rollbacks times.
* Preemption: SIGTERM (what a preemptible VM receives) becomes a flag the loop polls
  between steps; the loop saves the current step and raises Preempted (exit code 75).
* Ctrl-C: during the training loop SIGINT is a flag too, polled at the same place, so
  the loop stops at a step boundary and raises Interrupted, which names the step reached
  and the last checkpoint (exit code 130); nothing is saved. A KeyboardInterrupt raised
  wherever the main thread happens to be could land inside a checkpoint save or the
  input pipeline, whose threads may swallow it. A second Ctrl-C raises KeyboardInterrupt
  at once (for a step that hangs); outside the loop (start-up, final evaluation) Ctrl-C
  is Python's KeyboardInterrupt, which the loop also turns into Interrupted.
"""
import signal

from absl import logging
import jax

from genimg_jax import parallel


class NonFiniteLossError(FloatingPointError):
  """A train step produced a non-finite loss or gradient."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint at `step` was saved. Rerun the same command to resume."""

  def __init__(self, step):
    super().__init__(f"Preempted (SIGTERM): saved a checkpoint at step {step}; rerun the same "
                     "command to resume.")
    self.step = step


class Interrupted(Exception):
  """Ctrl-C (SIGINT) during training."""

  def __init__(self, step, checkpoint_step):
    last = ("no checkpoint yet: a rerun starts from step 0" if checkpoint_step is None
            else f"the last checkpoint is at step {checkpoint_step}; rerun the same command "
                 "to resume from it")
    super().__init__(f"Interrupted at step {step}; {last}.")
    self.step, self.checkpoint_step = step, checkpoint_step


def data_index(steps_done, skipped):
  """Index of the data batch that step `steps_done + 1` reads, given skipped batch indices."""
  i = steps_done
  for k in sorted(skipped):
    if k <= i:
      i += 1
  return i


def nonfinite_step(state):
  """The first step (1-based) whose loss was not finite, or None."""
  bad = int(parallel.fetch(state.nonfinite_step))
  return bad if bad >= 0 else None


class NonFiniteGuard:
  """Checks the state for a non-finite step and stops or rolls back (train.on_nonfinite).

  skipped: the data indices left out so far (from the checkpoint); rollbacks add to it.
  restore(): the (step, state) of the latest checkpoint, or None.
  init(): a fresh state (when there is no checkpoint to roll back to).
  batches_from(step, skipped): the input stream from a step on.
  """

  def __init__(self, train_config, skipped, restore, init, batches_from):
    self.cfg = train_config
    self.skipped = set(skipped)
    self.rollbacks = 0
    self._restore, self._init, self._batches_from = restore, init, batches_from

  def check(self, state, where):
    """None if every step so far was finite; else (step, state, batches) after a rollback.
    Raises NonFiniteLossError for on_nonfinite=stop or past max_rollbacks."""
    bad = nonfinite_step(state)
    if bad is None:
      return None
    msg = f"Non-finite loss or gradient at step {bad} ({where})"
    if self.cfg.on_nonfinite == "stop" or self.rollbacks >= self.cfg.max_rollbacks:
      raise NonFiniteLossError(
          f"{msg}; stopping. The last good checkpoint is kept; lower the learning rate, enable "
          "gradient clipping (optim.grad_clip) or set train.on_nonfinite=rollback, and rerun "
          "to resume from it.")
    self.rollbacks += 1
    bad_index = data_index(bad - 1, self.skipped)
    self.skipped.add(bad_index)
    step, state = self._restore() or (0, self._init())
    logging.warning("%s; rolled back to step %d, skipping that step's batch (data index %d); "
                    "rollback %d of at most %d.", msg, step, bad_index, self.rollbacks,
                    self.cfg.max_rollbacks)
    return step, state, self._batches_from(step, self.skipped)


class StopSignals:
  """Turns SIGTERM and SIGINT into flags the loop polls between steps (the previous
  handlers restored on exit). Installed from the main thread only; elsewhere (a test
  that trains in a thread) neither handler is installed and Ctrl-C stays Python's."""

  def __init__(self):
    self.preempted = False    # SIGTERM: save, then raise Preempted
    self.interrupted = False  # SIGINT: raise Interrupted, nothing saved
    self._previous = {}

  def __enter__(self):
    for signum, handler in ((signal.SIGTERM, self._on_sigterm), (signal.SIGINT, self._on_sigint)):
      try:
        self._previous[signum] = signal.signal(signum, handler)
      except ValueError:  # not the main thread
        break
    return self

  def _on_sigterm(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint at the end of this step.")
    self.preempted = True

  def _on_sigint(self, signum, frame):
    if self.interrupted:  # the second Ctrl-C: do not wait for the step to end
      raise KeyboardInterrupt
    logging.warning("Ctrl-C received: stopping at the end of this step (Ctrl-C again to "
                    "stop at once).")
    self.interrupted = True

  def should_save_and_stop(self, step):
    """True when this step is the one to save at and stop (preemption)."""
    if jax.process_count() > 1:  # all processes agree on the step to stop at
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step) or self.preempted
    return self.preempted

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
