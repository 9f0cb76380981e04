"""Test setup: 4 fake CPU devices (set before jax is imported) and the local tfds data."""
import os
import sys

# LLVM at level 1 (as xla.ONCE_CPU_OPTIONS): the tests run each program a few times, so
# compile time is most of their time; what they compare runs under the same flags.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
                           " --xla_backend_optimization_level=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# gcsfs, when imported with this unset, probes every bucket's type over gRPC (60 s timeouts
# with retries) before each call; the storage emulator of test_gcs.py speaks the JSON API
# only. gcsfs reads the variable once, at import, so it is set before any test imports it.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_shared = os.path.join(ROOT, "..", "shared", "tensorflow_datasets")
if "TFDS_DATA_DIR" not in os.environ and os.path.isdir(_shared):
  os.environ["TFDS_DATA_DIR"] = os.path.realpath(_shared)
sys.path.insert(0, ROOT)
# Many tests compile the same small programs (in-process and in launch.py subprocesses,
# which inherit these variables): a persistent compilation cache compiles each once.
# One cache per pytest process, removed when that process exits (~14 MB a run).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="genimg_jax_xla_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def classifier_workdir(tmp_path_factory, worker_id):
  """A classifier_mnist:runlocal run (60 steps): the feature network of the sample metrics.
  Trained once per test session: the xdist workers share it (the first one trains it
  under a file lock, the others restore it)."""
  import fcntl
  import json
  from experiments import classifier_mnist
  from genimg_jax import train
  c = classifier_mnist.get_config("runlocal")
  c.experiment = "classifier_mnist"
  if worker_id == "master":  # no xdist: this process's own folder
    workdir = tmp_path_factory.mktemp("classifier")
  else:  # the session's folder, above every worker's own
    workdir = tmp_path_factory.getbasetemp().parent / "classifier"
  with open(f"{workdir}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (workdir / "results.json").exists():
      train.run(c, str(workdir))
  with open(workdir / "results.json") as f:
    assert json.load(f)["metrics"]["test/accuracy"] > 0.8  # 60 steps classify most digits
  return str(workdir)


@pytest.fixture
def runlocal_config():
  """A fresh vae_mnist:runlocal config (unlocked copy is not needed: fields exist)."""
  from experiments import vae_mnist
  c = vae_mnist.get_config("runlocal")
  c.experiment, c.experiment_arg = "vae_mnist", "runlocal"
  return c


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "xla_cpu_internals: pins XLA:CPU's compiled output under the project's CPU "
      "options (tests/test_xla_cpu.py); a jaxlib upgrade may fail these alone")


# The longest tests (each about a minute or more on the 2-core CI machine), handed out
# first: pytest-xdist gives tests to its workers in collection order, so a long test
# collected late keeps one worker busy while the other has nothing left to run.
LONGEST_FIRST = (
    "test_gcs.py::test_a_gs_workdir_survives_an_outage",
    "test_text_to_image.py::test_t2i_runlocal_end_to_end",
    "test_autoencoder.py::test_klae_then_latent_diffusion",
    "test_maskgit.py::test_maskgit_on_a_runlocal_fsq_autoencoder",
    "test_diffusion.py::test_ddpm_mnist_runlocal_end_to_end",
    "test_multihost.py::test_two_processes_match_one_process",
    "test_fault_tolerance.py::test_sigterm_then_resume_equals_uninterrupted",
    "test_disk_faults.py::test_a_full_disk",
    "test_diffusion.py::test_the_same_loss_and_bound_on_1_and_4_devices",
)


def pytest_collection_modifyitems(items):
  def rank(item):
    return next((i for i, name in enumerate(LONGEST_FIRST) if name in item.nodeid),
                len(LONGEST_FIRST))
  items.sort(key=rank)  # stable: the rest keep their order
