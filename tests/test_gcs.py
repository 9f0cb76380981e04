"""Workdirs on Cloud Storage (gs://), against a local emulator (tests/gcs_emulator.py).

The emulator runs in its own process on a free loopback port for the module's tests and is
stopped at the end; the storage clients are pointed at it by environment variables
(gcsfs and google-cloud-storage: STORAGE_EMULATOR_HOST; tensorstore, which orbax writes
arrays with: TENSORSTORE_GCS_HTTP_URL and a dummy token), which launch.py subprocesses
inherit.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "genimg-test"


@pytest.fixture(scope="module")
def gcs():
  """gs://BUCKET on a local emulator; yields a function making a fresh gs:// folder."""
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "gcs_emulator.py"), BUCKET],
                          stdout=subprocess.PIPE, text=True)
  port = int(proc.stdout.readline().split()[1])
  url = f"http://127.0.0.1:{port}"
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
         "GOOGLE_CLOUD_PROJECT": "test", "EPATH_USE_TF": "false"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  names = iter(range(10**6))
  try:
    yield lambda: f"gs://{BUCKET}/run{next(names)}"
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    proc.terminate()
    proc.wait()


def test_sigterm_then_resume_on_gs_equals_uninterrupted(gcs, monkeypatch, tmp_path):
  """The interrupted run on gs://, the uninterrupted one it must equal on local disk."""
  from tests.test_fault_tolerance import _config, _final_params, _sigterm_at
  from genimg_jax import train
  c = _config("vae_mnist")
  c.train.checkpoint_every = 6  # SIGTERM lands at step 7, between checkpoints 6 and 12
  straight, interrupted = str(tmp_path / "straight"), gcs()
  train.run(c, straight)
  with monkeypatch.context() as m:
    _sigterm_at(m, 7)
    with pytest.raises(train.Preempted):
      train.run(c, interrupted)
  resumed = train.run(c, interrupted)
  assert resumed["resumed_from_step"] == 7
  s1, p1 = _final_params(straight, c)
  s2, p2 = _final_params(interrupted, c)
  assert s1 == s2 == 12
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)


def test_a_sweep_report_is_written_to_gs(gcs):
  from genimg_jax import files, sweep
  workdir = gcs()
  trials = sweep.seeds(sweep.product(**{"objective.beta": [1.0, 2.0]}), 2)
  for t, nll in zip(trials, [90.0, 92.0, 88.0, 88.5]):
    files.write_json(files.join(workdir, "trials", sweep.trial_name(t), "results.json"),
                     {"steps": 1, "metrics": {"test/nll": nll}})
  md = sweep.report(trials, workdir, metrics=["test/nll"])
  assert "| 2 | **88.25 ± 0.25** | 2 |" in md
  assert files.join(workdir, "ablation.md").read_text() == md
  assert len(files.join(workdir, "ablation.csv").read_text().splitlines()) == 5
  assert files.join(workdir, "ablation.png").read_bytes()[:4] == b"\x89PNG"
  assert json.loads(files.join(workdir, "trials", "beta=1.0_seed=0", "results.json")
                    .read_text())["metrics"]["test/nll"] == 90.0


def _emulator(port, state):
  """The emulator on `port`, keeping its objects in `state` across a restart."""
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "gcs_emulator.py"),
                           f"--port={port}", f"--state={state}", BUCKET],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().split()[1] == str(port)
  return proc


def test_a_gs_workdir_survives_an_outage_resumes_exactly_and_holds_every_output(tmp_path):
  """The store goes away right after the checkpoint at step 20 is saved (the emulator is
  stopped, its objects kept) and comes back later on the same port: the run stops at its
  next save with one line and exit code 75, checkpoint 20 intact; the same command, once
  the store answers, resumes from step 20 and ends where an uninterrupted run ends, with
  every output of a run in the gs:// workdir; a changed config is refused there as
  anywhere."""
  import signal
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  state = tmp_path / "store.pkl"
  url = f"http://127.0.0.1:{port}"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update({"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
              "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
              "GOOGLE_CLOUD_PROJECT": "test", "EPATH_USE_TF": "false"})

  def command(workdir):  # a progress line only at the end: the first write after the cut is a save
    return [sys.executable, "launch.py", "--experiment=vae_mnist:runlocal", f"--workdir={workdir}",
            "--experiment.train.steps=60", "--experiment.train.log_every=60",
            "--experiment.train.checkpoint_every=20", "--experiment.train.storage_retry_seconds=2"]

  def store():
    import gcsfs
    return gcsfs.GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)

  def results(workdir):
    with store().open(f"{workdir[len('gs://'):]}/results.json") as f:
      return json.load(f)

  emulator = _emulator(port, state)
  straight = run = None
  try:
    cut = f"gs://{BUCKET}/cut"
    run = subprocess.Popen(command(cut), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in run.stderr:
      lines.append(line)
      if "Saved the checkpoint at step 20" in line:
        run.send_signal(signal.SIGSTOP)  # hold the run while the store goes away
        emulator.terminate()
        emulator.wait()
        run.send_signal(signal.SIGCONT)
        break
    # the uninterrupted run, on local disk, trains while the cut one waits out the storage
    # client's own retries (gcsfs: half a minute of backoff before ours sees the error)
    straight_log = open(tmp_path / "straight.log", "w")
    straight = subprocess.Popen(command(str(tmp_path / "straight")), cwd=ROOT, env=env,
                                stderr=straight_log)
    err = "".join(lines) + run.communicate(timeout=400)[1]
    assert run.returncode == 75, err[-3000:]
    errors = [l for l in err.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert "checkpoint at step 40" in errors[0] and "did not answer" in errors[0]
    assert "the last good checkpoint (step 20) is intact" in errors[0] and "Rerun" in errors[0]
    emulator = _emulator(port, state)  # the store is back, with what it held
    again = subprocess.run(command(cut), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restored checkpoint at step 20" in again.stderr
    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    want = json.loads((tmp_path / "straight" / "results.json").read_text())
    got = results(cut)
    assert got["resumed_from_step"] == 20
    assert got["metrics"] == want["metrics"]  # the same final state, evaluated the same
    timing = "steps_per_second"
    assert ({k: v for k, v in got["train_metrics"].items() if k != timing}
            == {k: v for k, v in want["train_metrics"].items() if k != timing})
    # every output of a run is in the gs:// workdir, the lock released
    root = cut[len("gs://"):]
    names = sorted(p[len(root) + 1:] for p in store().find(root))
    for name in ("config.json", "results.json", "samples.png", "reconstructions.png"):
      assert name in names, names
    assert any(n.startswith("checkpoints/60/state/") for n in names)
    assert "lock" not in names
    # its TensorBoard events hold the train and test scalars and the images
    import tensorflow as tf
    event = next(n for n in names if n.startswith("tensorboard/events.out.tfevents."))
    local = tmp_path / "events"
    local.write_bytes(store().cat_file(f"{root}/{event}"))
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(local)) for v in e.summary.value}
    assert {"train/loss", "test/nll", "samples", "reconstructions"} <= tags
    # and a changed config is refused there as anywhere
    other = subprocess.run(command(cut) + ["--experiment.model.mlp_units=32"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "holds another run" in other.stderr, other.stderr[-3000:]
  finally:
    for proc in [p for p in (straight, run) if p is not None] + [emulator]:
      proc.kill()
      proc.wait()
