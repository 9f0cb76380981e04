"""The models: output shapes, compute dtypes, and plain Flax (forward-mode autodiff works)."""
import functools

import flax.linen as nn
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
  mc = ml_collections.ConfigDict(dict(name=name, latent_dim=8, mlp_units=16, channels=16, depth=2, activation="relu", dtype="float32", conv_impl="auto"))
  model = vae_models.build_vae(mc, shape, params)
  x = jnp.zeros((3, *shape))
  z = jnp.zeros((3, 8))
  # jax.eval_shape: shapes only, nothing is compiled
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, z)
  mean, logvar = jax.eval_shape(lambda v, x: model.apply(v, x, method="encode"), variables, x)
  assert mean.shape == logvar.shape == (3, 8)
  decoded = jax.eval_shape(lambda v, z: model.apply(v, z, method="decode"), variables, z)
  assert decoded.shape == (3, *shape, params)


def test_unknown_model_is_rejected():
  mc = ml_collections.ConfigDict(dict(name="mlp_vea", latent_dim=8, mlp_units=16, channels=16, depth=2, activation="relu", dtype="float32", conv_impl="auto"))
  with pytest.raises(ValueError, match="Unknown model 'mlp_vea'.*mlp_vae"):
    vae_models.build_vae(mc, (28, 28, 1), 1)


@pytest.mark.parametrize("name", ["mlp_vae", "conv_vae"])
def test_bfloat16_compute_keeps_float32_params_and_outputs(name):
  cfg = lambda dtype: ml_collections.ConfigDict(
      dict(name=name, latent_dim=8, mlp_units=16, channels=16, depth=2, activation="relu", dtype=dtype, conv_impl="auto"))
  f32, bf16 = vae_models.build_vae(cfg("float32"), (28, 28, 1), 1), vae_models.build_vae(cfg("bfloat16"), (28, 28, 1), 1)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
  z = jax.random.normal(jax.random.PRNGKey(2), (3, 8))
  params = jax.jit(f32.init)(jax.random.PRNGKey(0), x, z)  # compiled: eagerly, each op alone
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.PRNGKey(0), x, z)))
  (m32, _), out32 = jax.jit(f32.apply)(params, x, z)
  (m16, _), out16 = jax.jit(bf16.apply)(params, x, z)
  assert m16.dtype == out16.dtype == jnp.float32
  assert not np.array_equal(np.asarray(out16), np.asarray(out32))  # really computed in bf16
  np.testing.assert_allclose(out16, out32, atol=0.05 * float(jnp.abs(out32).max()) + 1e-3)
  with pytest.raises(ValueError, match="Unknown model.dtype 'fp16'"):
    vae_models.build_vae(cfg("fp16"), (28, 28, 1), 1)


def _custom_vjp_calls(closed_jaxpr):
  """The custom_vjp calls anywhere in a jaxpr, its sub-jaxprs included."""
  return [eqn for eqn in _eqns(closed_jaxpr.jaxpr) if "custom_vjp" in eqn.primitive.name]


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for v in value if isinstance(value, (tuple, list)) else [value]:
        sub = getattr(v, "jaxpr", v)  # a ClosedJaxpr's jaxpr, or a Jaxpr
        if hasattr(sub, "eqns"):
          yield from _eqns(sub)


@functools.lru_cache(maxsize=None)
def _networks(conv_impl):
  """The runlocal conv VAE, DCGAN (D, G) and a small diffusion U-Net (two resolutions) as
  functions of (params, input); initialized once per conv_impl (compiled: an eager init of
  these networks takes seconds per op kind)."""
  from experiments import ddpm_mnist, gan_mnist, vae_mnist_conv
  from genimg_jax.models import denoisers, gan as gan_models
  vc = vae_mnist_conv.get_config("runlocal").model
  gc = gan_mnist.get_config("unconditional,runlocal").model
  vc.conv_impl = gc.conv_impl = conv_impl
  vae = vae_models.build_vae(vc, (28, 28, 1), 1)
  g, d = gan_models.build_gan(gc, (28, 28, 1))
  x = jax.random.uniform(jax.random.PRNGKey(5), (2, 28, 28, 1))
  z = jax.random.normal(jax.random.PRNGKey(6), (2, vc.latent_dim))
  out = {}
  vp = jax.jit(vae.init)(jax.random.PRNGKey(0), x, z)
  out["conv encoder"] = (lambda p, x: vae.apply(p, x, method="encode")[0], vp, x)
  out["conv decoder"] = (lambda p, z: vae.apply(p, z, method="decode"), vp, z)
  dv = jax.jit(functools.partial(d.init, train=False))(jax.random.PRNGKey(1), x, None)
  out["DCGAN D"] = (lambda p, x: d.apply(p, x, None, train=False), dv, x)
  zg = jax.random.normal(jax.random.PRNGKey(7), (2, gc.latent_dim))
  gv = jax.jit(functools.partial(g.init, train=False))(jax.random.PRNGKey(2), zg, None)
  out["DCGAN G"] = (lambda p, z: g.apply(p, z, None, train=False), gv, zg)
  uc = ddpm_mnist.get_config("runlocal").model
  uc.conv_impl, uc.channel_mults = conv_impl, (1, 2)
  unet = denoisers.build_denoiser(uc, (28, 28, 1))
  noise = jnp.array([10.0, 900.0])
  uv = jax.jit(unet.init)(jax.random.PRNGKey(8), x, noise)  # off its zero output layers:
  rng = np.random.default_rng(9)  # numpy's: one compiled jax.random.normal per shape is slow
  uv = jax.tree.map(lambda v: v + 0.05 * rng.standard_normal(v.shape, np.float32), uv)
  out["U-Net"] = (lambda p, z: unet.apply(p, z, noise), uv, x)
  return out


def test_flax_path_models_are_plain_flax_and_forward_differentiable():
  """model.conv_impl=flax: no custom_vjp in the jaxprs, and jax.jvp through each network."""
  for name, (f, params, x) in _networks("flax").items():
    assert not _custom_vjp_calls(jax.make_jaxpr(f)(params, x)), name
    tangent = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    jvp = jax.jit(lambda p, v, t, f=f: jax.jvp(lambda v: f(p, v), (v,), (t,))[1])
    dy = jvp(params, x, tangent)
    assert np.all(np.isfinite(dy)) and float(jnp.abs(dy).max()) > 0, name
  # the check can fail: the CPU forms hold custom_vjp (the strided convolutions)
  f, params, x = _networks("cpu")["DCGAN D"]
  assert _custom_vjp_calls(jax.make_jaxpr(f)(params, x))


def test_conv_impls_share_parameters_and_function():
  """A checkpoint of one conv_impl restores into the other: same tree, same outputs."""
  flax_nets, cpu_nets = _networks("flax"), _networks("cpu")
  for name in flax_nets:
    f, p, x = flax_nets[name]
    g, q, _ = cpu_nets[name]
    assert jax.tree.map(jnp.shape, p) == jax.tree.map(jnp.shape, q), name
    x = jax.random.normal(jax.random.PRNGKey(4), x.shape)
    np.testing.assert_allclose(jax.jit(g)(p, x), jax.jit(f)(p, x), atol=1e-4, rtol=1e-4,
                               err_msg=name)  # compiled: eager, each op compiles alone


def test_auto_conv_impl_is_cpu_on_a_cpu_backend():
  from genimg_jax.models import cpu_layers, layers
  assert jax.default_backend() == "cpu"
  assert layers.conv_modules("auto")["conv"] is cpu_layers.Conv
  assert layers.conv_modules("auto")["group_norm"] is cpu_layers.GroupNorm
  assert layers.conv_modules("flax") == {"conv": nn.Conv, "conv_transpose": nn.ConvTranspose,
                                         "group_norm": nn.GroupNorm}
  with pytest.raises(ValueError, match="Unknown model.conv_impl 'gpu'"):
    layers.conv_modules("gpu")


def _denoiser(name, num_classes=0, image_shape=(28, 28, 1), conv_impl="flax",
              forward_differentiable=False):
  from genimg_jax import configs
  from genimg_jax.models import denoisers
  m = configs.diffusion_config().model
  m.name, m.num_classes, m.conv_impl = name, num_classes, conv_impl
  m.channels, m.channel_mults, m.norm_groups, m.hidden_size, m.depth = 8, (1, 2), 4, 32, 2
  return denoisers.build_denoiser(m, image_shape, forward_differentiable)


@pytest.mark.parametrize("shape,patch", [((28, 28, 1), 2), ((32, 32, 3), 4)])
def test_dit_predicts_zero_at_init_in_the_images_shape_and_is_trainable(shape, patch):
  """adaLN-Zero and the zero final layer: 0 at init for any input; after random weights
  the output depends on the input, the noise level and the label, patch by patch."""
  from genimg_jax.models import dit
  model = dit.DiT(shape[-1], patch_size=patch, hidden_size=32, depth=2, num_heads=4,
                  num_classes=10)
  z = jax.random.normal(jax.random.PRNGKey(0), (3, *shape))
  noise, y = jnp.array([1.0, 500.0, 999.0]), jnp.array([0, 5, 10])
  params = jax.jit(model.init)(jax.random.PRNGKey(1), z, noise, y)
  apply = jax.jit(model.apply)
  out = apply(params, z, noise, y)
  assert out.shape == z.shape
  np.testing.assert_array_equal(out, 0.0)
  rng = np.random.default_rng(2)  # numpy's: a compiled jax.random.normal per shape is slow
  params = jax.tree.map(lambda l: 0.1 * rng.standard_normal(l.shape, np.float32), params)
  out = apply(params, z, noise, y)
  for other in (apply(params, z, noise + 100.0, y), apply(params, z, noise, (y + 1) % 11),
                apply(params, z.at[:, :patch, :patch].add(1.0), noise, y)):
    assert float(jnp.abs(other - out).max()) > 1e-3
  # the position embeddings tell the patches apart: the sin-cos of rows and of columns
  pos = np.asarray(dit.sincos_2d(4, 4, 32))
  assert pos.shape == (16, 32) and len({tuple(np.round(r, 5)) for r in pos}) == 16
  with pytest.raises(ValueError, match="multiple of model.patch_size"):
    dit.DiT(1, patch_size=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1))


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_jvp_through_the_denoisers_matches_finite_differences(name):
  """Forward-mode derivatives in the image and in the noise conditioning (what MeanFlow's
  target needs) agree with central differences, through the layer forms a forward-
  differentiating task gets on this CPU (the CPU forms without the strided convolution's
  custom VJP, which jax.jvp cannot go through; the Flax forms: the test above)."""
  model = _denoiser(name, num_classes=10, image_shape=(16, 16, 1), conv_impl="cpu",
                    forward_differentiable=True)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 1))
  noise, y = jnp.array([100.0, 700.0]), jnp.array([3, 10])
  params = jax.jit(model.init)(jax.random.PRNGKey(1), z, noise, y)
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda l: l + 0.05 * rng.standard_normal(l.shape, np.float32), params)
  f = lambda z, t: model.apply(params, z, t, y)
  assert not _custom_vjp_calls(jax.make_jaxpr(f)(z, noise))
  dz = jax.random.normal(jax.random.PRNGKey(3), z.shape)
  dt = jnp.array([1.0, -2.0])
  h = 1e-2

  @jax.jit  # one program for the three evaluations: compiled faster than run op by op
  def tangent_and_differences(z, noise):
    _, tangent = jax.jvp(f, (z, noise), (dz, dt))
    return tangent, (f(z + h * dz, noise + h * dt) - f(z - h * dz, noise - h * dt)) / (2 * h)
  tangent, numeric = tangent_and_differences(z, noise)
  scale = float(jnp.abs(tangent).max())
  assert scale > 1e-3
  np.testing.assert_allclose(tangent, numeric, atol=0.02 * scale)
