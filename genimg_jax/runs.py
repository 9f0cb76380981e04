"""A run that uses another finished run: the metrics' classifier, a teacher, an autoencoder.

The using run names the other's workdir in one of its config fields
(metrics.classifier_workdir, distill.teacher_workdir). `config_of(workdir)` reads that
run's config.json alone (cheap: what a task checks before training); `restore(workdir)`
builds that run's task from it and restores its latest checkpoint, or the one at `step`
(a teacher is named by workdir and step, so that a teacher trained further is noticed).
`Restored.record()` is what the using run writes next to whatever it computes with it:
the workdir as named, the step and a sha256 of the restored parameters, so that a number
can be traced to the exact weights.
"""
import dataclasses
import hashlib
from typing import Any

import jax
import ml_collections
import numpy as np

from genimg_jax import checkpoint, files


class RunUnavailable(FileNotFoundError):
  """The named workdir holds no finished run (no config.json, or no checkpoint)."""


@dataclasses.dataclass
class Restored:
  """A finished run: its workdir (as named), config, task, state at `step`, and the
  sha256 of its parameters (params_sha256)."""
  workdir: str
  config: ml_collections.ConfigDict
  task: Any
  state: Any
  step: int
  params_sha256: str

  def record(self):
    """{"workdir", "step", "params_sha256"}: which weights were used."""
    return {"workdir": str(self.workdir), "step": int(self.step),
            "params_sha256": self.params_sha256}


def config_of(workdir):
  """The config of the run in `workdir` (its config.json). Raises RunUnavailable."""
  path = files.join(workdir, "config.json")
  if not path.exists():
    raise RunUnavailable(f"no config.json in {workdir!r}")
  return ml_collections.ConfigDict(files.read_json(path))


def config_of_used(field, workdir, tasks, example):
  """The config of the run that config field `field` names, checked to be a run of one of
  `tasks`. Raises RunUnavailable (it is not there: train it first, e.g. `example`) or
  ValueError (it is a run of another task)."""
  try:
    other = config_of(workdir)
  except RunUnavailable as e:
    raise RunUnavailable(
        f"{field}: {e}. Train it first (e.g. `python launch.py --experiment={example}`) or "
        f"point {field} at a finished {' or '.join(tasks)} run.") from None
  if other.task not in tasks:
    raise ValueError(f"The run in {field}={workdir!r} is a {other.task} run, not a "
                     f"{' or '.join(tasks)} run.")
  return other


def restore_used(field, workdir, tasks, example, data_name, step=None, preprocess=None):
  """The run that config field `field` names, checked as config_of_used checks it and to
  be trained on `data_name` (and, when `preprocess` is given, on pixels in that
  data.preprocess range: a run that is fed this run's images), restored at `step` (None:
  its latest checkpoint). Raises RunUnavailable or ValueError."""
  other = config_of_used(field, workdir, tasks, example)
  if other.data.name != data_name:
    raise ValueError(f"The run in {field}={workdir!r} was trained on {other.data.name!r}, "
                     f"but this run's data is {data_name!r}: point {field} at a "
                     f"{' or '.join(tasks)} run of the same data.")
  if preprocess is not None and other.data.preprocess != preprocess:
    raise ValueError(f"The run in {field}={workdir!r} was trained on data.preprocess="
                     f"{other.data.preprocess!r}, but this run's is {preprocess!r}, and it is "
                     f"fed this run's images: set data.preprocess={other.data.preprocess!r}.")
  return restore(workdir, step)


def params_sha256(params):
  """sha256 of a parameter tree's leaves in tree order (their bytes, on the host)."""
  leaves = jax.tree.leaves(jax.device_get(params))
  return hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in leaves)).hexdigest()


def restore(workdir, step=None):
  """The run in `workdir` at its latest checkpoint (or at `step`), on the default device.
  Raises RunUnavailable when it has no config.json or no such checkpoint."""
  from genimg_jax import tasks  # tasks may use restore (a teacher) at build time
  config = config_of(workdir)
  task = tasks.build_task(config)
  ckpt = checkpoint.Checkpointer(workdir, 1)
  try:
    saved = sorted(ckpt.manager.all_steps())
    if not saved:
      raise RunUnavailable(f"no checkpoint in {workdir!r}")
    if step is None:
      step = saved[-1]
    elif step not in saved:
      raise RunUnavailable(f"no checkpoint at step {step} in {workdir!r} (it holds steps "
                           f"{', '.join(map(str, saved))})")
    abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return Restored(workdir, config, task, state, int(step), params_sha256(state.params))
