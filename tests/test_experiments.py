"""Every experiment module: get_config(arg), a runlocal variant, a docstring with its command."""
import importlib

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
