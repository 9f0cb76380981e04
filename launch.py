"""Runs an experiment: python launch.py --experiment=NAME[:ARG] [--experiment.FIELD=VALUE ...]

  python launch.py --experiment=vae_mnist
  python launch.py --experiment=vae_mnist:runlocal --workdir=/tmp/vae
  python launch.py --experiment=vae_mnist --experiment.optim.lr=3e-4
  python launch.py --list

NAME is a module experiments/NAME.py with get_config(arg=None); ARG is passed to it.
Overrides go through a locked ConfigDict, so a misspelled field is an error.
The workdir defaults to workdirs/NAME[_ARG]; rerunning the same command resumes.
Compiled programs are kept in --compilation_cache (default ~/.cache/genimg_jax/xla).
"""
import gc
import os
import sys

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments")
DEFAULT_COMPILATION_CACHE = "~/.cache/genimg_jax/xla"


def available_experiments():
  return sorted(f[:-3] for f in os.listdir(EXPERIMENTS_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def _resolve_experiment_flag(argv):
  """Rewrites --experiment=NAME[:ARG] to the module's path, which config_flags loads.

  Exits with the list of experiments when NAME is unknown.
  """
  out, name, arg = [], None, ""
  for a in argv:
    if a.startswith("--experiment="):
      spec = a.split("=", 1)[1]
      name, _, arg = spec.partition(":")
      path = name if name.endswith(".py") else os.path.join(EXPERIMENTS_DIR, name + ".py")
      if not os.path.isfile(path):
        sys.exit(f"Unknown experiment {name!r}; available: {', '.join(available_experiments())}")
      a = f"--experiment={path}" + (f":{arg}" if arg else "")
      name = os.path.basename(path)[:-3]
    out.append(a)
  return out, name, arg


if __name__ == "__main__":
  if "--list" in sys.argv:
    print("\n".join(available_experiments()))
    sys.exit(0)
  sys.argv, _NAME, _ARG = _resolve_experiment_flag(sys.argv)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "experiment", None, "Experiment: NAME[:ARG] (a module in experiments/).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: workdirs/NAME[_ARG]).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-process runs: host:port of process 0 (or JAX_COORDINATOR_ADDRESS). "
    "Not needed on TPU pod slices, SLURM or Open MPI, where JAX finds it.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the run (or JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (or JAX_PROCESS_ID).")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run every trial of the experiment's get_sweep(), "
                           "each in WORKDIR/trials/<name>, then write the ablation report.")
_TRIAL = flags.DEFINE_integer("trial", None, "With --sweep: run only trial I (for job arrays).")
_REPORT = flags.DEFINE_bool("report", False, "Only (re)write the sweep's ablation report.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_COMPILATION_CACHE),
    "Folder of JAX's persistent compilation cache, so that a rerun, a resume or a sweep's next "
    "trial loads its compiled programs instead of compiling them again; '' turns it off. "
    "Default: $JAX_COMPILATION_CACHE_DIR, else " + DEFAULT_COMPILATION_CACHE + ".")
_MOCK_DATA = flags.DEFINE_integer(
    "mock_data", 0, "If > 0: replace the dataset by N random examples of the right shapes "
    "(tfds.testing.mock_data), to check that code runs where a dataset is not on disk.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--experiment=NAME is required; available: "
                         + ", ".join(available_experiments()))
  # The garbage collector is off while jax, flax and TensorFlow are imported, and the ~430k
  # objects they leave are then frozen (kept out of every later collection): they live as
  # long as the process, but each full collection walked them all, six times during the
  # imports (0.5-0.7 s together) and once more as the interpreter shut down (~1.1 s).
  # `launch.py --experiment=vae_mnist` shortened to 2,000 steps: from the end of main to
  # the process's exit 1.34 s -> 0.19-0.23 s (2 CPU cores, 2026-11-28).
  gc.disable()
  from genimg_jax import parallel, train, writers  # after flags: importing jax/tf is slow
  gc.freeze()
  gc.enable()
  writers.quiet_library_logs()
  use_compilation_cache(_COMPILATION_CACHE.value)
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config = _CONFIG.value
  with config.unlocked():
    config.experiment, config.experiment_arg = _NAME, _ARG or ""
  workdir = _WORKDIR.value or os.path.join("workdirs", _NAME + (f"_{_ARG}" if _ARG else ""))
  if _SWEEP.value or _REPORT.value or _TRIAL.value is not None:
    return run_sweep(config, workdir)
  logging.info("Config:\n%s", config)
  try:
    if _MOCK_DATA.value:
      import tensorflow_datasets as tfds
      with tfds.testing.mock_data(num_examples=_MOCK_DATA.value):
        train.run(config, workdir)
    else:
      train.run(config, workdir)
  except train.Preempted as e:
    logging.warning("%s", e)  # a clean exit: the checkpoint is saved
  except (ValueError, train.NonFiniteLossError) as e:  # bad input, divergence: say it plainly
    sys.exit(f"Error: {e}")


def use_compilation_cache(path):
  """Turns JAX's persistent compilation cache on in `path` ('' = off), before anything compiles.

  Every program is cached, however fast it compiled (unless
  $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise): with jax's default of 1 s
  a vae_mnist launch kept only its train step of the dozen programs it compiles. Measured with
  `launch.py --experiment=vae_mnist` shortened to 1,000 steps (2 CPU cores, 2026-11-28):
  18.1 s wall with an empty cache, 13.6 s run again in a new workdir with the cache it
  left (~400 KB). A program is looked up by its HLO, so a config change that reaches
  it (a model size; train.steps, through the learning-rate schedule) compiles anew.
  Another jax or XLA version gives other keys; an entry that fails to load is a miss
  (jax warns and compiles). In a multi-process run only process 0 writes entries.
  The cache is trusted code: keep it in a folder only you can write.
  """
  import jax
  if not path:
    jax.config.update("jax_enable_compilation_cache", False)
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def run_sweep(base_config, workdir):
  """--sweep / --trial / --report for experiments that define get_sweep(arg).

  Each trial's config is the command line's (with its --experiment.* overrides)
  plus the trial's overrides.
  """
  import importlib
  from genimg_jax import sweep
  module = importlib.import_module(f"experiments.{_NAME}")
  if not hasattr(module, "get_sweep"):
    sys.exit(f"Experiment {_NAME!r} defines no get_sweep(); nothing to sweep.")
  trials = module.get_sweep(_ARG or None)
  report_opts = getattr(module, "REPORT", {})

  def make_config():
    config = base_config.copy_and_resolve_references()
    config.lock()
    return config

  if not _REPORT.value:
    sweep.run(make_config, trials, workdir, only=_TRIAL.value)
  if _TRIAL.value is None:  # a single job of an array leaves the report to --report
    md = sweep.report(trials, workdir, title=f"{_NAME} sweep", **report_opts)
    print(md)


if __name__ == "__main__":
  app.run(main)
