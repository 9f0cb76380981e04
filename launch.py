"""Runs an experiment: python launch.py --experiment=NAME[:ARG] [--experiment.FIELD=VALUE ...]

  python launch.py --experiment=vae_mnist
  python launch.py --experiment=vae_mnist:runlocal --workdir=/tmp/vae
  python launch.py --experiment=vae_mnist --experiment.optim.lr=3e-4
  python launch.py --list

NAME is a module experiments/NAME.py with get_config(arg=None), or the path of such a file
of your own anywhere (--experiment=path/to/my_exp.py:ARG); ARG is passed to it.
Overrides go through a locked ConfigDict, so a misspelled field is an error.
The workdir defaults to workdirs/NAME[_ARG]; rerunning the same command resumes.

Exit codes: 0 finished; 2 a user error (a bad flag or value, a workdir that holds another
run or is in use, a dataset that is not there), reported in one line before any compute;
75 preempted (SIGTERM: a checkpoint was saved) or the workdir's storage did not answer
within train.storage_retry_seconds (the last good checkpoint is intact): rerun to resume,
i.e. requeue; 130 interrupted (Ctrl-C); 1 any other failure (a non-finite loss, a crash).
"""
import difflib
import gc
import os
import sys

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments")
DEFAULT_COMPILATION_CACHE = "~/.cache/genimg_jax/xla"
EXIT_USER_ERROR, EXIT_PREEMPTED, EXIT_INTERRUPTED = 2, 75, 130
# Field names of other codebases (and renamed ones) that "did you mean" should map to ours.
ALIASES = {"learning_rate": ("lr",), "lr_schedule": ("schedule",), "num_steps": ("steps",),
           "total_steps": ("steps",), "batch": ("batch_size",),
           "hidden": ("mlp_units", "channels"), "d_hidden": ("d_channels",), "dataset": ("name",)}


def available_experiments():
  return sorted(f[:-3] for f in os.listdir(EXPERIMENTS_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def user_error(message):
  print(f"Error: {message}", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def resolve_experiment(argv):
  """Rewrites --experiment=NAME[:ARG] (or `--experiment NAME[:ARG]`) to the module's path,
  which config_flags loads. NAME is an experiment of experiments/ or the path of a .py file
  of the user's own, anywhere.

  Returns (argv, name, arg, path); exits with the list of experiments when NAME is unknown.
  """
  out, name, arg, path = [], None, "", None
  argv = list(argv)
  i = 0
  while i < len(argv):
    a = argv[i]
    if a == "--experiment" and i + 1 < len(argv):  # absl's space-separated form
      a = "--experiment=" + argv[i + 1]
      i += 1
    if a.startswith("--experiment="):
      spec = a.split("=", 1)[1]
      name, _, arg = spec.partition(":")
      path = name if name.endswith(".py") else os.path.join(EXPERIMENTS_DIR, name + ".py")
      if not os.path.isfile(path):
        what = f"No experiment file {name!r}" if name.endswith(".py") else f"Unknown experiment {name!r}"
        user_error(f"{what}; available: {', '.join(available_experiments())} (or the path of "
                   "a .py file with get_config(arg=None))")
      path = os.path.abspath(path)
      a = f"--experiment={path}" + (f":{arg}" if arg else "")
      name = os.path.basename(path)[:-3]
    out.append(a)
    i += 1
  return out, name, arg, path


def load_experiment(path):
  """The experiment module at `path`: experiments/NAME.py as `experiments.NAME` (so that
  experiments importing each other share one module), any other file by its path."""
  import importlib
  import importlib.util
  sys.path.insert(0, os.path.dirname(EXPERIMENTS_DIR))
  name = os.path.basename(path)[:-3]
  if os.path.dirname(os.path.abspath(path)) == EXPERIMENTS_DIR:
    return importlib.import_module(f"experiments.{name}")
  spec = importlib.util.spec_from_file_location(f"user_experiment_{name}", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def _fields(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _fields(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def check_experiment(argv, path, arg):
  """Exits with one line for an unknown variant ARG, and with a "did you mean" for an
  --experiment.FIELD that does not exist."""
  if path is None:
    return
  overrides = [a[len("--experiment."):].split("=", 1)[0] for a in argv
               if a.startswith("--experiment.")]
  module = load_experiment(path)
  if not hasattr(module, "get_config"):
    user_error(f"Experiment file {path} defines no get_config(arg=None).")
  try:
    config = module.get_config(arg or None)
  except ValueError as e:  # an unknown variant
    user_error(str(e))
  fields = list(_fields(config.to_dict()))
  for field in overrides:
    if field in fields:
      continue
    group, _, last = field.rpartition(".")
    siblings = {f.rpartition(".")[2]: f for f in fields if f.rpartition(".")[0] == group}
    alias = difflib.get_close_matches(last, list(ALIASES), n=1, cutoff=0.8)
    guesses = [siblings[a] for a in ALIASES[alias[0]] if a in siblings] if alias else []
    if not guesses:
      guesses = [siblings[g] for g in difflib.get_close_matches(last, siblings, n=3, cutoff=0.6)]
      guesses = guesses or difflib.get_close_matches(field, fields, n=3, cutoff=0.8)
    hint = f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else (
        f"; the fields of {group or 'the config'}: "
        + ", ".join(f for f in fields if f.startswith(group + ".")) if group else "")
    user_error(f"Unknown config field {field!r} in --experiment.{field}=...{hint}")


def define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file(
      "experiment", None, "Experiment: NAME[:ARG] (a module in experiments/).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output folder, local or gs://bucket/path "
                      "(default: workdirs/NAME[_ARG]).")
  flags.DEFINE_string("evaluate", None, "Only evaluate the run in the workdir (its latest "
                      "checkpoint) with this launch's eval.* and metrics.* settings, into "
                      "WORKDIR/evaluations/NAME.json; its own records stay as they are.")
  flags.DEFINE_integer("export_samples", 0, "Only write N samples of the finished run (its "
                       "latest checkpoint, this launch's eval.* settings) as PNG files, one "
                       ".npz and a JSON of what produced them, for other FID code.")
  flags.DEFINE_string("export_dir", None, "With --export_samples: the folder (default "
                      "WORKDIR/exports/step<S>_n<N>_seed<SEED>).")
  flags.DEFINE_integer("export_seed", 0, "With --export_samples: the seed of the samples "
                       "(the same run and seed give the same files).")
  flags.DEFINE_string("prompt", None, "Only sample a text-to-image run (its latest "
                      "checkpoint) for this caption into a PNG grid (default "
                      "WORKDIR/prompts/...; --export_dir names a file instead).")
  flags.DEFINE_integer("num_images", 16, "With --prompt: the images in the grid.")
  flags.DEFINE_bool("fresh", False, "Start the workdir afresh: a previous run in it is moved "
                    "aside to WORKDIR.replaced-<time> (never deleted).")
  flags.DEFINE_string("coordinator_address", "", "Multi-process runs: host:port of process 0 "
                      "(or JAX_COORDINATOR_ADDRESS). Not needed on TPU pod slices, SLURM or "
                      "Open MPI, where JAX finds it.")
  flags.DEFINE_integer("num_processes", 0, "Processes in the run (or JAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", -1, "This process's index (or JAX_PROCESS_ID).")
  flags.DEFINE_bool("sweep", False, "Run every trial of the experiment's get_sweep(), each in "
                    "WORKDIR/trials/<name>, then write the ablation report.")
  flags.DEFINE_integer("trial", None, "With --sweep: run only trial I (for job arrays).")
  flags.DEFINE_bool("report", False, "Only (re)write the sweep's ablation report.")
  flags.DEFINE_string(
      "compilation_cache", os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_COMPILATION_CACHE),
      "Folder of JAX's persistent compilation cache, so that a rerun, a resume or a sweep's "
      "next trial loads its compiled programs instead of compiling them again; '' turns it "
      "off. Default: $JAX_COMPILATION_CACHE_DIR, else " + DEFAULT_COMPILATION_CACHE + ".")
  flags.DEFINE_integer(
      "mock_data", 0, "If > 0: replace the dataset by N random examples of the right shapes "
      "(tfds.testing.mock_data), to check that code runs where a dataset is not on disk.")
  return flags.FLAGS


def parse_flags(argv):
  """absl's flag parsing, with a one-line message and exit code 2 for a bad flag."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except (flags.Error, ValueError, TypeError, AttributeError, KeyError) as e:
    user_error(f"{e}".splitlines()[0] if str(e) else type(e).__name__)


def main(argv, name, arg, path):
  from absl import flags, logging
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    user_error(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.experiment is None:
    user_error("--experiment=NAME is required; available: " + ", ".join(available_experiments()))
  # The imports leave ~430k objects that live as long as the process: with the garbage
  # collector off while they load and those objects frozen afterwards, no full collection
  # walks them (during the imports and again at exit).
  gc.disable()
  from genimg_jax import data, files, parallel, train, writers  # after flags: jax/tf load slowly
  gc.freeze()
  gc.enable()
  writers.quiet_library_logs()
  use_compilation_cache(FLAGS.compilation_cache)
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)
  config = FLAGS.experiment
  with config.unlocked():
    config.experiment, config.experiment_arg = name, arg or ""
  workdir = FLAGS.workdir or os.path.join("workdirs", name + (f"_{arg}" if arg else ""))
  try:
    logging.info("Config:\n%s", config)
    if FLAGS.sweep or FLAGS.report or FLAGS.trial is not None:
      run_sweep(config, workdir, name, arg, path, FLAGS.trial, FLAGS.report)
    elif FLAGS.export_samples:
      out = train.export_samples(config, workdir, FLAGS.export_samples, FLAGS.export_dir,
                                 FLAGS.export_seed)
      print(f"Wrote {FLAGS.export_samples} samples to {out}")
    elif FLAGS.prompt is not None:
      out = train.prompt_grid(config, workdir, FLAGS.prompt, FLAGS.num_images,
                              FLAGS.export_dir, FLAGS.export_seed)
      print(f"Wrote {FLAGS.num_images} images of {FLAGS.prompt!r} to {out}")
    elif FLAGS.evaluate:
      train.evaluate(config, workdir, files.join(workdir, "evaluations", FLAGS.evaluate + ".json"))
    elif FLAGS.mock_data:
      import tensorflow_datasets as tfds
      with tfds.testing.mock_data(num_examples=FLAGS.mock_data):
        train.run(config, workdir, fresh=FLAGS.fresh)
    else:
      train.run(config, workdir, fresh=FLAGS.fresh)
  except train.Preempted as e:
    logging.warning("%s", e)
    sys.exit(EXIT_PREEMPTED)
  except (train.Interrupted, KeyboardInterrupt) as e:
    print(f"{e}" if str(e) else "Interrupted before training began.", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
  except files.StorageUnavailable as e:  # an outage: the last good checkpoint is intact
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except train.NonFiniteLossError as e:  # divergence: a failure, said plainly
    print(f"Error: {e}", file=sys.stderr)
    sys.exit(1)
  except (ValueError, data.DatasetUnavailableError) as e:  # bad values, workdir, data, disk
    user_error(str(e))
  except OSError as e:
    from genimg_jax import checkpoint
    if not checkpoint.is_disk_full(e):
      raise
    user_error(f"No space left on device ({files.os_error(e)}). Free space and rerun the same "
               "command: it resumes from the last checkpoint.")


def use_compilation_cache(path):
  """Turns JAX's persistent compilation cache on in `path` ('' = off), before anything compiles.

  Every program is cached, however fast it compiled (unless
  $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise): jax's default of 1 s would
  keep only a launch's train step of the dozen programs it compiles. A program is looked
  up by its HLO, so a config change that reaches it (a model size; train.steps, through
  the learning-rate schedule) compiles anew; another jax or XLA version gives other keys.
  In a multi-process run only process 0 writes entries. The cache is trusted code (jax
  runs what it reads): keep it in a folder only you can write.
  """
  import jax
  if not path:
    jax.config.update("jax_enable_compilation_cache", False)
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def run_sweep(base_config, workdir, name, arg, path, trial, report_only):
  """--sweep / --trial / --report for experiments that define get_sweep(arg).

  Each trial's config is the command line's (with its --experiment.* overrides) plus the
  trial's overrides. An experiment with evaluates(arg) -> "<workdir>" is an evaluation
  study: its trials evaluate that finished run (train.evaluate) instead of training.
  """
  from genimg_jax import sweep
  module = load_experiment(path)
  if not hasattr(module, "get_sweep"):
    user_error(f"Experiment {name!r} defines no get_sweep(); nothing to sweep.")
  trials = module.get_sweep(arg or None)

  def make_config():
    config = base_config.copy_and_resolve_references()
    config.lock()
    return config

  if not report_only:
    source = module.evaluates(arg or None) if hasattr(module, "evaluates") else None
    sweep.run(make_config, trials, workdir, only=trial, evaluate=source)
  if trial is None:  # a single job of an array leaves the report to --report
    print(sweep.report(trials, workdir, title=f"{name} sweep", **getattr(module, "REPORT", {})))


if __name__ == "__main__":
  if "--list" in sys.argv:
    print("\n".join(available_experiments()))
    sys.exit(0)
  _argv, _name, _arg, _path = resolve_experiment(sys.argv)
  check_experiment(_argv, _path, _arg)
  from absl import app
  define_flags()
  app.run(lambda argv: main(argv, _name, _arg, _path), argv=_argv, flags_parser=parse_flags)
