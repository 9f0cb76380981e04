"""The StyleGAN2- and BigGAN-style networks (models/stylegan.py, models/biggan.py), and the
GAN task's lazy penalties (R1, path length), truncation and orthogonal regularization."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genimg_jax import tasks
from genimg_jax.models import stylegan
from tests.test_gan import fast_jit, gan_config


def test_demodulation_gives_unit_variance_outputs_for_unit_variance_inputs():
  """Random weights and styles: each output channel of a demodulated convolution has unit
  variance away from the border; without demodulation it does not."""
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 24, 24, 32))
  w = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (8, 16))
  stds = {}
  for demod in (True, False):
    layer = stylegan.ModulatedConv(24, 3, demod)
    v = layer.init(jax.random.PRNGKey(2), x, w)
    y = layer.apply(v, x, w)[:, 1:-1, 1:-1]
    stds[demod] = np.asarray(jnp.std(y, axis=(1, 2)))  # per image and output channel
  np.testing.assert_allclose(stds[True], 1.0, atol=0.1)
  assert np.abs(stds[False] - 1.0).max() > 0.2


def test_the_mapping_networks_effective_learning_rate_follows_its_multiplier():
  """One Adam step (whose first update is lr x sign(gradient) per weight): the effective
  weights of a layer at lr_mul move lr_mul x lr / sqrt(fan_in), the stored ones lr."""
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 32))
  moves = {}
  for lr_mul in (1.0, 0.01):
    layer = stylegan.EqualDense(8, lr_mul)
    params = layer.init(jax.random.PRNGKey(1), x)["params"]
    loss = lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2)
    tx = optax.adam(1e-3)
    updates, _ = tx.update(jax.grad(loss)(params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    effective = lambda p: p["kernel"] * lr_mul / np.sqrt(32)
    moves[lr_mul] = float(jnp.median(jnp.abs(effective(new) - effective(params))))
  np.testing.assert_allclose(moves[1.0], 1e-3 / np.sqrt(32), rtol=1e-3)
  np.testing.assert_allclose(moves[0.01] / moves[1.0], 0.01, rtol=1e-3)


def _generator(**kw):
  g = stylegan.StyleGANGenerator((28, 28, 1), channels=8, w_dim=16, mapping_layers=2, **kw)
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
  v = g.init(jax.random.PRNGKey(1), z, None, train=False)
  # noise strengths and the mean of w off their initial zeros
  v = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape), v)
  return g, v, z


def test_style_mixing_switches_styles_at_the_crossover_layer():
  g, v, z = _generator()
  call = lambda method, *a: g.apply(v, *a, method=method)
  ws_a = jnp.broadcast_to(call("map", z)[:, None], (4, 8, 16))
  ws_b = jnp.broadcast_to(call("map", -z)[:, None], (4, 8, 16))
  cut = jnp.array([1, 3, 5, 8])  # 8: no mixing
  mixed = stylegan.mix_styles(ws_a, ws_b, cut)
  for i, c in enumerate(np.asarray(cut)):
    np.testing.assert_array_equal(mixed[i, :c], ws_a[i, :c])
    np.testing.assert_array_equal(mixed[i, c:], ws_b[i, c:])
  image = call("synthesize", mixed)
  # changing ws_b before the crossover changes nothing, from it on changes the image
  before = ws_b.at[:, 0].add(1.0)
  np.testing.assert_array_equal(call("synthesize", stylegan.mix_styles(ws_a, before, cut)), image)
  after = ws_b.at[:, 7].add(1.0)
  changed = np.abs(call("synthesize", stylegan.mix_styles(ws_a, after, cut)) - image).max(axis=(1, 2, 3))
  assert np.all(changed[:3] > 0) and changed[3] == 0  # the unmixed image keeps ws_a


def test_truncation_at_psi_1_is_the_identity_and_at_psi_0_the_mean_ws_image():
  g, v, z = _generator()
  call = lambda method, *a, **kw: g.apply(v, *a, method=method, **kw)
  plain = call("synthesize", jnp.broadcast_to(call("map", z)[:, None], (4, 8, 16)))
  np.testing.assert_array_equal(call("__call__", z, None, train=False, truncation_psi=1.0), plain)
  at_0 = call("__call__", z, None, train=False, truncation_psi=0.0)
  w_avg = v["batch_stats"]["w_avg"]
  mean_image = call("synthesize", jnp.broadcast_to(w_avg, (1, 8, 16)))
  np.testing.assert_allclose(at_0, jnp.broadcast_to(mean_image, at_0.shape), atol=1e-5)
  assert float(jnp.abs(plain - at_0).max()) > 1e-3


def test_the_running_mean_of_w_and_the_noise_inputs_in_training():
  g, v, z = _generator(mixing_prob=0.0)
  run = lambda rngs: g.apply(v, z, None, train=True, mutable=["batch_stats"], rngs=rngs)
  x1, upd = run({"noise": jax.random.PRNGKey(3)})
  w = g.apply(v, z, method="map")
  np.testing.assert_allclose(upd["batch_stats"]["w_avg"],
                             jnp.mean(w, 0) + 0.995 * (v["batch_stats"]["w_avg"] - jnp.mean(w, 0)),
                             rtol=1e-5, atol=1e-6)
  x2, _ = run({"noise": jax.random.PRNGKey(4)})
  assert float(jnp.abs(x1 - x2).max()) > 0  # other noise, another image
  x3, _ = run({})
  np.testing.assert_allclose(x3, g.apply(v, z, None, train=False), atol=1e-6)  # no noise: eval's


def test_minibatch_stddev_is_the_groups_standard_deviation():
  x = jnp.arange(8 * 2 * 2 * 3, dtype=jnp.float32).reshape(8, 2, 2, 3) ** 1.5
  out = stylegan.minibatch_stddev(x, 4)
  assert out.shape == (8, 2, 2, 4)
  np.testing.assert_array_equal(out[..., :3], x)
  for i in range(8):  # image i is in the group of images i % 2, i % 2 + 2, ...
    group = x[i % 2::2]
    want = jnp.mean(jnp.sqrt(jnp.var(group, axis=0) + 1e-8))
    np.testing.assert_allclose(out[i, :, :, 3], want, rtol=1e-5)


@pytest.mark.parametrize("shape,classes", [((28, 28, 1), 0), ((32, 32, 3), 10)])
def test_stylegan_networks_shapes(shape, classes):
  c = gan_config("stylegan_mnist").model
  c.num_classes = classes
  from genimg_jax.models import gan as gan_models
  g, d = gan_models.build_gan(c, shape)
  z = jnp.zeros((4, c.latent_dim))
  y = jnp.arange(4) if classes else None
  gv = jax.jit(functools.partial(g.init, train=False))(jax.random.PRNGKey(0), z, y)
  x = jax.eval_shape(functools.partial(g.apply, train=False), gv, z, y)
  assert x.shape == (4, *shape)
  dv = jax.eval_shape(functools.partial(d.init, train=False), jax.random.PRNGKey(1), x, y)
  out = jax.eval_shape(functools.partial(d.apply, train=False), dv, x, y)
  assert out.shape == (4,)


def test_a_lazy_penalty_enters_every_kth_d_step_weighted_k():
  c = gan_config()
  c.gan.penalty, c.gan.loss, c.gan.penalty_weight, c.gan.penalty_every = "r1", "wasserstein", 7.0, 2
  task = tasks.build_task(c)
  state = fast_jit(task.init_state)(jax.random.PRNGKey(0))
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (64, 28, 28, 1), minval=-1, maxval=1),
           "label": jnp.zeros((64,), jnp.int32)}
  step = fast_jit(task.train_step)
  state, m0 = jax.device_get(step(state, batch, jax.random.PRNGKey(2)))  # D step 0: on
  _, m1 = jax.device_get(step(state, batch, jax.random.PRNGKey(2)))      # D step 1: off
  assert float(m0["r1"]) > 0 and float(m1["r1"]) == 0
  np.testing.assert_allclose(m0["d_loss"], m0["d_fake"] - m0["d_real"] + 2 * 7.0 * m0["r1"],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m1["d_loss"], m1["d_fake"] - m1["d_real"], rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="gan.truncation_psi applies to the stylegan generator"):
    c.gan.penalty_every, c.gan.truncation_psi = 1, 0.7
    tasks.build_task(c)


def test_the_lazy_path_length_term_enters_every_kth_g_step_weighted_k():
  c = gan_config("stylegan_mnist")
  c.gan.pl_weight, c.gan.pl_every = 3.0, 2
  task = tasks.build_task(c)
  state = fast_jit(task.init_state)(jax.random.PRNGKey(0))
  assert float(state.batch_stats["pl_mean"]) == 0.0
  term_at = fast_jit(lambda step, mean: task.path_length_term(
      state.params["g"], state.batch_stats["g"], step, mean, jax.random.PRNGKey(1)))
  term, pl, mean = jax.device_get(term_at(jnp.int32(4), jnp.float32(0.5)))  # on
  assert float(pl) > 0
  np.testing.assert_allclose(term, 2 * 3.0 * pl, rtol=1e-6)
  assert float(mean) != 0.5  # moved towards the mean length
  np.testing.assert_array_equal(jax.device_get(term_at(jnp.int32(5), jnp.float32(0.5))),
                                (0.0, 0.0, 0.5))  # off: nothing, the running mean kept
  with pytest.raises(ValueError, match="applies to the stylegan generator"):
    c = gan_config()
    c.gan.pl_weight = 2.0
    tasks.build_task(c)


# --- BigGAN (models/biggan.py) ---------------------------------------------------------
def test_conditional_batchnorm_uses_the_classs_gain_and_bias():
  from genimg_jax.models import biggan
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 3, 4)) * 2 + 1
  y = jnp.array([0, 1, 2, 0, 1, 2])
  cond = jax.nn.one_hot(y, 3)
  cbn = biggan.ConditionalBatchNorm()
  v = cbn.init(jax.random.PRNGKey(1), x, cond, True)
  gain = jax.random.normal(jax.random.PRNGKey(2), (3, 4))
  bias = jax.random.normal(jax.random.PRNGKey(3), (3, 4))
  v = {**v, "params": {"gain": {"kernel": gain}, "bias": {"kernel": bias}}}
  out, _ = cbn.apply(v, x, cond, True, mutable=["batch_stats"])
  mean, var = jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))
  normalized = (x - mean) / jnp.sqrt(var + 1e-5)
  want = normalized * (1 + gain[y])[:, None, None, :] + bias[y][:, None, None, :]
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_orthogonal_regularization_is_zero_for_an_orthogonal_matrix():
  from genimg_jax.objectives import gan as gan_obj
  q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(0), (12, 12)))
  conv = q[:, :5].reshape(2, 2, 3, 5)  # a conv kernel whose 5 filters are orthonormal
  params = {"Dense_0": {"kernel": q, "bias": jnp.ones(12)}, "Conv_0": {"kernel": conv},
            "ConditionalBatchNorm_0": {"gain": {"kernel": jnp.ones((4, 4))}}}
  assert float(gan_obj.orthogonal_penalty(params)) < 1e-10
  params["Conv_0"]["kernel"] = 3.0 * conv  # BigGAN's form leaves the filters' norms free
  assert float(gan_obj.orthogonal_penalty(params)) < 1e-8
  params["Conv_0"]["kernel"] = jax.random.normal(jax.random.PRNGKey(1), conv.shape)
  assert float(gan_obj.orthogonal_penalty(params)) > 1e-3


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_biggan_networks_shapes_and_truncated_z(shape):
  from genimg_jax.models import gan as gan_models
  c = gan_config("biggan_mnist")
  g, d = gan_models.build_gan(c.model, shape)
  z = jnp.zeros((4, c.model.latent_dim))
  y = jnp.arange(4)
  gv = jax.eval_shape(functools.partial(g.init, train=False), jax.random.PRNGKey(0), z, y)
  x = jax.eval_shape(functools.partial(g.apply, train=False), gv, z, y)
  assert x.shape == (4, *shape)
  dv = jax.eval_shape(functools.partial(d.init, train=False), jax.random.PRNGKey(1), x, y)
  assert jax.eval_shape(functools.partial(d.apply, train=False), dv, x, y).shape == (4,)
  c.gan.z_truncation = 0.5
  z = tasks.build_task(c).eval_z(jax.random.PRNGKey(2), 1000)
  assert float(jnp.abs(z).max()) <= 0.5 and float(jnp.std(z)) > 0.2
  c.model.latent_dim = 13
  with pytest.raises(ValueError, match="latent_dim must be divisible by 3"):
    gan_models.build_gan(c.model, (28, 28, 1))
