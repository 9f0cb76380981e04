"""Every experiment module: get_config(arg), a runlocal variant, a docstring with its command
and its expected result, equal to its README row."""
import importlib
import pathlib
import re

import pytest

import launch
from genimg_jax import train

NAMES = launch.available_experiments()


def test_experiments_are_listed():
  assert {"vae_mnist", "vae_mnist_conv", "gan_mnist", "classifier_mnist"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_experiment_module_contract(name):
  mod = importlib.import_module(f"experiments.{name}")
  assert f"python launch.py --experiment={name}" in mod.__doc__
  full, local = mod.get_config(), mod.get_config("runlocal")
  assert local.train.steps < full.train.steps
  with pytest.raises(ValueError, match="Unknown variant"):
    mod.get_config("no_such_variant")


def test_vae_mnist_conv_runlocal_trains(tmp_path):
  from experiments import vae_mnist_conv
  c = vae_mnist_conv.get_config("runlocal")
  c.experiment = "vae_mnist_conv"
  r = train.run(c, str(tmp_path))
  assert r["metrics"]["test/nll"] < 543  # below the untrained model's ~543 nats
  assert r["config"]["model"]["name"] == "conv_vae"


def _readme_rows():
  """{experiment: (headline, time)} from the README's experiment table."""
  text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  rows = re.findall(r"^\| `(\w+)` \|[^|]*\|([^|]*)\|([^|]*)\|$", text, re.M)
  return {name: (headline.strip(), time.strip()) for name, headline, time in rows}


def test_readme_has_one_row_per_experiment():
  rows = _readme_rows()
  assert sorted(rows) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_states_the_readme_row(name):
  headline, time = _readme_rows()[name]
  expected = f"Expected: {headline}" + (f"; {time}" if time else "") + "."
  doc = " ".join(importlib.import_module(f"experiments.{name}").__doc__.split())
  assert expected in doc, f"{name}: the docstring should say {expected!r} (its README row)"
