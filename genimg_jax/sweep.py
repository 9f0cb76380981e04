"""Sweeps: trials declared in experiment files, run in turn or one per job, aggregated.

An experiment module may define `get_sweep(arg=None)` returning the trials: a list of
override dicts ({"objective.beta": 0.5, "seed": 1}), built with `product`, `zip_` and
`seeds`. It may also define `REPORT = {"metrics": [...], "main": "...", "caption": "..."}`
to choose the table's columns and the plotted metric.

  python launch.py --experiment=vae_mnist_beta --sweep            # every trial in turn
  python launch.py --experiment=vae_mnist_beta --sweep --trial=3  # only trial 3 (job arrays)
  python launch.py --experiment=vae_mnist_beta --report           # tables and plot only

Trial i runs in WORKDIR/trials/<name> with its own checkpoints and results.json; a
finished trial (results.json at its train.steps) is skipped, an unfinished one
resumes. An evaluation study (evaluates(arg) -> "<workdir of a finished run>", or a
function of a trial's overrides to such a workdir, in the module) evaluates that run with
each trial's settings (another sampler, number of steps,
guidance scale) instead of training. The report writes WORKDIR/ablation.csv (one row per trial),
WORKDIR/ablation.md (mean ± std over seeds per setting, best marked, failed trials
listed) and WORKDIR/ablation.png (the main metric per factor).
"""
import csv
import io
import itertools
import math
import re
import traceback

from absl import logging
import numpy as np

from genimg_jax import files


# --- declaring trials --------------------------------------------------------------
def product(**factors):
  """Every combination: product(**{"a.b": [1, 2], "c": [3]}) -> [{"a.b": 1, "c": 3}, {"a.b": 2, "c": 3}]."""
  keys = list(factors)
  return [dict(zip(keys, values)) for values in itertools.product(*(factors[k] for k in keys))]


def zip_(**factors):
  """Paired values: zip_(**{"a": [1, 2], "b": [3, 4]}) -> [{"a": 1, "b": 3}, {"a": 2, "b": 4}]."""
  lengths = {len(v) for v in factors.values()}
  if len(lengths) > 1:
    raise ValueError(f"zip_ needs lists of one length, got {dict((k, len(v)) for k, v in factors.items())}")
  return [dict(zip(factors, values)) for values in zip(*factors.values())]


def seeds(trials, n, start=0):
  """Each trial once per seed start..start+n-1 (the seed is the last override)."""
  return [dict(t, seed=s) for t in trials for s in range(start, start + n)]


def trial_name(overrides):
  """A folder name from the overrides: objective.beta=0.5,seed=1 -> beta=0.5_seed=1."""
  parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
  return re.sub(r"[^A-Za-z0-9_.=+-]", "-", "_".join(parts)) or "default"


def apply_overrides(config, overrides):
  """Sets dotted fields of a (locked) ConfigDict; unknown fields are an error."""
  for key, value in overrides.items():
    node, *path = config, *key.split(".")
    for part in path[:-1]:
      node = node[part]
    if path[-1] not in node:
      raise ValueError(f"Sweep override {key!r}: no such config field.")
    node[path[-1]] = value
  return config


# --- running -------------------------------------------------------------------------
def _finished(trial_dir, steps):
  path = trial_dir / "results.json"
  return path.exists() and files.read_json(path).get("steps") == steps


def run(make_config, trials, workdir, only=None, evaluate=None):
  """Runs the trials (or only trial `only`) in turn. make_config() -> a fresh config.

  evaluate: the workdir of a finished run, or a function of a trial's overrides to the
  workdir of the run that trial evaluates (a study across several runs); each trial then
  evaluates it with the trial's settings (train.evaluate) into
  WORKDIR/trials/<name>/results.json instead of training.
  """
  from genimg_jax import train, workdir as workdir_lib
  try:
    from tqdm import tqdm
  except ImportError:  # pragma: no cover
    tqdm = lambda x, **k: x
  if only is not None and not 0 <= only < len(trials):
    raise ValueError(f"--trial={only} is out of range: this sweep has {len(trials)} trials (0..{len(trials) - 1}).")
  indices = range(len(trials)) if only is None else [only]
  for i in tqdm(indices, desc="trials", unit="trial"):
    overrides = trials[i]
    trial_dir = files.join(workdir, "trials", trial_name(overrides))
    config = apply_overrides(make_config(), overrides)
    if _finished(trial_dir, config.train.steps):
      logging.info("Trial %d/%d %s: finished, skipped.", i + 1, len(trials), trial_name(overrides))
      continue
    logging.info("Trial %d/%d %s", i + 1, len(trials), trial_name(overrides))
    failed = trial_dir / "failed.txt"
    try:
      if evaluate:
        source = evaluate(overrides) if callable(evaluate) else evaluate
        train.evaluate(config, source, trial_dir / "results.json")
      else:
        train.run(config, trial_dir)
      failed.unlink(missing_ok=True)
    except (train.Preempted, train.Interrupted):
      raise
    except workdir_lib.WorkdirLocked as e:  # another job of the array runs it
      logging.warning("Trial %s is running in another launch; skipped (%s).",
                      trial_name(overrides), e)
    except Exception as e:  # a failed trial is recorded and listed, the sweep goes on
      files.write_bytes(failed, f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}".encode())
      logging.error("Trial %s failed: %s", trial_name(overrides), e)


# --- reporting -----------------------------------------------------------------------
LOWER_IS_BETTER = re.compile(r"nll|fd|fid|kid|bits|loss|rec$|kl$")
NOT_RANKED = re.compile(r"nfe$|guidance$")  # settings recorded as metrics: no "best"


def _numeric_metrics(results):
  return {k: float(v) for k, v in results.get("metrics", {}).items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect(trials, workdir):
  """One row per trial: its overrides, status and numeric metrics."""
  rows = []
  for i, overrides in enumerate(trials):
    d = files.join(workdir, "trials", trial_name(overrides))
    row = {"trial": i, "name": trial_name(overrides), **overrides}
    if (d / "failed.txt").exists():
      row["status"] = "failed: " + (d / "failed.txt").read_text().splitlines()[0].strip()
    elif (d / "results.json").exists():
      r = files.read_json(d / "results.json")
      row.update(status="done", **_numeric_metrics(r), train_seconds=r.get("train_seconds"))
    else:
      row["status"] = "not run"
    rows.append(row)
  return rows


def _fmt(v):
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def report(trials, workdir, metrics=None, main=None, caption="", title="", xy=None,
           lines=None):
  """Writes ablation.csv, ablation.md and ablation.png; returns the markdown.

  The plot is `main` against the first factor, or, with xy=(metric_x, metric_y), one
  metric against another (e.g. rate against distortion), a point per setting, joined
  into one line per value of the factor `lines` if given (e.g. FD against NFE per sampler).
  """
  rows = collect(trials, workdir)
  factor_keys = [k for k in dict.fromkeys(k for t in trials for k in t) if k != "seed"]
  done = [r for r in rows if r["status"] == "done"]
  metric_keys = metrics or sorted({k for r in done for k in r if k.startswith("test/")})
  main = main or (metric_keys[0] if metric_keys else None)

  columns = list(dict.fromkeys(["trial", "name", *[k for t in trials for k in t], "status",
                                *metric_keys, "train_seconds"]))
  out = io.StringIO()
  w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
  w.writeheader()
  w.writerows(rows)
  files.write_bytes(files.join(workdir, "ablation.csv"), out.getvalue().encode())

  # group by setting (the overrides other than the seed)
  groups = {}
  for r in done:
    groups.setdefault(tuple(r.get(k) for k in factor_keys), []).append(r)
  stats = {}
  for setting, rs in groups.items():
    stats[setting] = {m: (np.mean([r[m] for r in rs if m in r]), np.std([r[m] for r in rs if m in r]),
                          len([r for r in rs if m in r])) for m in metric_keys}
  best = {}
  for m in (m for m in metric_keys if not NOT_RANKED.search(m)):
    vals = {s: v[m][0] for s, v in stats.items() if v[m][2] and not math.isnan(v[m][0])}
    if vals:
      pick = min if LOWER_IS_BETTER.search(m) else max
      best[m] = pick(vals, key=vals.get)

  text = [f"# {title or files.path(workdir).name}", ""]
  if caption:
    text += [caption, ""]
  short = [m.replace("test/", "") for m in metric_keys]
  text.append("| " + " | ".join([k.split(".")[-1] for k in factor_keys] + short + ["seeds"]) + " |")
  text.append("|" + "---|" * (len(factor_keys) + len(metric_keys) + 1))
  for setting in sorted(stats, key=_setting_order):
    cells = [_fmt(x) for x in setting]
    for m in metric_keys:
      mean, std, n = stats[setting][m]
      cell = f"{mean:.4g} ± {std:.2g}" if n else "n/a"
      cells.append(f"**{cell}**" if best.get(m) == setting else cell)
    cells.append(str(max(v[2] for v in stats[setting].values()) if metric_keys else len(groups[setting])))
    text.append("| " + " | ".join(cells) + " |")
  text += ["", "Mean ± standard deviation over seeds; **bold**: the best setting per column "
           "(lowest for NLL/FD/KID/bits/losses, highest otherwise)."]
  failed = [r for r in rows if r["status"] != "done"]
  if failed:
    text += ["", "Trials without results:", ""]
    text += [f"- trial {r['trial']} `{r['name']}`: {r['status']}" for r in failed]
  md = "\n".join(text) + "\n"
  files.write_bytes(files.join(workdir, "ablation.md"), md.encode())
  if xy and stats:
    _save(_plot_xy(stats, factor_keys, xy, lines), files.join(workdir, "ablation.png"))
  elif main and stats:
    _save(_plot(stats, factor_keys, main), files.join(workdir, "ablation.png"))
  return md


def _setting_order(setting):
  """Rows in the order of their factors' values, numbers by value (5 before 13)."""
  return tuple((0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x)) for x in setting)


def _save(fig, path):
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, dpi=120, format="png")
  plt.close(fig)
  files.write_bytes(path, buf.getvalue())


def _plot_xy(stats, factor_keys, xy, lines=None):
  """One metric against another, a point (± std on both axes) per setting; the points
  joined per value of the factor `lines` (sorted by x), else all in one line."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  mx, my = xy
  fig, ax = plt.subplots(figsize=(6, 4))
  groups = {}
  for setting, s in stats.items():
    key = setting[factor_keys.index(lines)] if lines in factor_keys else None
    groups.setdefault(key, []).append((setting, s))
  for key, pts in sorted(groups.items(), key=lambda kv: str(kv[0])):
    pts = sorted(pts, key=lambda p: p[1][mx][0] if lines else tuple(str(x) for x in p[0]))
    ax.errorbar([s[mx][0] for _, s in pts], [s[my][0] for _, s in pts],
                xerr=[s[mx][1] for _, s in pts], yerr=[s[my][1] for _, s in pts],
                marker="o", capsize=3, linestyle="-",
                label=None if key is None else f"{lines.split('.')[-1]}={key}")
    for setting, s in pts:
      label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(factor_keys, setting)
                        if k != lines)
      ax.annotate(label, (s[mx][0], s[my][0]), textcoords="offset points", xytext=(4, 4),
                  fontsize=7)
  if ax.get_legend_handles_labels()[1]:
    ax.legend(fontsize=7)
  ax.set_xlabel(mx)
  ax.set_ylabel(my)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def _plot(stats, factor_keys, metric):
  """The main metric (mean ± std) against the first factor, one line per other setting."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  lines = {}
  for setting, s in stats.items():
    lines.setdefault(setting[1:], []).append((setting[0] if setting else "", *s[metric][:2]))
  for rest, pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
    numeric = all(isinstance(p[0], (int, float)) for p in pts)
    pts = sorted(pts, key=lambda p: p[0] if numeric else str(p[0]))
    xs = [p[0] for p in pts] if numeric else [str(p[0]) for p in pts]
    label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(factor_keys[1:], rest)) or None
    ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label)
    if numeric and len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8:
      ax.set_xscale("log", base=2)
  ax.set_xlabel(factor_keys[0] if factor_keys else "")
  ax.set_ylabel(metric)
  if len(lines) > 1:
    ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig
