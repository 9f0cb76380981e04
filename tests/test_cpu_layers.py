"""The CPU forms of the convolutions (models/cpu_layers.py) compute what Flax's modules do:
values, both gradients, parameter names, for every form and the shapes the models use."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax.models import cpu_layers


def _random_params(ref, x):
  params = jax.eval_shape(ref.init, jax.random.PRNGKey(1), x)
  return jax.tree.map(lambda v: jax.random.normal(jax.random.PRNGKey(2), v.shape), params)


def _assert_same_function(ref, fast, x):
  """Same parameter shapes (and names), values and both gradients (each side compiled:
  eagerly, each of its ops compiles on its own)."""
  params = _random_params(ref, x)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(fast.init, jax.random.PRNGKey(1), x))
          == jax.tree.map(jnp.shape, params))
  want, got = jax.jit(ref.apply)(params, x), jax.jit(fast.apply)(params, x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  grad = lambda f: jax.jit(jax.grad(loss(f), argnums=(0, 1)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4),
               grad(fast.apply)(params, x), grad(ref.apply)(params, x))


@pytest.mark.parametrize("features", [1, 16])  # scatter for 1 feature from 16 channels, else phases
def test_conv_transpose_4x4s2_equals_flax(features):
  assert cpu_layers.transpose_method(16, 1) == "scatter"
  assert cpu_layers.transpose_method(16, 16) == "phases"
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 5, 16))
  _assert_same_function(nn.ConvTranspose(features, (4, 4), strides=(2, 2)),
                        cpu_layers.ConvTranspose(features, (4, 4), strides=(2, 2)), x)


@pytest.mark.parametrize("method", ["phases", "scatter"])
def test_each_transposed_form_equals_lax(method):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 8, 3))
  want = jax.lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(cpu_layers.conv_transpose_4x4s2(x, k, method), want,
                             atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k,features", [(3, 1), (4, 2), (3, 16)])
def test_stride_1_conv_equals_flax(k, features):
  """scatter for few features (the VAE decoder's output layer), XLA's conv for 16."""
  assert cpu_layers.conv_method(16, 1, 3) == "scatter" and cpu_layers.conv_method(16, 16, 3) == "conv"
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 16))
  _assert_same_function(nn.Conv(features, (k, k)), cpu_layers.Conv(features, (k, k)), x)


@pytest.mark.parametrize("k,shape,features", [
    (4, (2, 28, 14, 3), 4), (4, (2, 28, 28, 1), 16), (4, (2, 7, 6, 3), 4),
    (3, (2, 14, 7, 2), 4), (3, (1, 5, 6, 1), 4)])
def test_strided_conv_equals_flax(k, shape, features):
  """k=4 on even sizes takes the transposed-convolution input gradient, the rest the
  patches one."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  _assert_same_function(nn.Conv(features, (k, k), strides=2),
                        cpu_layers.Conv(features, (k, k), strides=2), x)


def test_cpu_forms_take_flax_names():
  """Auto-named as Flax's modules, so a checkpoint moves between model.conv_impl forms."""
  class Net(nn.Module):
    conv: type
    conv_transpose: type

    @nn.compact
    def __call__(self, x):
      x = self.conv(4, (3, 3), strides=2)(nn.Conv(4, (3, 3))(x))
      return self.conv_transpose(2, (4, 4), strides=(2, 2))(x)

  x = jnp.zeros((1, 8, 8, 1))
  trees = [jax.tree.map(jnp.shape, jax.eval_shape(Net(c, t).init, jax.random.PRNGKey(0), x))
           for c, t in ((nn.Conv, nn.ConvTranspose), (cpu_layers.Conv, cpu_layers.ConvTranspose))]
  assert trees[0] == trees[1]
  assert set(trees[0]["params"]) == {"Conv_0", "Conv_1", "ConvTranspose_0"}


@pytest.mark.parametrize("shape,groups", [((2, 7, 6, 16), 4), ((2, 5, 5, 8), 8), ((3, 4, 4, 6), 1)])
def test_group_norm_equals_flax(shape, groups):
  """The per-channel scale-and-shift form with statistics summed over H, W first: values
  and gradients of nn.GroupNorm, for groups of several channels, of one, and one group;
  the input off zero so that the variance is a difference of large terms."""
  x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), shape)
  _assert_same_function(nn.GroupNorm(num_groups=groups), cpu_layers.GroupNorm(num_groups=groups),
                        x)


@pytest.mark.parametrize("k", [1, 3])
def test_same_conv_equals_lax_to_the_second_derivative(k):
  """same_conv's written gradients, and the gradient of its gradient (R1's), are lax's."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 5))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, 5, 8))
  lax_conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  f = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  np.testing.assert_allclose(cpu_layers.same_conv(x, w), lax_conv(x, w), atol=1e-4, rtol=1e-4)
  for a, b in zip(jax.grad(f(cpu_layers.same_conv), (0, 1))(x, w),
                  jax.grad(f(lax_conv), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  r1 = lambda conv: lambda w: jnp.sum(jax.grad(f(conv))(x, w) ** 2)
  np.testing.assert_allclose(jax.grad(r1(cpu_layers.same_conv))(w), jax.grad(r1(lax_conv))(w),
                             atol=1e-3, rtol=1e-4)


def test_conv_with_written_gradients_equals_flax():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 16))
  _assert_same_function(nn.Conv(16, (3, 3)), cpu_layers.Conv(16, (3, 3), written_gradients=True),
                        x)
