"""The one training loop, for every objective (the task supplies the step).

run(config, workdir):
  1. checks the config and builds the mesh, the task and its evaluators (config.evals,
     genimg_jax/evaluators/; bad values are refused here, before any compute); locks the workdir, checks that it holds this run (or none) and
     writes config.json (genimg_jax/workdir.py);
  2. restores the latest readable checkpoint or initializes the state sharded over the
     mesh, and compiles the train step, while a thread builds the input pipeline;
  3. runs the compiled train step over the batches, logging a progress line and
     TensorBoard scalars every train.log_every steps, checkpointing every
     train.checkpoint_every steps, evaluating every train.eval_every steps;
  4. saves a final checkpoint, evaluates (every evaluator, the full protocol), and writes
     results.json.

Rerunning with the same workdir resumes from the latest checkpoint: the batch and the
random key of step s depend only on (seed, s), so the resumed run computes what the
uninterrupted run would have. What happens on a non-finite loss, SIGTERM or Ctrl-C:
genimg_jax/recovery.py.
"""
import concurrent.futures
import contextlib
import json
import socket
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np

from genimg_jax import checkpoint, data, evaluators, files, parallel, recovery, tasks
from genimg_jax import workdir as workdir_lib
from genimg_jax import writers, xla

ON_NONFINITE = ("stop", "rollback")
# What run() raises besides ValueError (a user error), for its callers (launch.py, sweeps):
Preempted, Interrupted = recovery.Preempted, recovery.Interrupted
NonFiniteLossError = recovery.NonFiniteLossError


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
  for name in ("steps", "log_every", "checkpoint_every", "eval_every"):
    if t[name] % t.steps_per_call:
      raise ValueError(f"train.{name}={t[name]} must be a multiple of train.steps_per_call="
                       f"{t.steps_per_call} (the loop logs, saves and evaluates between "
                       "compiled calls).")
  parallel.check_batch_divisible(t.batch_size, num_devices, "train.batch_size")
  parallel.check_batch_divisible(config.eval.batch_size, num_devices, "eval.batch_size")


def run(config, workdir, devices=None, fresh=False):
  """Trains, evaluates, checkpoints and reports. Returns the results dict.

  devices: the devices of the data mesh (default: all of them, of every process).
  fresh: move a previous run in the workdir aside and start anew (see workdir.py).
  Raises ValueError (a user error, before compute), Preempted after saving on SIGTERM,
  Interrupted on Ctrl-C, NonFiniteLossError on a non-finite loss that is not rolled back.
  """
  mesh = parallel.make_mesh(devices)
  validate_config(config, mesh.size)
  task = tasks.build_task(config)  # checks model/loss/likelihood names and the dataset
  evals = evaluators.from_config(config, task)  # and what config.evals measures
  with workdir_lib.open_run(workdir, config, fresh):
    logging.info("Experiment %s on %d %s device(s), %d process(es); workdir %s",
                 config.experiment, mesh.size, jax.devices()[0].platform,
                 jax.process_count(), files.path(workdir))
    return _train_and_evaluate(config, workdir, task, evals, mesh)


def used_runs(task):
  """{"used_runs": {role: runs.Restored.record()}} for a task built on other runs (its
  `used_runs()`, e.g. a distillation's teacher), else {}: results.json names the weights."""
  used = task.used_runs() if hasattr(task, "used_runs") else {}
  return {"used_runs": used} if used else {}


def check_used_runs(meta, task, workdir):
  """Refuses to resume a run whose used runs (a teacher, an autoencoder) now hold other
  weights than the ones its checkpoint was trained with (their workdir retrained in place:
  same workdir and step, another sha256)."""
  before = meta.get("used_runs", {})
  for role, now in used_runs(task).get("used_runs", {}).items():
    was = before.get(role)
    if was and was["params_sha256"] != now["params_sha256"]:
      raise ValueError(
          f"The run in {workdir} was trained with the {role} in {was['workdir']!r} at step "
          f"{was['step']} (parameters sha256 {was['params_sha256'][:12]}...); that checkpoint "
          f"now holds other weights (sha256 {now['params_sha256'][:12]}...). Restore the "
          f"{role}'s run, or train this one in another workdir.")


def evaluate(config, workdir, results_path, devices=None):
  """Evaluates the latest checkpoint of a run with this config's evaluation settings
  (eval.*, metrics.*: e.g. another sampler, number of steps or guidance scale) into
  results_path, without training and without touching the run's own records.

  The config must be the run's in every field a rerun may not change (its experiment
  name aside: an evaluation study has its own). Returns the results dict.
  """
  def prepare(task):  # before any compute: what it measures, where the record will go
    workdir_lib.check_writable(files.path(results_path).parent, "the evaluation's folder")
    return evaluators.from_config(config, task)

  with _finished_run(config, workdir, devices, "evaluate", prepare) as (run, evals):
    logging.info("Evaluating the checkpoint at step %d of %s into %s", run.step,
                 files.path(workdir), results_path)
    t_eval = time.time()
    eval_metrics, grids = evals(run.state, run.mesh, run.eval_rng, final=True)
    results = {"experiment": config.experiment, "evaluated_workdir": str(workdir),
               "evaluated_step": run.step, "steps": config.train.steps, "config": config.to_dict(),
               "metrics": {f"test/{k}": v for k, v in eval_metrics.items()},
               "train_metrics": run.meta.get("train_metrics", {}),
               "eval_seconds": time.time() - t_eval, "devices": writers.devices(run.mesh),
               **used_runs(run.task), "versions": writers.versions()}
    writers.write_json(results_path, results)
    if "samples" in grids and jax.process_index() == 0:
      from genimg_jax import images
      path = files.path(results_path)
      files.write_bytes(path.with_name(path.stem + "_samples.png"), images.png_bytes(grids["samples"]))
    return results


class FinishedRun(NamedTuple):
  """A run's latest checkpoint, restored for a command that samples or evaluates it."""
  task: Any
  mesh: Any
  step: int
  state: Any
  meta: dict
  eval_rng: Any  # the run's own evaluation key: the same samples as its evaluations


@contextlib.contextmanager
def _finished_run(config, workdir, devices, what, prepare):
  """The start of every command on a finished run (evaluate, export_samples, prompt_grid):
  the config checked, the task built, `prepare(task)` (the command's own refusals, before
  the workdir is touched), the workdir opened for reading and its latest readable
  checkpoint restored (a ValueError if it has none). Yields (FinishedRun, what prepare
  returned)."""
  mesh = parallel.make_mesh(devices)
  validate_config(config, mesh.size)
  task = tasks.build_task(config)
  prepared = prepare(task)
  with workdir_lib.open_run(workdir, config, evaluating=True):
    abstract, _, _ = compile_fns(task, mesh, config.train.steps_per_call)
    ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    if restored is None:
      raise ValueError(f"Workdir {files.path(workdir)} has no checkpoint to {what}.")
    yield FinishedRun(task, mesh, *restored, _run_keys(config)[2]), prepared


def _run_keys(config):
  """(init, train, evaluation) keys of a run, derived from config.seed in this one place:
  a command on a finished run evaluates with the key its own evaluations used."""
  return jax.random.split(jax.random.PRNGKey(config.seed), 3)


def export_samples(config, workdir, n, export_dir=None, seed=0, devices=None):
  """Writes n samples of the run's latest checkpoint for other FID code to score.

  The samples come from the task's samples (the sampler, steps and guidance of
  config.eval, which may differ from the run's as for evaluate), from the key
  fold_in(the run's evaluation key, seed): the same run and seed give the same files.
  Into export_dir (default WORKDIR/exports/step<S>_n<N>_seed<seed>):
    png/<i>.png   uint8 PNG files (gray or RGB), numbered from 000000
    samples.npz   "images": uint8 [n, H, W, C]; "labels": int32 [n] if conditional
    samples.json  what produced them: experiment, workdir as given, step, seed, n, the
                  sampler's description (sampler, steps, NFE, guidance) and config.eval
  Returns the export folder's path.
  """
  from genimg_jax import images
  if n <= 0:
    raise ValueError(f"--export_samples must be positive, got {n}.")

  def prepare(task):
    if not hasattr(task, "samples"):
      raise ValueError(f"Task {config.task!r} does not generate images; nothing to export.")

  with _finished_run(config, workdir, devices, "export samples from", prepare) as (run, _):
    task, step = run.task, run.step
    out = files.path(export_dir or files.join(workdir, "exports", f"step{step}_n{n}_seed{seed}"))
    workdir_lib.check_writable(out, "the export folder")
    logging.info("Exporting %d samples of the checkpoint at step %d of %s to %s", n, step,
                 files.path(workdir), out)
    samples, labels = task.samples(run.state, jax.random.fold_in(run.eval_rng, seed), n)
    about = task.about_samples()
    u8 = images.to_uint8(samples, (-1.0, 1.0))
    if jax.process_index() == 0:
      width = max(6, len(str(n - 1)))
      for i, image in enumerate(u8):
        files.write_bytes(out / "png" / f"{i:0{width}d}.png", images.png_bytes(image))
      import io
      buf = io.BytesIO()
      np.savez(buf, images=u8, **({} if labels is None else {"labels": labels}))
      files.write_bytes(out / "samples.npz", buf.getvalue())
      writers.write_json(out / "samples.json", {
          "experiment": config.experiment, "workdir": str(workdir), "step": step,
          "seed": seed, "num_samples": n, "shape": list(u8.shape[1:]), "dtype": "uint8",
          "labels": labels is not None, "about": about, "eval": config.eval.to_dict(),
          "versions": writers.versions()})
    return out


def prompt_grid(config, workdir, prompt, n, out=None, seed=0, devices=None):
  """Writes a PNG grid of n samples of a text-to-image run's latest checkpoint for one typed
  prompt (the eval sampler, steps and guidance of config.eval), into `out` (default
  WORKDIR/prompts/<the prompt's words joined by _>_n<N>_seed<seed>.png). A word that the
  captions do not know is a ValueError naming it. Returns the PNG's path."""
  from genimg_jax import images
  if n <= 0:
    raise ValueError(f"--num_images must be positive, got {n}.")

  def prepare(task):
    if not hasattr(task, "prompt_images"):
      raise ValueError(f"Task {config.task!r} is not conditioned on text; --prompt needs a "
                       "text_to_image run.")
    task.captioner.tokenize(prompt)  # an unknown word: said before the checkpoint loads

  with _finished_run(config, workdir, devices, "sample a prompt from", prepare) as (run, _):
    task = run.task
    x = task.prompt_images(run.state, jax.random.fold_in(run.eval_rng, seed), prompt, n)
    name = "_".join(task.captioner.decode(task.captioner.tokenize(prompt))[0].split())
    out = files.path(out or files.join(workdir, "prompts", f"{name}_n{n}_seed{seed}.png"))
    grid = images.make_grid(images.to_uint8(x, (-1.0, 1.0)), int(np.ceil(np.sqrt(n))))
    if jax.process_index() == 0:
      files.write_bytes(out, images.png_bytes(grid))
    logging.info("Sampled %r from the checkpoint at step %d into %s", prompt, run.step, out)
    return out


def _train_and_evaluate(config, workdir, task, evals, mesh):
  t = config.train
  k, total = t.steps_per_call, t.steps
  init_rng, train_rng, eval_rng = _run_keys(config)
  abstract, init, train_step = compile_fns(task, mesh, k)
  ckpt = checkpoint.Checkpointer(workdir, t.keep_checkpoints, t.storage_retry_seconds)
  restored = ckpt.restore_latest(abstract)
  start_step, state, meta = restored if restored else (0, None, {})
  if restored:
    logging.info("Restored checkpoint at step %d from %s", start_step, ckpt.directory)
  if start_step > total:
    raise ValueError(f"Workdir {workdir} has a checkpoint at step {start_step}, beyond "
                     f"train.steps={total}; raise train.steps or use another workdir.")
  if start_step % k:  # only when resuming a run saved with another steps_per_call
    raise ValueError(f"The checkpoint at step {start_step} is not a multiple of "
                     f"train.steps_per_call={k}; resume with train.steps_per_call=1 (or a divisor).")
  check_used_runs(meta, task, workdir)
  record = RunRecord(meta, start_step, mesh, task)
  examples_per_step = getattr(task, "examples_per_step", t.batch_size)

  def batches_from(step, skipped):
    """Input of each compiled call (k steps' batches, stacked when k > 1) from a step on."""
    return data.train_batches(config, recovery.data_index(step, skipped), examples_per_step,
                              stack=k, skip=skipped)

  def restore():
    r = ckpt.restore_latest(abstract)
    return r[:2] if r else None

  guard = recovery.NonFiniteGuard(t, record.skipped, restore, lambda: init(init_rng),
                                   batches_from)
  writer = writers.Writer(workdir)
  progress = writers.Progress(total)

  def save(step):
    record.add_train_time()
    record.skipped = sorted(guard.skipped)
    ckpt.save(step, state, record.meta(config, step))
    logging.info("Saved the checkpoint at step %d.", step)

  step = start_step
  try:
    if step < total:  # (a finished run, rerun, only evaluates: no pipeline, no compile)
      state, train_step, batches = _start_up(
          config, task, mesh, state, init, init_rng, train_step, train_rng,
          lambda: batches_from(start_step, guard.skipped), record)
      progress.start(step)
    with recovery.StopSignals() as signals:
      while step < total:
        step += k
        state, metrics = train_step(
            state, parallel.to_global(next(batches), mesh, stacked=k > 1), train_rng)
        if step % t.log_every == 0 or step == total:
          rolled_back = guard.check(state, "training")
          if rolled_back:
            step, state, batches = rolled_back
            continue
          metrics = parallel.fetch(metrics)
          metrics["steps_per_second"] = progress.line(step, metrics)
          record.train_metrics = {name: float(v) for name, v in metrics.items()}
          writer.scalars(step, {f"train/{name}": v for name, v in metrics.items()})
        if signals.interrupted:
          raise Interrupted(step, ckpt.latest_step())
        preempted = signals.should_save_and_stop(step)
        if (step % t.checkpoint_every == 0 and step < total) or preempted:
          rolled_back = guard.check(state, f"before saving step {step}")
          if rolled_back:
            step, state, batches = rolled_back
            continue
          save(step)
          if preempted:
            raise Preempted(step)
        if t.eval_every and step % t.eval_every == 0 and step < total:
          with record.not_training():
            _log_eval(writer, step, *evals(state, mesh, eval_rng, final=False))
    batches = None  # release the input pipeline (its threads) before the final evaluation
    if ckpt.latest_step() != total:  # (the state was checked at the last step's log)
      save(total)
    logging.info("Final evaluation...")
    t_eval = time.time()
    eval_metrics, grids = evals(state, mesh, eval_rng, final=True)
    eval_seconds = time.time() - t_eval
    _log_eval(writer, total, eval_metrics, grids)
  except KeyboardInterrupt:
    raise Interrupted(step, ckpt.latest_step()) from None
  finally:
    writer.close()
    ckpt.close()
  results = dict(record.results(config, eval_metrics, eval_seconds), **used_runs(task))
  files.retrying(lambda: writers.write_json(files.join(workdir, "results.json"), results),
                 "Writing results.json", t.storage_retry_seconds)
  logging.info("Results: %s", json.dumps(
      {k: float(v) for k, v in results["metrics"].items() if isinstance(v, (int, float, np.number))}))
  return results


def _start_up(config, task, mesh, state, init, init_rng, train_step, train_rng, make_batches,
              record):
  """Initializes (when not restored) and compiles the train step for the batches' shapes
  (data.train_batch_spec) while a thread builds the input pipeline: both are CPU work, so a
  host with cores to spare runs them side by side. Returns (state, compiled step, batches);
  the loop calls that compiled step (an input of another shape is an error, not a second
  compilation)."""
  k = config.train.steps_per_call
  examples_per_step = getattr(task, "examples_per_step", config.train.batch_size)
  t0 = time.time()
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="input") as pool:
    pending = pool.submit(make_batches)
    if state is None:
      state = init(init_rng)
    spec = parallel.global_shapes(data.train_batch_spec(config, examples_per_step, k), mesh,
                                  stacked=k > 1)
    compiled = train_step.lower(state, spec, train_rng).compile()
    compiled_s = time.time() - t0
    batches = pending.result()
  record.startup_seconds = time.time() - t0
  logging.info("Start-up: state and train step ready in %.1f s; with the input pipeline, "
               "built alongside, %.1f s.", compiled_s, record.startup_seconds)
  return state, compiled, batches


class RunRecord:
  """What results.json and each checkpoint's meta record about the run, built in one place.

  Carried across launches in the checkpoint's meta: the training time of all launches,
  the skipped batches, the last logged train metrics, one entry per launch that
  trained (its devices, processes and host, and the steps it ran), and the records of the
  runs it uses (check_used_runs compares them at a resume).
  """

  def __init__(self, meta, start_step, mesh, task=None):
    self.used_runs = used_runs(task).get("used_runs", {}) if task is not None else {}
    self.skipped = list(meta.get("skipped_batches", []))
    self.train_seconds = float(meta.get("train_seconds", 0.0))
    self.train_metrics = dict(meta.get("train_metrics", {}))
    self.launches = list(meta.get("launches", []))
    self.resumed_from = start_step
    self.startup_seconds = 0.0  # this launch's (0 when it trained nothing)
    self.devices = writers.devices(mesh)
    self._this_launch = {"from_step": start_step, "to_step": start_step,
                         "devices": self.devices, "host": socket.gethostname()}
    self._t0 = time.time()

  def add_train_time(self):
    now = time.time()
    self.train_seconds += now - self._t0
    self._t0 = now

  def not_training(self):
    """A context in which the time spent (a periodic evaluation) is not training time."""
    record = self

    class _Pause:
      def __enter__(self):
        record.add_train_time()

      def __exit__(self, *exc):
        record._t0 = time.time()
    return _Pause()

  def _launches(self, step):
    self._this_launch["to_step"] = step
    return self.launches + ([self._this_launch] if step > self._this_launch["from_step"] else [])

  def meta(self, config, step):
    return {"experiment": config.experiment, "train_seconds": self.train_seconds,
            "skipped_batches": list(self.skipped), "train_metrics": self.train_metrics,
            "launches": self._launches(step),
            **({"used_runs": self.used_runs} if self.used_runs else {})}

  def results(self, config, eval_metrics, eval_seconds):
    return {
        "experiment": config.experiment,
        "config": config.to_dict(),
        "metrics": {f"test/{k}": v for k, v in eval_metrics.items()},
        "train_metrics": self.train_metrics,  # the last logged step's, of whichever launch
        "steps": config.train.steps,
        "resumed_from_step": self.resumed_from,
        "skipped_batches": list(self.skipped),
        "train_seconds": self.train_seconds,  # all launches', each from its start-up on
        "startup_seconds": self.startup_seconds,  # this launch's start-up (0 if it trained nothing)
        "eval_seconds": eval_seconds,
        "launches": self._launches(config.train.steps),  # who trained which steps
        "devices": self.devices,  # this launch's: the one that evaluated
        "versions": writers.versions(),
    }


def compile_fns(task, mesh, steps_per_call=1, donate=True, options=None):
  """The jitted functions of a run on `mesh`: (abstract state, init, train_step).

  State replicated, batch sharded over the data axis; train_step runs `steps_per_call`
  steps per call (multi_step) and donates the state's buffers. abstract: the state's
  shapes, dtypes and shardings (what checkpoints restore into). options: XLA options
  instead of the project's (xla.jit), for the benchmarks' comparisons.
  """
  repl = parallel.replicated(mesh)
  abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
  state_sharding = jax.tree.map(lambda _: repl, abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_sharding)
  init = xla.jit(task.init_state, once=True, options=options, out_shardings=state_sharding)
  k = steps_per_call
  train_step = xla.jit(multi_step(task.train_step) if k > 1 else task.train_step,
                       options=options, donate_argnums=0 if donate else (),
                       in_shardings=(state_sharding, parallel.batch_sharding(mesh, stacked=k > 1),
                                     repl),
                       out_shardings=(state_sharding, repl))
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
