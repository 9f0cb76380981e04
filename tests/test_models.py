"""Model output shapes."""
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from genimg_jax.models import vae as vae_models


@pytest.mark.parametrize("name,shape,params", [
    ("mlp_vae", (28, 28, 1), 1), ("mlp_vae", (32, 32, 3), 2),
    ("conv_vae", (28, 28, 1), 1), ("conv_vae", (32, 32, 3), 2)])
def test_vae_shapes(name, shape, params):
  mc = ml_collections.ConfigDict(dict(name=name, latent_dim=8, hidden=16, depth=2, activation="relu"))
  model = vae_models.build_vae(mc, shape, params)
  x = jnp.zeros((3, *shape))
  z = jnp.zeros((3, 8))
  variables = model.init(jax.random.PRNGKey(0), x, z)
  mean, logvar = model.apply(variables, x, method="encode")
  assert mean.shape == logvar.shape == (3, 8)
  assert model.apply(variables, z, method="decode").shape == (3, *shape, params)


def test_unknown_model_is_rejected():
  mc = ml_collections.ConfigDict(dict(name="mlp_vea", latent_dim=8, hidden=16, depth=2, activation="relu"))
  with pytest.raises(ValueError, match="Unknown model 'mlp_vea'.*mlp_vae"):
    vae_models.build_vae(mc, (28, 28, 1), 1)
