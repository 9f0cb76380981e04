"""A full disk and a read-only file system, on a small tmpfs mounted for the test (root
only; skipped elsewhere): one line and exit code 2 at start-up, at a checkpoint save and
for --evaluate, the last good checkpoint kept, no lock left behind, and a rerun after
space is freed resuming."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from genimg_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_disk(tmp_path):
  """An 8 MiB tmpfs at tmp_path/disk (unmounted at the end)."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
  try:
    yield disk
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave):
  """Fills the disk with one file, leaving `leave` bytes free; returns the file."""
  filler = disk / "filler"
  free = shutil.disk_usage(disk).free
  with open(filler, "ab") as f:
    os.posix_fallocate(f.fileno(), 0, max(0, free - leave) + os.path.getsize(filler))
  return filler


def _launch(workdir, *args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "launch.py", "--experiment=vae_mnist:runlocal",
                         f"--workdir={workdir}", "--experiment.train.steps=4",
                         "--experiment.train.checkpoint_every=2", "--experiment.train.log_every=2",
                         *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(proc):
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return errors[0]


def _steps(workdir):
  return sorted(os.listdir(workdir / "checkpoints"))


def test_a_full_disk_is_one_line_at_start_up_and_at_a_save_and_the_run_resumes(
    small_disk, runlocal_config):
  workdir = small_disk / "run"
  c = runlocal_config
  c.train.steps = c.train.checkpoint_every = c.train.log_every = 2
  train.run(c, str(workdir))  # a finished 2-step run: checkpoint 2
  # no byte free: refused at the lock, which is not left behind
  filler = _fill(small_disk, 0)
  error = _one_line_error(_launch(workdir))
  assert "No space left on device" in error and "Free space" in error
  assert not (workdir / "lock").exists() and _steps(workdir) == ["2"]
  # room for the lock and the records but not for a checkpoint: refused at the save of
  # step 4, checkpoint 2 kept, nothing partial left
  os.remove(filler)
  _fill(small_disk, 256 << 10)
  error = _one_line_error(_launch(workdir))
  assert "checkpoint at step 4" in error and "the last good checkpoint (step 2) is kept" in error
  assert not (workdir / "lock").exists() and _steps(workdir) == ["2"]
  # space freed: the same command resumes from step 2 and finishes
  os.remove(small_disk / "filler")
  proc = _launch(workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Restored checkpoint at step 2" in proc.stderr
  with open(workdir / "results.json") as f:
    r = json.load(f)
  assert r["resumed_from_step"] == 2 and r["steps"] == 4
  # the finished run on a file system mounted read-only: --evaluate says so in one line
  subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
  try:
    error = _one_line_error(_launch(workdir, "--evaluate=again"))
    assert "Cannot write to the evaluation's folder" in error and "evaluations" in error
    assert "Read-only file system" in error
  finally:
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
