"""The one place that reads and writes workdir files, local or on Cloud Storage (gs://).

Every path goes through etils.epath, so a workdir may be a local folder or a
`gs://bucket/folder`. For gs:// epath is told to use gcsfs (fsspec) rather than
TensorFlow's file system: the same client in a test against a local emulator
(STORAGE_EMULATOR_HOST) as against Cloud Storage.
"""
import json
import os

os.environ.setdefault("EPATH_USE_TF", "false")  # gs:// through gcsfs, not TensorFlow
from etils import epath  # noqa: E402
import numpy as np  # noqa: E402


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


def _to_builtin(x):
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "tolist"):
    return np.asarray(x).tolist()
  raise TypeError(f"not JSON serializable: {type(x)}")
