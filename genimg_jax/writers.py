"""Run records: TensorBoard event files, progress lines, config.json, results.json, PNGs.

Only process 0 writes; the others get no-op calls.
"""
import json
import os
import sys
import time

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from genimg_jax import images


def versions():
  """Versions of the packages a result depends on."""
  import flax, jaxlib, optax, orbax.checkpoint, tensorflow_datasets
  return {"python": sys.version.split()[0], "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "flax": flax.__version__, "optax": optax.__version__,
          "orbax_checkpoint": orbax.checkpoint.__version__, "tensorflow": tf.__version__,
          "tensorflow_datasets": tensorflow_datasets.__version__, "numpy": np.__version__}


def devices(mesh):
  d = list(mesh.devices.flat)
  return {"count": len(d), "platform": d[0].platform, "kind": d[0].device_kind,
          "processes": jax.process_count(), "local_count": jax.local_device_count()}


def write_json(path, obj):
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_to_builtin)
  os.replace(tmp, path)  # never leave a half-written file


def _to_builtin(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  if hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  raise TypeError(f"not JSON serializable: {type(x)}")


class Writer:
  """Scalars and images to TensorBoard (WORKDIR/tensorboard) and PNGs to WORKDIR."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.active = jax.process_index() == 0
    self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if self.active else None

  def scalars(self, step, scalars):
    if not self.active:
      return
    with self._tb.as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, float(value), step=step)
    self._tb.flush()

  def image(self, step, name, grid_HWC, png=True):
    """Logs a uint8 grid to TensorBoard and writes WORKDIR/<name>.png (latest) when png."""
    if not self.active:
      return
    with self._tb.as_default():
      tf.summary.image(name, grid_HWC[None], step=step)
    self._tb.flush()
    if png:
      images.save_png(os.path.join(self.workdir, f"{name.replace('/', '_')}.png"), grid_HWC)

  def close(self):
    if self.active:
      self._tb.close()


class Progress:
  """A log line every `every` steps: step, loss, steps/s and ETA."""

  def __init__(self, total_steps, start_step):
    self.total = total_steps
    self.last_step, self.last_time = start_step, time.time()

  def line(self, step, metrics):
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = (self.total - step) / max(rate, 1e-9)
    parts = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
    logging.info("step %d/%d | %s | %.1f steps/s | ETA %s", step, self.total, parts, rate,
                 _fmt_seconds(eta))
    return rate


def _fmt_seconds(s):
  s = int(s)
  return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def quiet_library_logs():
  """Drops INFO lines from orbax and tfds (dozens per checkpoint); warnings still show."""
  import logging as py_logging
  noisy = ("/orbax/", "/tensorflow_datasets/", "/etils/")

  class _Filter(py_logging.Filter):
    def filter(self, record):
      return record.levelno >= py_logging.WARNING or not any(n in record.pathname for n in noisy)

  logging.get_absl_handler().addFilter(_Filter())
