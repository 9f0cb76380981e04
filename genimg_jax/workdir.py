"""A workdir holds one run: the lock that keeps it to one writer, and the run's identity.

`open_run(workdir, config, fresh)` is what train.run does before writing anything:
1. checks that the workdir can be a folder and can be written;
2. takes WORKDIR/lock (host, pid, start time, a heartbeat every minute): a second
   launch on the same workdir exits at once naming the holder; a lock left by a dead
   process on this host, or whose heartbeat stopped LOCK_STALE_SECONDS ago (a VM that
   went away), is taken over with a warning;
3. compares the config with the run's config.json field by field: a rerun may change
   only the fields of configs.MAY_CHANGE_BETWEEN_LAUNCHES; any other difference is
   refused, listing each field (old -> new) and the two ways out: another --workdir, or
   --fresh, which moves the old run aside to WORKDIR.replaced-<time> (never deletes it);
4. writes config.json.
Multi-host: process 0 does all of this; the others wait for its verdict.
"""
import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
import jax

from genimg_jax import configs, files

LOCK_STALE_SECONDS = 600   # another host's lock without a heartbeat for this long is stale
HEARTBEAT_SECONDS = 60
LOCK_UNREADABLE_SECONDS = 10  # a lock file without a readable record this old is stale


class WorkdirError(ValueError):
  """The workdir cannot hold this run (a user error: exit code 2)."""


class WorkdirLocked(WorkdirError):
  """Another launch is writing to the workdir."""


# --- run identity ---------------------------------------------------------------------
def flatten(d, prefix=""):
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def _may_change(field):
  return any(field == f or (f.endswith(".*") and field.startswith(f[:-1]))
             for f in configs.MAY_CHANGE_BETWEEN_LAUNCHES)


def config_differences(old, new, defaults, ignore=()):
  """[(field, old value, new value)] of the fields that may not change between launches.

  old: the run's config.json (a dict); new: this launch's config (a dict); defaults: the
  task's default config (a dict): a field that `old` lacks (added to the code since) is
  unchanged when the new value is its default. A field `new` lacks is "(removed)".
  ignore: fields not compared (an evaluation study names its own experiment).
  """
  old, new, defaults = flatten(old), flatten(_json(new)), flatten(_json(defaults))
  diffs = []
  for field in sorted(set(old) | set(new)):
    if _may_change(field) or field in ignore:
      continue
    if field not in old:
      if field in defaults and new[field] == defaults[field]:
        continue
      diffs.append((field, "(absent)", new[field]))
    elif field not in new:
      diffs.append((field, old[field], "(removed)"))
    elif old[field] != new[field]:
      diffs.append((field, old[field], new[field]))
  return diffs


def _json(d):
  return json.loads(json.dumps(d, default=files._to_builtin))


def _identity_error(workdir, diffs):
  lines = "\n".join(f"  {f}: {o!r} -> {n!r}" for f, o, n in diffs)
  return WorkdirError(
      f"Workdir {workdir} holds another run: its config.json differs from this launch's in "
      f"{len(diffs)} field(s) that a rerun may not change:\n{lines}\n"
      "Rerun with the same config to resume it, pass another --workdir for a new run, or "
      "pass --fresh to start this workdir afresh (the old run is moved aside to "
      f"{os.path.basename(str(workdir))}.replaced-<time>, not deleted). Fields a rerun may "
      f"change: {', '.join(configs.MAY_CHANGE_BETWEEN_LAUNCHES)}.")


def _holds_a_run(workdir):
  return any(files.join(workdir, n).exists() for n in ("config.json", "checkpoints", "results.json"))


def move_aside(workdir):
  """Moves every entry of the workdir but the lock to WORKDIR.replaced-<UTC time>/."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  w = files.path(workdir)
  dest = w.parent / f"{w.name}.replaced-{stamp}"
  dest.mkdir(parents=True)
  for entry in w.iterdir():
    if entry.name != "lock":
      files.move(entry, dest / entry.name)
  logging.warning("--fresh: moved the previous run in %s aside to %s.", w, dest)
  return dest


# --- the lock -----------------------------------------------------------------------------
def _now():
  return time.time()


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Lock:
  """WORKDIR/lock: {"host", "pid", "started", "heartbeat", "token"} of the launch writing it.

  The record appears whole or not at all (written to a private file, then linked into
  place: an exclusive create that fails when a lock exists), so a failed write (a full
  disk) leaves no lock behind. A lock that holds no readable record (left by an older
  version or a crash) is stale once it is LOCK_UNREADABLE_SECONDS old. Taking over a stale
  lock goes through WORKDIR/lock.takeover, created exclusively: of the launches that find
  the same stale lock at once, exactly one replaces it; the others are refused.
  """

  def __init__(self, workdir):
    self.path = files.join(workdir, "lock")
    self.guard = files.join(workdir, "lock.takeover")
    self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now(),
                 "heartbeat": _now(), "token": uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread = None

  def _read(self, path=None):
    """(record or None, raw bytes or None): None, None when there is no lock."""
    path = path or self.path
    try:
      raw = path.read_bytes()
    except FileNotFoundError:
      return None, None
    try:
      record = json.loads(raw)
      return (record if isinstance(record, dict) else None), raw
    except ValueError:
      return None, raw

  def _holder(self):
    return self._read()[0]

  def _describe(self, h):
    started = datetime.datetime.fromtimestamp(h.get("started", 0)).isoformat(timespec="seconds")
    return f"host {h.get('host')!r}, pid {h.get('pid')}, started {started}"

  def _age(self, path):
    """Seconds since `path` was last written (0 if it does not exist)."""
    try:
      st = path.stat()
    except FileNotFoundError:
      return 0.0
    mtime = getattr(st, "mtime", None)
    return _now() - float(st.st_mtime if mtime is None else mtime)

  def _stale_reason(self, h, raw):
    if h is None:  # a file without a readable record
      age = self._age(self.path)
      return (f"its record is unreadable ({len(raw)} bytes) and {age:.0f} s old"
              if age > LOCK_UNREADABLE_SECONDS else None)
    if h.get("host") == self.info["host"]:
      return None if _alive(int(h.get("pid", -1))) else "its process is no longer running"
    age = _now() - float(h.get("heartbeat", 0))
    return f"no heartbeat for {age:.0f} s" if age > LOCK_STALE_SECONDS else None

  def _in_use(self, holder):
    what = self._describe(holder) if holder else "a lock file being written"
    return WorkdirLocked(
        f"Workdir {self.path.parent} is in use by another launch ({what}; lock file "
        f"{self.path}). Wait for it to end, or pass another --workdir. If no such launch "
        "runs, remove the lock file.")

  def acquire(self):
    holder, raw = self._read()
    if raw is None:
      self._create()
    else:
      reason = self._stale_reason(holder, raw)
      if reason is None:
        raise self._in_use(holder)
      self._take_over(raw, holder, reason)
    self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
    self._thread.start()

  def _take_over(self, stale_raw, holder, reason):
    """Replaces the stale lock (still holding `stale_raw`) with this launch's, under the
    takeover guard."""
    guard = files.to_json_bytes(dict(self.info, purpose="takeover"))
    if self._age(self.guard) > LOCK_UNREADABLE_SECONDS:  # left by a launch that died mid-takeover
      self.guard.unlink(missing_ok=True)
    try:
      _exclusive_create(self.guard, guard, self.info["token"])
    except FileExistsError:
      raise WorkdirLocked(f"Workdir {self.path.parent}: another launch is taking over its "
                          f"stale lock at this moment ({self.guard}).") from None
    try:
      now_holder, now_raw = self._read()
      if now_raw != stale_raw:  # another launch took it over between our read and the guard
        raise self._in_use(now_holder)
      logging.warning("Taking over the lock of %s: its holder (%s) is gone (%s).",
                      self.path.parent, self._describe(holder or {}), reason)
      files.write_bytes(self.path, files.to_json_bytes(self.info))  # an atomic replace
    finally:
      self.guard.unlink(missing_ok=True)

  def _create(self):
    try:
      _exclusive_create(self.path, files.to_json_bytes(self.info), self.info["token"])
    except FileExistsError:
      raise WorkdirLocked(f"Workdir {self.path.parent} was locked by another launch at the same "
                          f"time ({self._describe(self._holder() or {})}).") from None
    except OSError as e:  # a full disk, a read-only file system, ...
      raise WorkdirError(f"Cannot create the lock file {self.path} ({files.os_error(e)}); "
                         "nothing was written. Free space (or fix the folder) and rerun.") from None

  def _heartbeat(self):
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        holder = self._holder()
        if holder and holder.get("token") != self.info["token"]:
          logging.error("The lock of %s was taken by %s.", self.path.parent,
                        self._describe(holder))
          return
        self.info["heartbeat"] = _now()
        files.write_bytes(self.path, files.to_json_bytes(self.info))
      except Exception as e:  # noqa: BLE001 (a passing storage error, a full disk): next beat
        logging.warning("Could not refresh the workdir lock: %s", files.brief(e))

  def release(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if files.storage_unavailable():
      logging.warning("The storage of %s did not answer: its lock stays; a rerun on this host "
                      "takes it over.", self.path.parent)
      return
    try:
      holder = self._holder()
      if holder and holder.get("token") == self.info["token"]:
        self.path.unlink(missing_ok=True)
    except Exception as e:  # noqa: BLE001 (the storage is down: the lock stays, and is stale)
      if not files.is_transient(e):
        raise
      logging.warning("Could not remove the workdir lock %s (%s); a rerun on this host takes "
                      "it over.", self.path, files.brief(e))


def _exclusive_create(path, data, token):
  """Creates `path` holding `data`, whole, only if it does not exist (FileExistsError).

  Local: `data` goes to a private file that is then hard-linked to `path` (link fails if
  `path` exists), so `path` never holds part of it; where hard links are not supported, an
  O_EXCL create, removed again if the write fails. Cloud Storage: write, then read back
  after a moment; a launch racing this one finds the other's token there and gives way.
  """
  if files.is_remote(path):
    if path.exists():
      raise FileExistsError(path)
    path.write_bytes(data)
    time.sleep(0.5)
    try:
      held = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
      held = None
    if not isinstance(held, dict) or held.get("token") != token:
      raise FileExistsError(path)
    return
  target = os.fspath(path)
  private = f"{target}.{token}.tmp"
  try:
    with open(private, "wb") as f:
      f.write(data)
    try:
      os.link(private, target)
      return
    except FileExistsError:
      raise
    except OSError:  # no hard links on this file system
      pass
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(data)
    except BaseException:
      os.unlink(target)
      raise
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(private)


# --- opening a workdir --------------------------------------------------------------------
def check_writable(folder, what="--workdir"):
  """Raises WorkdirError unless `folder` is (or can be made) a folder this process can
  write; `what` names it in the message."""
  w = files.path(folder)
  if w.exists() and not w.is_dir():
    raise WorkdirError(f"{what} {w} is a file, not a folder; pass a folder.")
  try:
    w.mkdir(parents=True, exist_ok=True)
    probe = w / f".write-test-{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"Cannot write to {what} {w} ({files.os_error(e)}); pass a folder "
                       "you can write.") from None


def _check_identity(workdir, config, evaluating):
  """Raises WorkdirError when the run's config.json differs where a rerun may not."""
  path = files.join(workdir, "config.json")
  if evaluating and not path.exists():
    raise WorkdirError(f"Workdir {files.path(workdir)} holds no run to evaluate (no config.json).")
  if path.exists():
    diffs = config_differences(files.read_json(path), config.to_dict(),
                               configs.defaults(config.task).to_dict(),
                               ignore=("experiment", "experiment_arg") if evaluating else ())
    if diffs:
      raise _identity_error(files.path(workdir), diffs)


def _prepare(workdir, config, fresh, evaluating):
  """Process 0's part of open_run; returns the lock (None for an evaluation, which only
  reads the run, so that several can read one run at once)."""
  if evaluating:
    _check_identity(workdir, config, evaluating)
    return None
  check_writable(workdir)
  lock = Lock(workdir)
  lock.acquire()
  try:
    if fresh and _holds_a_run(workdir):
      move_aside(workdir)
    _check_identity(workdir, config, evaluating)
    files.write_json(files.join(workdir, "config.json"), config.to_dict())
  except BaseException:
    lock.release()
    raise
  return lock


@contextlib.contextmanager
def open_run(workdir, config, fresh=False, evaluating=False):
  """Locks the workdir for this launch, checks the run's identity, writes config.json;
  releases the lock on exit. Raises WorkdirError (before any compute) when refused.
  evaluating: only evaluate the run (train.evaluate): no lock is taken; its config.json
  must exist, is compared with this config (its experiment name aside), and is not
  rewritten."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = _prepare(workdir, config, fresh, evaluating)
    except WorkdirError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    import numpy as np
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not ok and error is None:
      error = WorkdirError(f"Process 0 refused workdir {workdir} (see its log).")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
