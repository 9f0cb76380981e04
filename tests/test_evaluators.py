"""The evaluators declared in config.evals: built before any compute, refused when the task
cannot serve them, switched off by type "none", each on its own key, no two reporting the
same name; the metrics layer imports no task. (What each evaluator measures is checked
end to end by the tasks' runlocal tests.)"""
import subprocess
import sys
import zlib

import jax
import ml_collections
import numpy as np
import pytest

from genimg_jax import configs, evaluators, tasks, train


def test_an_evaluator_its_task_cannot_serve_is_refused_before_compute(tmp_path):
  c = configs.gan_config()
  c.evals.recon = ml_collections.ConfigDict({"type": "reconstruction"})
  with pytest.raises(ValueError, match="evals.recon: the reconstruction evaluator needs a "
                     "task that has eval_params, reconstruct; the gan task has not"):
    train.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  c.evals.recon.type = "psnr"
  with pytest.raises(ValueError, match="Unknown evals.recon.type 'psnr'"):
    evaluators.from_config(c, tasks.build_task(c))


def test_type_none_switches_an_evaluator_off():
  c = configs.diffusion_config()
  c.evals.bound.type = "none"
  built = evaluators.from_config(c, tasks.build_task(c))
  assert sorted(built.evaluators) == ["sample_grid", "sample_quality"]


def test_each_evaluator_has_its_own_key_unless_its_task_fixes_it():
  rng = jax.random.PRNGKey(7)
  c = configs.vae_config()
  keys = evaluators.from_config(c, tasks.build_task(c)).keys(rng)
  np.testing.assert_array_equal(keys["bound"], rng)  # the VAE's recorded numbers' key
  np.testing.assert_array_equal(keys["sample_quality"], rng)
  np.testing.assert_array_equal(
      keys["reconstruction"], jax.random.fold_in(rng, zlib.crc32(b"reconstruction") & 0x7FFFFFFF))
  assert not np.array_equal(keys["reconstruction"], keys["sample_grid"])
  c = configs.diffusion_config()
  keys = evaluators.from_config(c, tasks.build_task(c)).keys(rng)
  for k, name in zip(jax.random.split(rng, 3), ("bound", "sample_grid", "sample_quality")):
    np.testing.assert_array_equal(keys[name], k)


class _Grids:
  """A task that only draws a grid (a stand-in: the runner is under test here)."""

  def grid_samples(self, state, rng, n):
    return np.zeros((n, 4, 4, 1), np.uint8)


def test_two_evaluators_may_not_report_the_same_name():
  c = configs.gan_config()
  c.eval.grid_size = 2
  c.evals = ml_collections.ConfigDict({"a": {"type": "sample_grid"}})
  metrics, grids = evaluators.from_config(c, _Grids())(None, None, jax.random.PRNGKey(0), True)
  assert metrics == {} and grids["samples"].shape == (2 * 5 + 1, 2 * 5 + 1, 1)
  c.evals.b = ml_collections.ConfigDict({"type": "sample_grid"})
  with pytest.raises(ValueError, match=r"Evaluator 'b' reports the grid\(s\) \['samples'\]"):
    evaluators.from_config(c, _Grids())(None, None, jax.random.PRNGKey(0), True)


def test_the_metrics_and_evaluators_import_no_task():
  code = ("import sys, genimg_jax.metrics, genimg_jax.evaluators, genimg_jax.runs; "
          "print(sorted(m for m in sys.modules if m.startswith('genimg_jax.tasks')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}, check=True)
  assert out.stdout.strip() == "[]"
