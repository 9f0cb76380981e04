"""The one training loop, for every objective (the task supplies the step).

run(config, workdir):
  1. checks the config, builds the mesh and the task, writes config.json;
  2. initializes the state sharded over the mesh, or restores the latest checkpoint;
  3. runs the jitted train step over batches from the data pipeline, logging a
     progress line and TensorBoard scalars every train.log_every steps,
     checkpointing every train.checkpoint_every steps, evaluating every
     train.eval_every steps;
  4. saves a final checkpoint, evaluates, and writes results.json.
Rerunning with the same workdir resumes from the latest checkpoint.
"""
import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp

from genimg_jax import checkpoint, data, parallel, tasks, writers


class NonFiniteLossError(FloatingPointError):
  """A train step produced a non-finite loss or gradient."""


def validate_config(config):
  """Rejects bad sizes and rates before any compute, saying what is allowed."""
  t = config.train
  for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
    if t[name] <= 0:
      raise ValueError(f"train.{name} must be positive, got {t[name]}.")
  for name in ("eval_every", "image_every"):
    if t[name] < 0:
      raise ValueError(f"train.{name} must be >= 0 (0 = off), got {t[name]}.")
  if config.optim.lr <= 0:
    raise ValueError(f"optim.lr must be positive, got {config.optim.lr}.")
  if config.eval.batch_size <= 0:
    raise ValueError(f"eval.batch_size must be positive, got {config.eval.batch_size}.")
  parallel.check_batch_divisible(t.batch_size, "train.batch_size")
  parallel.check_batch_divisible(config.eval.batch_size, "eval.batch_size")


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


def _check_finite(state, where):
  bad = int(jax.device_get(state.nonfinite_step))
  if bad >= 0:
    raise NonFiniteLossError(
        f"Non-finite loss or gradient at step {bad} ({where}); stopping. The last good "
        "checkpoint is kept; lower the learning rate or enable gradient clipping "
        "(optim.grad_clip) and rerun to resume from it.")


def run(config, workdir):
  """Trains, evaluates, checkpoints and reports. Returns the results dict."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  _check_workdir(workdir, config)
  results_path = os.path.join(workdir, "results.json")
  mesh = parallel.make_mesh()
  task = tasks.build_task(config)
  writers.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  logging.info("Experiment %s on %d %s device(s), %d process(es); workdir %s",
               config.experiment, jax.device_count(), jax.devices()[0].platform,
               jax.process_count(), workdir)

  init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  repl = parallel.replicated(mesh)
  abstract = jax.eval_shape(task.init_state, init_rng)
  state_sharding = jax.tree.map(lambda _: repl, abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_sharding)

  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  start_step = ckpt.latest_step()
  meta = {"experiment": config.experiment, "train_seconds": 0.0}
  if start_step is None:
    state = jax.jit(task.init_state, out_shardings=state_sharding)(init_rng)
    start_step = 0
  else:
    state, meta = ckpt.restore(start_step, abstract)
    logging.info("Restored checkpoint at step %d from %s", start_step, ckpt.directory)
  resumed_from = start_step

  train_step = jax.jit(task.train_step, donate_argnums=0,
                       in_shardings=(state_sharding, parallel.batch_sharding(mesh), repl),
                       out_shardings=(state_sharding, repl))
  writer = writers.Writer(workdir)
  total = config.train.steps
  progress = writers.Progress(total, start_step)
  train_seconds = float(meta["train_seconds"])
  t0 = time.time()

  def save(step):
    _check_finite(state, f"before saving step {step}")
    nonlocal train_seconds, t0
    train_seconds += time.time() - t0
    t0 = time.time()
    ckpt.save(step, state, {"experiment": config.experiment, "train_seconds": train_seconds})

  batches = data.train_batches(config, start_step) if start_step < total else iter(())
  step = start_step
  for step in range(start_step + 1, total + 1):
    batch = parallel.to_global(next(batches), mesh)
    state, metrics = train_step(state, batch, train_rng)
    if step % config.train.log_every == 0 or step == total:
      metrics = jax.device_get(metrics)
      _check_finite(state, "training")
      metrics["steps_per_second"] = progress.line(step, metrics)
      writer.scalars(step, {f"train/{k}": v for k, v in metrics.items()})
    if step % config.train.checkpoint_every == 0 and step < total:
      save(step)
    if config.train.eval_every and step % config.train.eval_every == 0 and step < total:
      ev, grids = task.evaluate(state, mesh, eval_rng, final=False)
      _log_eval(writer, step, ev, grids)
  if ckpt.latest_step() != total:
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
      "steps": total,
      "resumed_from_step": resumed_from,
      "train_seconds": train_seconds,
      "eval_seconds": eval_seconds,
      "devices": writers.devices(),
      "versions": writers.versions(),
  }
  writers.write_json(results_path, results)
  logging.info("Results: %s", json.dumps(results["metrics"], default=float))
  return results


def _log_eval(writer, step, metrics, grids):
  logging.info("eval @ %d: %s", step, " ".join(f"{k}={float(v):.4f}" for k, v in metrics.items()))
  writer.scalars(step, {f"test/{k}": v for k, v in metrics.items()})
  for name, grid in grids.items():
    writer.image(step, name, grid)
