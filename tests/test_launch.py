"""launch.py end to end on real MNIST, in a subprocess, as a user runs it."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, env_extra=None, env_drop=(), timeout=600):
  env = dict(os.environ)
  for k in ("XLA_FLAGS", *env_drop):  # XLA_FLAGS: one CPU device, as on a laptop
    env.pop(k, None)
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


# launch.py's own compilation cache settings, in a cache of this module's runs (the rest of
# the suite shares conftest's, which keeps only programs over 0.2 s of compilation)
CACHE_ENV_DROP = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vae_runlocal"))
  cache = str(tmp_path_factory.mktemp("xla_cache"))
  proc = launch("--experiment=vae_mnist:runlocal", f"--workdir={workdir}",
                f"--compilation_cache={cache}", "--experiment.optim.lr=2e-3",
                env_drop=CACHE_ENV_DROP)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc, cache


def test_runlocal_writes_every_output(first_run):
  workdir, proc, cache = first_run
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  assert config["experiment"] == "vae_mnist" and config["train"]["steps"] == 20
  assert config["optim"]["lr"] == 2e-3  # the command line's override (runlocal's: 1e-3)
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  assert set(r) >= {"experiment", "config", "metrics", "steps", "train_seconds",
                    "startup_seconds", "eval_seconds", "devices", "versions"}
  assert 0 < r["startup_seconds"] < r["train_seconds"]  # the start-up is part of training's time
  m = r["metrics"]
  for k in ("test/elbo", "test/nll", "test/bits_per_dim", "test/kl", "test/rec"):
    assert np.isfinite(m[k]), k
  # IWAE bound >= ELBO (NLL <= -ELBO), bits/dim consistent with nats
  assert m["test/nll"] <= -m["test/elbo"] + 0.5
  np.testing.assert_allclose(m["test/bits_per_dim"], m["test/nll"] / (784 * np.log(2)), rtol=1e-6)
  assert m["test/iwae_k"] == 10 and m["test/num_examples"] == 200
  assert r["steps"] == 20 and r["devices"]["count"] == 1 and "jax" in r["versions"]
  assert r["train_metrics"]["loss"] < 530  # learning: below the initial 784 ln 2 = 543 nats
  for name in ("samples", "reconstructions"):
    img = np.asarray(Image.open(os.path.join(workdir, f"{name}.png")))
    assert img.shape == (8 * 29 + 1, 8 * 29 + 1) and img.std() > 0
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                 if os.path.basename(p).isdigit())
  assert steps == [10, 20]
  events = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  assert events
  tags = set()
  import tensorflow as tf
  for e in tf.compat.v1.train.summary_iterator(events[0]):
    tags |= {v.tag for v in e.summary.value}
  assert {"train/loss", "test/nll", "samples", "reconstructions"} <= tags
  assert "steps/s" in proc.stderr and "ETA" in proc.stderr
  # the compilation cache keeps every program, not only those over jax's default of 1 s
  programs = {name.split("-")[0] for name in os.listdir(cache)}  # NAME-HASH-cache
  assert {"jit_train_step", "jit_eval_step", "jit_init_state"} <= programs
  assert len(programs) >= 10, programs


def test_rerun_resumes_at_saved_step(first_run, tmp_path):
  workdir, _, cache = first_run
  # JAX_LOG_COMPILES: jax logs each persistent cache hit
  again = lambda *a: launch("--experiment=vae_mnist:runlocal", f"--workdir={workdir}",
                            f"--compilation_cache={cache}", "--experiment.optim.lr=2e-3", *a,
                            env_drop=CACHE_ENV_DROP,
                            env_extra={"JAX_LOG_COMPILES": "1"})
  proc = again()
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Restored checkpoint at step 20" in proc.stderr
  for program in ("jit_eval_step", "jit_sample_images"):
    assert f"Persistent compilation cache hit for '{program}'" in proc.stderr
  # a finished run only evaluates: its train step is neither compiled nor loaded
  assert "Finished tracing train_step" not in proc.stderr
  assert "jit_train_step" not in proc.stderr and "Start-up:" not in proc.stderr
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  assert r["resumed_from_step"] == 20 and r["startup_seconds"] == 0
  assert r["train_metrics"]["loss"] < 530  # a re-evaluation keeps the run's last train metrics
  assert [(l["from_step"], l["to_step"]) for l in r["launches"]] == [(0, 20)]
  # evaluated again into evaluations/, exit code 0, the run's results untouched
  proc = again("--evaluate=again", "--experiment.eval.iwae_k=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.load(open(os.path.join(workdir, "evaluations", "again.json")))["evaluated_step"] == 20
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == r
  # a longer run in the same workdir continues from step 20, not from scratch
  proc = again("--experiment.train.steps=30")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Restored checkpoint at step 20" in proc.stderr
  assert "step 25/30" in proc.stderr and "step 5/30" not in proc.stderr
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["steps"] == 30  # an allowed change, recorded


def test_unknown_experiment_lists_available():
  proc = launch("--experiment=vae_mnst")
  assert proc.returncode != 0
  assert "Unknown experiment 'vae_mnst'" in proc.stderr and "vae_mnist" in proc.stderr


def test_misspelled_override_key_is_an_error_with_a_hint(tmp_path):
  proc = launch("--experiment=vae_mnist:runlocal", f"--workdir={tmp_path}",
                "--experiment.optim.learning_rate=3e-4")
  assert proc.returncode == 2
  assert "Unknown config field 'optim.learning_rate'" in proc.stderr
  assert "did you mean 'optim.lr'?" in proc.stderr and "Traceback" not in proc.stderr
  assert not os.listdir(tmp_path)


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  proc = launch("--experiment=vae_mnist:runlocal", f"--workdir={a_file}")
  assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr
  assert "Traceback" not in proc.stderr
  proc = launch("--experiment=vae_mnist:nosuchvariant")
  assert proc.returncode == 2 and "Unknown variant(s) nosuchvariant" in proc.stderr


def _launch_until(workdir, signum, *args):
  """launch.py with many steps, sent `signum` once the first progress line is out."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.Popen([sys.executable, "launch.py", "--experiment=vae_mnist:runlocal",
                           f"--workdir={workdir}", "--experiment.train.steps=100000",
                           "--experiment.train.log_every=50", "--experiment.train.checkpoint_every=100",
                           *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if "steps/s" in line:
      proc.send_signal(signum)
      break
  rest = proc.communicate(timeout=300)[1]
  return proc.returncode, "".join(lines) + rest


def test_exit_codes_tell_preempted_from_interrupted(tmp_path):
  import signal
  rc, err = _launch_until(tmp_path / "term", signal.SIGTERM)
  assert rc == 75, err[-2000:]  # preempted: a checkpoint was saved; requeue
  saved = sorted(int(p) for p in os.listdir(tmp_path / "term" / "checkpoints") if p.isdigit())
  assert saved and f"saved a checkpoint at step {saved[-1]}" in err
  rc, err = _launch_until(tmp_path / "int", signal.SIGINT)
  assert rc == 130, err[-2000:]
  assert "Interrupted at step" in err and "rerun" in err
  assert "Traceback" not in err


def _closed_port():
  """A loopback port that nothing listens on (bound, then released)."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_dataset_that_is_not_there_fails_fast_and_writes_nothing(tmp_path):
  """A real tfds builder (cifar10, not on disk) with no way out: the HTTPS proxy is a closed
  local port, standing in for a machine without network. One line, exit 2, no download
  tried (the data dir stays empty), the workdir never created."""
  ddir, workdir = tmp_path / "tfds", tmp_path / "run"
  ddir.mkdir()
  proxy = f"http://127.0.0.1:{_closed_port()}"
  proc = launch("--experiment=vae_mnist:runlocal", "--experiment.data.name=cifar10",
                f"--workdir={workdir}", env_extra={"TFDS_DATA_DIR": str(ddir), "https_proxy": proxy},
                env_drop=("HTTPS_PROXY", "all_proxy", "ALL_PROXY"), timeout=90)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "'cifar10' is not prepared" in errors[0] and str(ddir) in errors[0]
  assert "no network" in errors[0] and "TFDS_DATA_DIR" in errors[0] and "--mock_data" in errors[0]
  assert list(ddir.iterdir()) == [] and not workdir.exists()


def test_an_experiment_file_of_the_users_own_runs_by_path(tmp_path):
  """--experiment PATH.py:ARG (absl's space-separated form) for a file outside experiments/,
  as big_vision users keep theirs; it may build on the project's experiments."""
  exp = tmp_path / "elsewhere" / "my_exp.py"
  exp.parent.mkdir()
  exp.write_text("from experiments import vae_mnist\n\n"
                 "def get_config(arg=None):\n"
                 "  c = vae_mnist.get_config(arg)\n"
                 "  c.train.steps = c.train.checkpoint_every = c.train.log_every = 4\n"
                 "  return c\n")
  workdir = tmp_path / "run"
  proc = launch("--experiment", f"{exp}:runlocal", f"--workdir={workdir}",
                "--experiment.eval.num_examples=100")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / "results.json") as f:
    r = json.load(f)
  assert r["experiment"] == "my_exp" and r["steps"] == 4
  assert r["config"]["experiment_arg"] == "runlocal" and r["config"]["eval"]["num_examples"] == 100
  proc = launch(f"--experiment={tmp_path / 'nothere.py'}")
  assert proc.returncode == 2 and "No experiment file" in proc.stderr
