"""2 processes x 2 CPU devices (jax.distributed on localhost) vs 1 process x 4 devices."""
import os
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _loss_curve(workdir):
  import glob
  import tensorflow as tf
  curve = {}
  for f in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
    for e in tf.compat.v1.train.summary_iterator(f):
      for v in e.summary.value:
        if v.tag == "train/loss":
          curve[e.step] = tf.make_ndarray(v.tensor).item() if v.HasField("tensor") else v.simple_value
  return [curve[k] for k in sorted(curve)]


def _start(workdir, nproc, ndev):
  """The worker processes of one run (nproc processes x ndev devices), started."""
  port = str(_free_port())
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = []
  for i in range(nproc):  # output to a file: a full pipe would stall a worker
    with open(f"{workdir}.{i}.log", "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, os.path.join(HERE, "multihost_worker.py"), workdir, str(i), str(nproc),
           port, str(ndev)], env=env, stdout=log, stderr=subprocess.STDOUT))
    procs[-1].log = log.name
  return procs


def _finish(procs):
  for p in procs:
    p.wait(timeout=600)
    with open(p.log) as f:
      assert p.returncode == 0, f.read()[-3000:]


def test_two_processes_match_one_process(tmp_path):
  # the runs at once: a worker of the two-process run waits on the other at each collective
  one, two = _start(str(tmp_path / "one"), 1, 4), _start(str(tmp_path / "two"), 2, 2)
  _finish(one + two)
  import json
  with open(tmp_path / "two" / "results.json") as f:
    devices = json.load(f)["devices"]
  assert devices["processes"] == 2 and devices["count"] == 4 and devices["local_count"] == 2
  one, two = _loss_curve(str(tmp_path / "one")), _loss_curve(str(tmp_path / "two"))
  assert len(one) == len(two) == 6
  np.testing.assert_allclose(two, one, rtol=1e-5)
  # only process 0 wrote the records
  assert os.path.exists(tmp_path / "two" / "results.json")
  assert len(os.listdir(tmp_path / "two" / "tensorboard")) == 1
