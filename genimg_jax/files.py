"""The one place that reads and writes workdir files, local or on Cloud Storage (gs://).

Every path goes through etils.epath, so a workdir may be a local folder or a
`gs://bucket/folder`. For gs:// epath is told to use gcsfs (fsspec) rather than
TensorFlow's file system: the same client in a test against a local emulator
(STORAGE_EMULATOR_HOST) as against Cloud Storage.
"""
import json
import os
import time

os.environ.setdefault("EPATH_USE_TF", "false")  # gs:// through gcsfs, not TensorFlow
from absl import logging  # noqa: E402
from etils import epath  # noqa: E402
import numpy as np  # noqa: E402


class StorageUnavailable(Exception):
  """The workdir's storage did not answer within the retry window (exit code 75: the last
  good checkpoint is intact; rerun the same command once it answers)."""


# What a storage client says when the store is unreachable or overloaded, rather than a
# request that is wrong (a 4xx) or a local failure.
_TRANSIENT_TEXT = ("Cannot connect to host", "Connect call failed", "Connection refused",
                   "Connection reset", "Server disconnected", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                   "Service Unavailable", "Too Many Requests", "timed out")


def is_transient(e):
  """Whether an exception (or one it was raised from) is a passing storage failure: no
  connection, a reset, a time-out, an HTTP 5xx or 429."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__module__.startswith("aiohttp"):
      return True
    code = getattr(e, "code", None)  # gcsfs's HttpError
    if isinstance(code, int) and (code >= 500 or code == 429):
      return True
    if any(t in str(e) for t in _TRANSIENT_TEXT):
      return True
    e = e.__cause__ or e.__context__
  return False


def brief(e):
  """An exception in one short line."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


_unavailable = []  # set once StorageUnavailable was raised in this process


def storage_unavailable():
  """Whether this process gave up on its storage (StorageUnavailable was raised): what is
  left to write on the way out (TensorBoard copies, the lock's removal) is then skipped
  rather than waited for."""
  return bool(_unavailable)


def retrying(fn, what, seconds, before_retry=None):
  """fn(), tried again with exponential backoff (1 s, 2 s, ... 30 s) while it fails with a
  passing storage error (is_transient), for up to `seconds`; then StorageUnavailable.
  Other errors are raised at once. before_retry(): called before each new try."""
  deadline, delay = time.time() + seconds, 1.0
  while True:
    try:
      return fn()
    except Exception as e:  # noqa: BLE001 (the storage clients raise many types)
      if not is_transient(e):
        raise
      if time.time() + delay > deadline:
        _unavailable.append(what)
        raise StorageUnavailable(f"{what}: the storage did not answer within {seconds:.0f} s "
                                 f"of retries ({brief(e)})") from None
      logging.warning("%s failed (%s); trying again in %.0f s.", what, brief(e), delay)
      time.sleep(delay)
      delay = min(2 * delay, 30.0)
      if before_retry is not None:
        before_retry()


def path(p):
  """An epath.Path; a local path is made absolute (orbax needs absolute paths)."""
  p = epath.Path(p)
  return p if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def is_remote(p):
  return "://" in os.fspath(p)


def join(*parts):
  return path(parts[0]).joinpath(*parts[1:])


def write_bytes(p, data):
  """Writes a whole file at once: locally through a temporary file and a rename, so a
  reader never sees half of it; on Cloud Storage an object appears only when complete."""
  p = path(p)
  if is_remote(p):
    p.write_bytes(data)
    return
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.with_name(p.name + ".tmp")
  tmp.write_bytes(data)
  os.replace(tmp, p)


def to_json_bytes(obj):
  return json.dumps(obj, indent=2, default=_to_builtin).encode()


def write_json(p, obj):
  write_bytes(p, to_json_bytes(obj))


def read_json(p):
  return json.loads(path(p).read_text())


def move(src, dst):
  """Moves a file or folder (with everything under it)."""
  src, dst = path(src), path(dst)
  if is_remote(src):
    import fsspec
    fsspec.filesystem("gs").mv(os.fspath(src), os.fspath(dst), recursive=True)
  else:
    os.rename(src, dst)


def os_error(e):
  """An OSError in a few words: 'No space left on device: /path' (strerror and file name)."""
  if getattr(e, "strerror", None):
    return f"{e.strerror}: {e.filename}" if getattr(e, "filename", None) else e.strerror
  return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def remove_tree(p):
  """Removes a file or folder with everything under it (nothing if it does not exist)."""
  p = path(p)
  if is_remote(p):
    import fsspec
    fs = fsspec.filesystem("gs")
    if fs.exists(os.fspath(p)):
      fs.rm(os.fspath(p), recursive=True)
  elif p.exists():
    import shutil
    shutil.rmtree(os.fspath(p)) if p.is_dir() else os.remove(os.fspath(p))


def _to_builtin(x):
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  raise TypeError(f"not JSON serializable: {type(x)}")
