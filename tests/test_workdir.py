"""A workdir is one run: identity against config.json, --fresh, the lock, state mismatches,
launches recorded per launch."""
import glob
import json
import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from genimg_jax import checkpoint, files, train, workdir as workdir_lib


def _config(**overrides):
  from experiments import vae_mnist
  c = vae_mnist.get_config("runlocal")
  c.experiment, c.experiment_arg = "vae_mnist", "runlocal"
  c.train.steps, c.train.log_every, c.train.checkpoint_every = 4, 2, 2
  for key, value in overrides.items():
    group, field = key.split(".")
    c[group][field] = value
  return c


def _snapshot(workdir):
  """Every file under the workdir with its bytes (the lock aside)."""
  out = {}
  for path in glob.glob(os.path.join(workdir, "**", "*"), recursive=True):
    if os.path.isfile(path) and os.path.basename(path) != "lock":
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished 4-step vae_mnist:runlocal run, and a snapshot of its files."""
  workdir = str(tmp_path_factory.mktemp("run"))
  results = train.run(_config(), workdir)
  return workdir, results, _snapshot(workdir)


@pytest.mark.parametrize("field,value,shown", [
    ("model.mlp_units", 32, "model.mlp_units: 64 -> 32"),        # shape-bearing
    ("data.name", "fashion_mnist", "data.name: 'mnist' -> 'fashion_mnist'"),
    ("optim.lr", 3e-4, "optim.lr: 0.001 -> 0.0003"),
])
def test_another_config_is_refused_and_nothing_is_touched(finished_run, field, value, shown):
  workdir, _, before = finished_run
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.run(_config(**{field: value}), workdir)
  message = str(e.value)
  assert "holds another run" in message and shown in message
  assert "--workdir" in message and "--fresh" in message
  assert _snapshot(workdir) == before  # not a byte changed, no checkpoint set aside
  assert not os.path.exists(os.path.join(workdir, "lock"))  # released


def test_a_field_missing_from_an_older_config_counts_as_its_default():
  old = {"model": {"name": "mlp_vae"}, "train": {"steps": 10}}
  defaults = {"model": {"name": "mlp_vae", "conv_impl": "auto", "new_size": 3}, "train": {"steps": 10}}
  new = {"model": {"name": "mlp_vae", "conv_impl": "auto", "new_size": 3}, "train": {"steps": 20}}
  assert workdir_lib.config_differences(old, new, defaults) == []  # steps may change
  new["model"]["new_size"] = 4
  assert workdir_lib.config_differences(old, new, defaults) == [("model.new_size", "(absent)", 4)]
  assert workdir_lib.config_differences({"model": {"gone": 1}}, {"model": {}}, {}) == [
      ("model.gone", 1, "(removed)")]


def test_an_allowed_change_resumes_and_launches_are_recorded_each(tmp_path):
  """train.steps may change (the run goes on); a launch on other devices is recorded as one
  more launch, not in place of the first."""
  c = _config()
  train.run(c, str(tmp_path), devices=jax.devices()[:1])
  c.train.steps, c.eval.num_examples = 8, 100  # both may change between launches
  r = train.run(c, str(tmp_path), devices=jax.devices())
  assert r["resumed_from_step"] == 4 and r["steps"] == 8
  assert [(l["from_step"], l["to_step"], l["devices"]["count"]) for l in r["launches"]] == [
      (0, 4, 1), (4, 8, 4)]


def test_fresh_moves_the_old_run_aside(finished_run, tmp_path):
  import shutil
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run[0], workdir)
  old = _snapshot(workdir)
  r = train.run(_config(**{"model.mlp_units": 32}), workdir, fresh=True)
  assert r["resumed_from_step"] == 0 and r["config"]["model"]["mlp_units"] == 32
  aside = glob.glob(workdir + ".replaced-*")
  assert len(aside) == 1 and _snapshot(aside[0]) == old  # the old run, whole


def test_a_checkpoint_of_another_shape_is_a_mismatch_not_corrupt(finished_run, tmp_path):
  """Even when config.json does not tell (deleted here), a restore into other shapes is
  reported as a mismatch and no checkpoint is set aside."""
  import shutil
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run[0], workdir)
  os.remove(os.path.join(workdir, "config.json"))
  before = {k: v for k, v in _snapshot(workdir).items() if k != "config.json"}
  with pytest.raises(checkpoint.StateMismatch, match="(?s)another structure or shape.*kernel"):
    train.run(_config(**{"model.mlp_units": 32}), workdir)
  after = _snapshot(workdir)
  assert not glob.glob(os.path.join(workdir, "checkpoints", "corrupt-*"))
  assert {k: v for k, v in after.items() if k in before} == before


def _write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  info = {"host": socket.gethostname(), "started": 0.0, "heartbeat": 0.0, "token": "x", **holder}
  with open(os.path.join(workdir, "lock"), "w") as f:
    json.dump(info, f)


def test_a_second_launch_is_refused_naming_the_holder(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _write_lock(str(tmp_path), pid=holder.pid)
    with pytest.raises(workdir_lib.WorkdirLocked, match=f"in use by another launch.*pid {holder.pid}"):
      train.run(_config(), str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")
    # another host's lock with a fresh heartbeat holds too
    _write_lock(str(tmp_path), host="elsewhere", pid=1, heartbeat=workdir_lib._now())
    with pytest.raises(workdir_lib.WorkdirLocked, match="host 'elsewhere'"):
      train.run(_config(), str(tmp_path))
  finally:
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("stale", ["dead process", "old heartbeat"])
def test_a_stale_lock_is_taken_over(tmp_path, stale):
  if stale == "dead process":
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(str(tmp_path), pid=gone.pid)
  else:
    _write_lock(str(tmp_path), host="elsewhere", pid=1,
                heartbeat=workdir_lib._now() - workdir_lib.LOCK_STALE_SECONDS - 1)
  c = _config()
  c.train.steps = c.train.log_every = c.train.checkpoint_every = 2
  r = train.run(c, str(tmp_path))
  assert r["steps"] == 2
  assert not os.path.exists(tmp_path / "lock")  # released at the end


def test_workdir_lock_and_identity_files_go_through_epath(tmp_path):
  """The lock is a JSON record of its holder, removed on release."""
  lock = workdir_lib.Lock(str(tmp_path))
  lock.acquire()
  held = files.read_json(tmp_path / "lock")
  assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
  with pytest.raises(workdir_lib.WorkdirLocked):
    workdir_lib.Lock(str(tmp_path)).acquire()
  lock.release()
  assert not (tmp_path / "lock").exists()


RACER = """
import sys
sys.path.insert(0, {root!r})
from genimg_jax import workdir
held = []
print("ready", flush=True)
for line in sys.stdin:  # one workdir a round, sent to every racer at once
  try:
    held.append(workdir.Lock(line.strip()))  # kept, never released: it holds the lock
    held[-1].acquire()
    print("took it", flush=True)
  except workdir.WorkdirLocked as e:
    print("refused:", str(e).replace(chr(10), " "), flush=True)
"""


def test_launches_racing_for_one_stale_lock_let_exactly_one_take_it(tmp_path):
  """Real processes, released at the same instant on the same stale lock (its holder's
  process is gone), several rounds: exactly one of each round takes the lock over."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  racers = [subprocess.Popen([sys.executable, "-c", RACER.format(root=root)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True) for _ in range(6)]
  try:
    assert [r.stdout.readline() for r in racers] == ["ready\n"] * len(racers)
    for round_ in range(40):
      workdir = str(tmp_path / f"round{round_}")
      _write_lock(workdir, pid=gone.pid)
      for r in racers:
        r.stdin.write(workdir + "\n")
      for r in racers:
        r.stdin.flush()
      outcomes = [r.stdout.readline() for r in racers]
      assert sum(o.startswith("took it") for o in outcomes) == 1, (round_, outcomes)
      assert all(o.startswith(("took it", "refused:")) for o in outcomes), outcomes
  finally:
    for r in racers:
      r.kill()
      r.wait()


def test_a_lock_without_a_readable_record_does_not_block_forever(tmp_path):
  """An empty lock file (a write that failed on a full disk, in older versions) is refused
  while it may still be being written, then taken over."""
  lock_file = tmp_path / "lock"
  lock_file.write_bytes(b"")
  with pytest.raises(workdir_lib.WorkdirLocked, match="lock file being written"):
    workdir_lib.Lock(str(tmp_path)).acquire()
  old = time.time() - workdir_lib.LOCK_UNREADABLE_SECONDS - 1
  os.utime(lock_file, (old, old))
  lock = workdir_lib.Lock(str(tmp_path))
  lock.acquire()
  assert files.read_json(lock_file)["token"] == lock.info["token"]
  lock.release()
  assert not lock_file.exists() and not (tmp_path / "lock.takeover").exists()
