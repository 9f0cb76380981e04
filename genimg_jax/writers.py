"""Run records: TensorBoard event files, progress lines, results.json, PNGs.

Only process 0 writes; the others get no-op calls. Every file goes through
genimg_jax/files.py, so the workdir may be local or on Cloud Storage. TensorBoard event
files are written by tf.summary into a local folder (WORKDIR/tensorboard itself for a
local workdir) and, for a gs:// workdir, copied there whole after each flush: TensorFlow's
own Cloud Storage client ignores the endpoint settings that the rest of the project's
storage clients honour (so it could not be tested offline), and an event file holds a
run's scalars in a few hundred kilobytes.
"""
import sys
import tempfile
import time

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from genimg_jax import files, images


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
  """Writes a JSON record (process 0 only)."""
  if jax.process_index() == 0:
    files.write_json(path, obj)


class Writer:
  """Scalars and images to TensorBoard (WORKDIR/tensorboard) and PNGs to WORKDIR."""

  def __init__(self, workdir):
    self.workdir = files.path(workdir)
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self._remote = files.is_remote(self.workdir)
    self._warned = False  # a failed copy to the workdir was warned about (once per outage)
    tb = self.workdir / "tensorboard"
    self._local_tb = tempfile.mkdtemp(prefix="genimg_jax_tb_") if self._remote else str(tb)
    self._tb = tf.summary.create_file_writer(self._local_tb)

  def _flush(self):
    self._tb.flush()
    if self._remote:  # copy the event files whole to WORKDIR/tensorboard
      for f in tf.io.gfile.listdir(self._local_tb):
        with open(f"{self._local_tb}/{f}", "rb") as src:
          self._write_remote(self.workdir / "tensorboard" / f, src.read())

  def _write_remote(self, path, data):
    """Writes a file that the next flush writes again whole: a passing storage error is a
    warning (the run's checkpoints are what must not be lost), said once per outage."""
    if files.storage_unavailable():
      return
    try:
      files.write_bytes(path, data)
      self._warned = False
    except Exception as e:  # noqa: BLE001
      if not files.is_transient(e):
        raise
      if not self._warned:
        logging.warning("Could not copy %s to the workdir (%s); the next flush tries again.",
                        path.name, files.brief(e))
      self._warned = True

  def scalars(self, step, scalars):
    if not self.active:
      return
    with self._tb.as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, float(value), step=step)
    self._flush()

  def image(self, step, name, grid_HWC, png=True):
    """Logs a uint8 grid to TensorBoard and writes WORKDIR/<name>.png (latest) when png."""
    if not self.active:
      return
    with self._tb.as_default():
      tf.summary.image(name, grid_HWC[None], step=step)
    self._flush()
    if png:
      path = self.workdir / f"{name.replace('/', '_')}.png"
      if self._remote:
        self._write_remote(path, images.png_bytes(grid_HWC))
      else:
        files.write_bytes(path, images.png_bytes(grid_HWC))

  def close(self):
    if self.active:
      self._flush()
      self._tb.close()


class Progress:
  """A log line every train.log_every steps: step, loss, steps/s and ETA.

  The rate counts from `start(step)`, called when training begins (after the start-up),
  so neither the first line's rate nor its ETA includes compilation.
  """

  def __init__(self, total_steps):
    self.total = total_steps
    self.last_step, self.last_time = 0, time.time()

  def start(self, step):
    self.last_step, self.last_time = step, time.time()

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
  """Drops INFO lines from orbax and tfds (dozens per checkpoint); warnings still show.
  gcsfs's request retries are kept as one line each, without their tracebacks."""
  import logging as py_logging
  noisy = ("/orbax/", "/tensorflow_datasets/", "/etils/")

  class _Filter(py_logging.Filter):
    def filter(self, record):
      if "/gcsfs/" in record.pathname:  # its retries: one line each, not a traceback
        record.exc_info, record.exc_text = None, None
      return record.levelno >= py_logging.WARNING or not any(n in record.pathname for n in noisy)

  logging.get_absl_handler().addFilter(_Filter())
