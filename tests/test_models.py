"""Model output shapes."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genimg_jax.models import vae as vae_models


@pytest.mark.parametrize("name,shape,params", [
    ("mlp_vae", (28, 28, 1), 1), ("mlp_vae", (32, 32, 3), 2),
    ("conv_vae", (28, 28, 1), 1), ("conv_vae", (32, 32, 3), 2)])
def test_vae_shapes(name, shape, params):
  mc = ml_collections.ConfigDict(dict(name=name, latent_dim=8, hidden=16, depth=2, activation="relu", dtype="float32"))
  model = vae_models.build_vae(mc, shape, params)
  x = jnp.zeros((3, *shape))
  z = jnp.zeros((3, 8))
  variables = model.init(jax.random.PRNGKey(0), x, z)
  mean, logvar = model.apply(variables, x, method="encode")
  assert mean.shape == logvar.shape == (3, 8)
  assert model.apply(variables, z, method="decode").shape == (3, *shape, params)


def test_unknown_model_is_rejected():
  mc = ml_collections.ConfigDict(dict(name="mlp_vea", latent_dim=8, hidden=16, depth=2, activation="relu", dtype="float32"))
  with pytest.raises(ValueError, match="Unknown model 'mlp_vea'.*mlp_vae"):
    vae_models.build_vae(mc, (28, 28, 1), 1)


@pytest.mark.parametrize("method,features", [("conv", 1), ("conv", 16), ("phases", 1), ("phases", 16), ("scatter", 1), ("scatter", 16), (None, 1), (None, 16)])
def test_fast_transposed_conv_equals_flax_conv_transpose(method, features):
  import flax.linen as nn
  import numpy as np
  from genimg_jax.models.layers import ConvTranspose4x4s2, auto_method
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 5, 16))  # None: scatter for 1 feature, phases for 16
  assert auto_method(16, 1) == "scatter" and auto_method(16, 16) == "phases"
  ref = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")
  params = ref.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda v: jax.random.normal(jax.random.PRNGKey(2), v.shape), params)
  want = ref.apply(params, x)
  fast = ConvTranspose4x4s2(features, method=method)
  got = fast.apply(params, x)
  assert got.shape == want.shape == (2, 14, 10, features)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  g_want = jax.grad(loss(ref.apply), argnums=(0, 1))(params, x)
  g_got = jax.grad(loss(fast.apply), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4), g_got, g_want)


@pytest.mark.parametrize("name", ["mlp_vae", "conv_vae"])
def test_bfloat16_compute_keeps_float32_params_and_outputs(name):
  cfg = lambda dtype: ml_collections.ConfigDict(
      dict(name=name, latent_dim=8, hidden=16, depth=2, activation="relu", dtype=dtype))
  f32, bf16 = vae_models.build_vae(cfg("float32"), (28, 28, 1), 1), vae_models.build_vae(cfg("bfloat16"), (28, 28, 1), 1)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
  z = jax.random.normal(jax.random.PRNGKey(2), (3, 8))
  params = f32.init(jax.random.PRNGKey(0), x, z)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16.init(jax.random.PRNGKey(0), x, z)))
  (m32, _), out32 = f32.apply(params, x, z)
  (m16, _), out16 = bf16.apply(params, x, z)
  assert m16.dtype == out16.dtype == jnp.float32
  assert not np.array_equal(np.asarray(out16), np.asarray(out32))  # really computed in bf16
  np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.abs(out32).max()) + 1e-3)
  with pytest.raises(ValueError, match="Unknown model.dtype 'fp16'"):
    vae_models.build_vae(cfg("fp16"), (28, 28, 1), 1)


@pytest.mark.parametrize("method,k,features", [(None, 3, 1), ("scatter", 4, 2), (None, 3, 16)])
def test_conv_equals_flax_conv(method, k, features):
  """Values, both gradients and parameter names; None picks scatter for 1 feature from 16
  channels (the VAE decoder's output layer), conv for 16."""
  import flax.linen as nn
  from genimg_jax.models.layers import Conv, conv_method
  assert conv_method(16, 1, 3) == "scatter" and conv_method(16, 16, 3) == "conv"
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 16))
  ref = nn.Conv(features, (k, k), padding="SAME")
  params = ref.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda v: jax.random.normal(jax.random.PRNGKey(2), v.shape), params)
  fast = Conv(features, k, method=method)
  assert jax.tree.map(jnp.shape, fast.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
  want, got = ref.apply(params, x), fast.apply(params, x)
  assert got.shape == want.shape == (2, 7, 6, features)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  g_want = jax.jit(jax.grad(loss(ref.apply), argnums=(0, 1)))(params, x)
  g_got = jax.jit(jax.grad(loss(fast.apply), argnums=(0, 1)))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4), g_got, g_want)

  class Two(nn.Module):  # auto-named as nn.Conv: a network's parameter tree (and checkpoints) unchanged
    @nn.compact
    def __call__(self, x):
      return Conv(4)(nn.Conv(4, (3, 3))(x))
  assert set(jax.eval_shape(Two().init, jax.random.PRNGKey(0), x)["params"]) == {"Conv_0", "Conv_1"}


@pytest.mark.parametrize("k,shape,features", [
    (4, (2, 28, 14, 3), 4), (4, (2, 28, 28, 1), 16), (4, (2, 7, 6, 3), 4),
    (3, (2, 14, 7, 2), 4), (3, (1, 5, 6, 1), 4)])
def test_fast_strided_conv_equals_flax_conv(k, shape, features):
  """Values and both gradients. k=4 on even sizes takes the transposed-convolution input
  gradient (phases; scatter for 1 input channel and 16 features), the rest the patches one."""
  import flax.linen as nn
  from genimg_jax.models.layers import StridedConv
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ref = nn.Conv(features, (k, k), strides=(2, 2), padding="SAME")
  params = ref.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda v: jax.random.normal(jax.random.PRNGKey(2), v.shape), params)
  want = ref.apply(params, x)
  got = StridedConv(features, k).apply(params, x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  # and the same gradients (what training uses)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  g_want = jax.grad(loss(ref.apply), argnums=(0, 1))(params, x)
  g_got = jax.grad(loss(StridedConv(features, k).apply), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4), g_got, g_want)
