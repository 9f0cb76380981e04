"""Sweep helpers, a two-trial runlocal sweep end to end, --trial, and the report."""
import csv
import json
import os
import subprocess
import sys

import pytest

from genimg_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_product_zip_seeds():
  assert sweep.product(**{"a.b": [1, 2], "c": ["x"]}) == [{"a.b": 1, "c": "x"}, {"a.b": 2, "c": "x"}]
  assert sweep.zip_(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(ValueError, match="one length"):
    sweep.zip_(a=[1, 2], b=[3])
  assert sweep.seeds([{"a": 1}], 2) == [{"a": 1, "seed": 0}, {"a": 1, "seed": 1}]
  assert sweep.trial_name({"objective.beta": 0.5, "seed": 1}) == "beta=0.5_seed=1"


def test_apply_overrides_rejects_unknown_fields(runlocal_config):
  sweep.apply_overrides(runlocal_config, {"objective.beta": 2.0})
  assert runlocal_config.objective.beta == 2.0
  with pytest.raises(ValueError, match="no such config field"):
    sweep.apply_overrides(runlocal_config, {"objective.betta": 2.0})


def test_report_marks_best_and_lists_failures(tmp_path):
  trials = sweep.seeds(sweep.product(**{"objective.beta": [1.0, 2.0]}), 2) + [{"objective.beta": 9.0, "seed": 0}]
  for t, nll in zip(trials, [90.0, 92.0, 88.0, 88.5]):
    d = tmp_path / "trials" / sweep.trial_name(t)
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"steps": 1, "metrics": {"test/nll": nll, "test/kl": 1.0}}))
  d = tmp_path / "trials" / sweep.trial_name(trials[-1])
  d.mkdir(parents=True)
  (d / "failed.txt").write_text("FloatingPointError: boom\n")
  md = sweep.report(trials, str(tmp_path), metrics=["test/nll"])
  assert "| 1 | 91 ± 1 | 2 |" in md and "| 2 | **88.25 ± 0.25** | 2 |" in md
  assert "trial 4 `beta=9.0_seed=0`: failed: FloatingPointError: boom" in md
  rows = list(csv.DictReader(open(tmp_path / "ablation.csv")))
  assert len(rows) == 5 and rows[4]["status"].startswith("failed")
  assert (tmp_path / "ablation.png").stat().st_size > 1000


def test_report_plots_one_line_per_value_of_a_factor(tmp_path, monkeypatch):
  """FD against NFE per sampler: rows in numeric order, a line per sampler, NFE not ranked."""
  trials = sweep.product(**{"eval.sampler": ["ddim", "heun"], "eval.sample_steps": [5, 13]})
  for t in trials:
    d = tmp_path / "trials" / sweep.trial_name(t)
    d.mkdir(parents=True)
    nfe = t["eval.sample_steps"] * (2 if t["eval.sampler"] == "heun" else 1)
    (d / "results.json").write_text(json.dumps({"metrics": {"test/nfe": nfe, "test/fd": 100 / nfe}}))
  figures = []
  original = sweep._plot_xy
  monkeypatch.setattr(sweep, "_plot_xy", lambda *a: figures.append(original(*a)) or figures[-1])
  md = sweep.report(trials, str(tmp_path), metrics=["test/nfe", "test/fd"], xy=("test/nfe", "test/fd"),
                    lines="eval.sampler")
  rows = [l for l in md.splitlines() if l.startswith("| ddim") or l.startswith("| heun")]
  assert [r.split(" | ")[1] for r in rows] == ["5", "13", "5", "13"]
  assert "**" not in rows[-1].split(" | ")[2]  # the largest NFE is no "best"
  assert figures[0].axes[0].get_legend_handles_labels()[1] == ["sampler=ddim", "sampler=heun"]


def _launch(*args):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)


def test_runlocal_sweep_end_to_end_with_skip_and_trial(tmp_path):
  workdir = str(tmp_path)
  # --trial runs one trial only
  p = _launch("--experiment=vae_mnist_beta:runlocal", f"--workdir={workdir}", "--sweep", "--trial=1")
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.exists(tmp_path / "trials" / "beta=2.0" / "results.json")
  assert not os.path.exists(tmp_path / "trials" / "beta=0.5")
  # the full sweep skips the finished trial and runs the other, then reports
  p = _launch("--experiment=vae_mnist_beta:runlocal", f"--workdir={workdir}", "--sweep")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "beta=2.0: finished, skipped" in p.stderr
  assert os.path.exists(tmp_path / "trials" / "beta=0.5" / "results.json")
  for f in ("ablation.csv", "ablation.md", "ablation.png"):
    assert os.path.exists(tmp_path / f), f
  md = open(tmp_path / "ablation.md").read()
  assert "| 0.5 |" in md and "| 2 |" in md and "Trials without results" not in md
  with open(tmp_path / "trials" / "beta=2.0" / "results.json") as f:
    assert json.load(f)["config"]["objective"]["beta"] == 2.0
  # --trial out of range: the check --trial=1 passed above (in-process: a third launch
  # would cost ~10 s of process start for one error message)
  with pytest.raises(ValueError, match=r"--trial=7 is out of range: this sweep has 2 trials"):
    sweep.run(lambda: None, [{}, {}], workdir, only=7)
