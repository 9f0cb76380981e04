"""The one training loop, for every objective (the task supplies the step).

run(config, workdir):
  1. checks the config, builds the mesh and the task, writes config.json;
  2. initializes the state sharded over the mesh, or restores the latest readable
     checkpoint (a corrupt latest one is set aside with a warning), and compiles the
     train step, while a thread builds the data pipeline;
  3. runs the compiled train step over batches from the data pipeline, logging a
     progress line and TensorBoard scalars every train.log_every steps,
     checkpointing every train.checkpoint_every steps, evaluating every
     train.eval_every steps;
  4. saves a final checkpoint, evaluates, and writes results.json.

Rerunning with the same workdir resumes from the latest checkpoint. On SIGTERM
(what a preemptible VM receives) the loop saves the current step and raises
`Preempted`; the same command resumes exactly: batch and random key of step s
depend only on (seed, s), so the resumed run computes what the uninterrupted
run would have.

Non-finite losses (train.on_nonfinite): "stop" raises NonFiniteLossError naming
the step; "rollback" restores the last good checkpoint, skips the batch of the
offending step (recorded in the checkpoint, so resumes stay exact) and goes on,
at most train.max_rollbacks times.
"""
import concurrent.futures
import json
import os
import signal
import time

from absl import logging
import jax
import numpy as np

from genimg_jax import checkpoint, data, parallel, tasks, writers

ON_NONFINITE = ("stop", "rollback")


class NonFiniteLossError(FloatingPointError):
  """A train step produced a non-finite loss or gradient."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint at `step` was saved. Rerun the same command to resume."""

  def __init__(self, step):
    super().__init__(f"Preempted (SIGTERM): saved a checkpoint at step {step}; rerun the same "
                     "command to resume.")
    self.step = step


def validate_config(config, num_devices):
  """Rejects bad sizes and rates before any compute, saying what is allowed."""
  t = config.train
  for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
               "steps_per_call"):
    if t[name] <= 0:
      raise ValueError(f"train.{name} must be positive, got {t[name]}.")
  if t.eval_every < 0:
    raise ValueError(f"train.eval_every must be >= 0 (0 = only at the end), got {t.eval_every}.")
  if t.on_nonfinite not in ON_NONFINITE:
    raise ValueError(f"Unknown train.on_nonfinite {t.on_nonfinite!r}; allowed: {ON_NONFINITE}")
  if config.optim.lr <= 0:
    raise ValueError(f"optim.lr must be positive, got {config.optim.lr}.")
  if config.eval.batch_size <= 0:
    raise ValueError(f"eval.batch_size must be positive, got {config.eval.batch_size}.")
  k = t.steps_per_call
  for name in ("steps", "log_every", "checkpoint_every", "eval_every"):
    if t[name] % k:
      raise ValueError(f"train.{name}={t[name]} must be a multiple of train.steps_per_call={k} "
                       "(the loop logs, saves and evaluates between compiled calls).")
  parallel.check_batch_divisible(t.batch_size, num_devices, "train.batch_size")
  parallel.check_batch_divisible(config.eval.batch_size, num_devices, "eval.batch_size")


def _check_workdir(workdir, config):
  """Refuses a workdir whose checkpoints belong to a different experiment."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
    with open(path) as f:
      previous = json.load(f)
    if previous.get("experiment") != config.experiment or previous.get("task") != config.task:
      raise ValueError(
          f"Workdir {workdir!r} holds checkpoints of experiment {previous.get('experiment')!r} "
          f"(task {previous.get('task')!r}), not {config.experiment!r}; refusing to mix them. "
          "Pass a different --workdir.")


def _nonfinite_step(state):
  """The first step (1-based) whose loss was not finite, or None."""
  bad = int(parallel.fetch(state.nonfinite_step))
  return bad if bad >= 0 else None


def data_index(steps_done, skipped):
  """Index of the data batch that step `steps_done + 1` reads, given skipped batch indices."""
  i = steps_done
  for k in sorted(skipped):
    if k <= i:
      i += 1
  return i


class _SigtermFlag:
  """Turns SIGTERM into a flag the loop polls (restored on exit)."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption saves
      self._previous = None
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint at the end of this step.")
    self.raised = True

  def should_stop(self, step):
    if jax.process_count() > 1:  # all processes agree on the step to stop at
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step) or self.raised
    return self.raised

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def run(config, workdir, devices=None):
  """Trains, evaluates, checkpoints and reports. Returns the results dict.

  devices: the devices of the data mesh (default: all of them, of every process).
  Raises Preempted after saving when SIGTERM arrives, NonFiniteLossError on a
  non-finite loss (on_nonfinite="stop" or too many rollbacks).
  """
  mesh = parallel.make_mesh(devices)
  validate_config(config, mesh.size)
  task = tasks.build_task(config)  # checks model/loss/likelihood names and the dataset
  os.makedirs(workdir, exist_ok=True)
  _check_workdir(workdir, config)
  writers.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  logging.info("Experiment %s on %d %s device(s), %d process(es); workdir %s",
               config.experiment, mesh.size, jax.devices()[0].platform,
               jax.process_count(), workdir)

  init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  abstract, init, train_step = compile_fns(task, mesh, config.train.steps_per_call)

  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  restored = ckpt.restore_latest(abstract)
  if restored is None:
    start_step, state, meta = 0, None, {}  # initialized below, while the data is read
  else:
    start_step, state, meta = restored
    logging.info("Restored checkpoint at step %d from %s", start_step, ckpt.directory)
    if start_step > config.train.steps:
      raise ValueError(f"Workdir {workdir!r} has a checkpoint at step {start_step}, beyond "
                       f"train.steps={config.train.steps}; raise train.steps or use another workdir.")
  resumed_from = start_step
  skipped = set(meta.get("skipped_batches", []))
  train_seconds = float(meta.get("train_seconds", 0.0))

  k = config.train.steps_per_call
  if start_step % k:  # only when resuming a run saved with another steps_per_call
    raise ValueError(f"The checkpoint at step {start_step} is not a multiple of "
                     f"train.steps_per_call={k}; resume with train.steps_per_call=1 (or a divisor).")
  writer = writers.Writer(workdir)
  total = config.train.steps
  progress = writers.Progress(total, start_step)
  examples_per_step = getattr(task, "examples_per_step", config.train.batch_size)

  def batches_from(steps_done):
    """Input of each compiled call (k steps' batches, stacked when k > 1) from a step on."""
    return data.train_batches(config, data_index(steps_done, skipped), examples_per_step,
                              stack=k, skip=skipped)

  # Start-up: the input pipeline is built (the split read) in a thread while the state is
  # initialized and the train step compiled for the batches' shapes (data.train_batch_spec);
  # the loop calls that compiled step (an input of another shape is an error, not a second
  # compilation). Both are CPU work: on 2 CPU cores, where reading MNIST's training split
  # alone keeps both busy (4.1-4.5 s of CPU in 2.5-2.7 s), this start-up took as long as one
  # after the other on a first launch (10 steps of launch.py --experiment=vae_mnist, 5
  # alternating pairs: medians 8.74 vs 8.78 s) and 0.5 s less with the compilation cache
  # warm (4.66 vs 5.19 s) (2026-11-28). A host with cores to spare runs the two side by
  # side (not measured: this project's machine has 2). train_seconds counts from here.
  t0 = time.time()
  startup_seconds = 0.0
  if start_step < total:  # (a finished run, rerun, only evaluates: no pipeline, no compile)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="input") as pool:
      pending = pool.submit(batches_from, start_step)
      if state is None:
        state = init(init_rng)
      batch_spec = parallel.global_shapes(data.train_batch_spec(config, examples_per_step, k),
                                          mesh, stacked=k > 1)
      train_step = train_step.lower(state, batch_spec, train_rng).compile()
      compiled_s = time.time() - t0
      batches = pending.result()
    startup_seconds = time.time() - t0
    logging.info("Start-up: state and train step ready in %.1f s; with the input pipeline, "
                 "built alongside, %.1f s.", compiled_s, startup_seconds)
  rollbacks = 0

  def save(step):
    nonlocal train_seconds, t0
    train_seconds += time.time() - t0
    t0 = time.time()
    ckpt.save(step, state, {"experiment": config.experiment, "train_seconds": train_seconds,
                            "skipped_batches": sorted(skipped)})

  def healthy(step, where):
    """True if no step so far was non-finite; otherwise stops or rolls back (False)."""
    nonlocal state, start_step, batches, rollbacks
    bad = _nonfinite_step(state)
    if bad is None:
      return True
    msg = f"Non-finite loss or gradient at step {bad} ({where})"
    if config.train.on_nonfinite == "stop" or rollbacks >= config.train.max_rollbacks:
      raise NonFiniteLossError(
          f"{msg}; stopping. The last good checkpoint is kept; lower the learning rate, enable "
          "gradient clipping (optim.grad_clip) or set train.on_nonfinite=rollback, and rerun "
          "to resume from it.")
    rollbacks += 1
    bad_index = data_index(bad - 1, skipped)
    skipped.add(bad_index)
    restored = ckpt.restore_latest(abstract)
    start_step, state, _ = restored if restored else (0, init(init_rng), None)
    logging.warning("%s; rolled back to step %d, skipping that step's batch (data index %d); "
                    "rollback %d of at most %d.", msg, start_step, bad_index,
                    rollbacks, config.train.max_rollbacks)
    batches = batches_from(start_step)
    return False

  last_train = {}
  step = start_step
  with _SigtermFlag() as sigterm:
    while step < total:
      step += k
      state, metrics = train_step(state, parallel.to_global(next(batches), mesh, stacked=k > 1),
                                  train_rng)
      if step % config.train.log_every == 0 or step == total:
        if not healthy(step, "training"):
          step = start_step
          continue
        metrics = parallel.fetch(metrics)
        metrics["steps_per_second"] = progress.line(step, metrics)
        last_train = {k: float(v) for k, v in metrics.items()}
        writer.scalars(step, {f"train/{k}": v for k, v in metrics.items()})
      preempted = sigterm.should_stop(step)
      if (step % config.train.checkpoint_every == 0 and step < total) or preempted:
        if not healthy(step, f"before saving step {step}"):
          step = start_step
          continue
        save(step)
        if preempted:
          writer.close()
          ckpt.close()
          raise Preempted(step)
      if config.train.eval_every and step % config.train.eval_every == 0 and step < total:
        t_eval = time.time()
        ev, grids = task.evaluate(state, mesh, eval_rng, final=False)
        _log_eval(writer, step, ev, grids)
        t0 += time.time() - t_eval  # train_seconds counts training only
  batches = None  # release the input pipeline (its threads) before the final evaluation
  if ckpt.latest_step() != total:  # (the state was checked at the last step's log)
    save(total)
  train_seconds += time.time() - t0
  ckpt.close()

  logging.info("Final evaluation...")
  t_eval = time.time()
  eval_metrics, grids = task.evaluate(state, mesh, eval_rng, final=True)
  eval_seconds = time.time() - t_eval
  _log_eval(writer, total, eval_metrics, grids)
  writer.close()
  results = {
      "experiment": config.experiment,
      "config": config.to_dict(),
      "metrics": {f"test/{k}": v for k, v in eval_metrics.items()},
      "train_metrics": last_train,  # the last logged step's (empty if nothing was trained)
      "steps": total,
      "resumed_from_step": resumed_from,
      "skipped_batches": sorted(skipped),
      "train_seconds": train_seconds,  # all launches', each from its start-up on
      "startup_seconds": startup_seconds,  # this launch's start-up (0 if it trained nothing)
      "eval_seconds": eval_seconds,
      "devices": writers.devices(mesh),
      "versions": writers.versions(),
  }
  writers.write_json(os.path.join(workdir, "results.json"), results)
  logging.info("Results: %s", json.dumps(
      {k: float(v) for k, v in results["metrics"].items() if isinstance(v, (int, float, np.number))}))
  return results


def compile_fns(task, mesh, steps_per_call=1, donate=True, compiler_options=None):
  """The jitted functions of a run on `mesh`: (abstract state, init, train_step).

  State replicated, batch sharded over the data axis; train_step runs
  `steps_per_call` steps per call (multi_step) and donates the state's buffers.
  abstract: the state's shapes, dtypes and shardings (what checkpoints restore into).
  compiler_options: XLA options of init and train_step; None: parallel.compiler_options() (the
  project's choice for the platform), {}: XLA's own defaults. init, which runs once, is
  compiled with parallel.once_compiler_options of them (on CPU, LLVM at level 1: the same
  bits in a third of the compile time for the convolutional networks).
  """
  if compiler_options is None:
    compiler_options = parallel.compiler_options()
  repl = parallel.replicated(mesh)
  abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
  state_sharding = jax.tree.map(lambda _: repl, abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_sharding)
  init = jax.jit(task.init_state, out_shardings=state_sharding,  # runs once: compiled at -O1
                 compiler_options=parallel.once_compiler_options(compiler_options))
  k = steps_per_call
  train_step = jax.jit(multi_step(task.train_step) if k > 1 else task.train_step,
                       donate_argnums=0 if donate else (),
                       in_shardings=(state_sharding, parallel.batch_sharding(mesh, stacked=k > 1),
                                     repl),
                       out_shardings=(state_sharding, repl),
                       compiler_options=compiler_options)
  return abstract, init, train_step


def multi_step(train_step):
  """k train steps in one compiled call: lax.scan of train_step over stacked batches [k, B, ...].

  Same results as k separate calls (each step still folds state.step into the rng);
  returns the last step's metrics. Saves k-1 dispatches and host round trips per call,
  which matters when a step takes about as long as launching it (small models, CPUs).
  """
  def run(state, batches, rng):
    state, metrics = jax.lax.scan(lambda s, b: train_step(s, b, rng), state, batches)
    return state, jax.tree.map(lambda m: m[-1], metrics)
  return run


def _log_eval(writer, step, metrics, grids):
  numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float, np.number))}
  logging.info("eval @ %d: %s", step, " ".join(f"{k}={float(v):.4f}" for k, v in numbers.items()))
  writer.scalars(step, {f"test/{k}": v for k, v in numbers.items()})
  for name, grid in grids.items():
    writer.image(step, name, grid)
