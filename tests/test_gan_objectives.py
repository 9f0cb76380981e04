"""GAN losses and penalties against hand-computed values and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax.objectives import gan as G

D_REAL = jnp.array([2.0, -1.0])
D_FAKE = jnp.array([0.5, -3.0])


def sp(x):  # softplus in float64
  return np.log1p(np.exp(x))


def test_minimax_and_non_saturating():
  want_d = np.mean([sp(-2.0), sp(1.0)]) + np.mean([sp(0.5), sp(-3.0)])
  np.testing.assert_allclose(G.minimax_d_loss(D_REAL, D_FAKE), want_d, rtol=1e-6)
  # saturating G loss: E log(1 - D(G(z))) = -E softplus(d_fake)
  np.testing.assert_allclose(G.minimax_g_loss(D_FAKE), -np.mean([sp(0.5), sp(-3.0)]), rtol=1e-6)
  np.testing.assert_allclose(G.non_saturating_g_loss(D_FAKE), np.mean([sp(-0.5), sp(3.0)]), rtol=1e-6)


def test_hinge():
  # relu(1 - [2, -1]) = [0, 2]; relu(1 + [0.5, -3]) = [1.5, 0]
  np.testing.assert_allclose(G.hinge_d_loss(D_REAL, D_FAKE), 1.0 + 0.75, rtol=1e-6)
  np.testing.assert_allclose(G.hinge_g_loss(D_FAKE), 1.25, rtol=1e-6)


def test_wasserstein():
  np.testing.assert_allclose(G.wasserstein_d_loss(D_REAL, D_FAKE), -1.25 - 0.5, rtol=1e-6)
  d_loss, g_loss = G.gan_losses("wasserstein")
  np.testing.assert_allclose(g_loss(D_FAKE), 1.25, rtol=1e-6)


def test_least_squares():
  want_d = 0.5 * np.mean([1.0, 4.0]) + 0.5 * np.mean([0.25, 9.0])
  np.testing.assert_allclose(G.least_squares_d_loss(D_REAL, D_FAKE), want_d, rtol=1e-6)
  np.testing.assert_allclose(G.least_squares_g_loss(D_FAKE), 0.5 * np.mean([0.25, 16.0]), rtol=1e-6)


def test_unknown_loss_lists_allowed():
  with pytest.raises(ValueError, match="Unknown GAN loss 'hingee'.*hinge"):
    G.gan_losses("hingee")


def _linear_critic(w):
  return lambda x: jnp.sum(x.reshape(x.shape[0], -1) * w, axis=-1)


def test_penalties_of_a_linear_critic_match_closed_form():
  # D(x) = <w, x>: grad = w everywhere, ||grad||^2 = ||w||^2.
  w = jnp.array([3.0, 4.0, 0.0, 0.0])  # ||w|| = 5
  d = _linear_critic(w)
  real = jax.random.normal(jax.random.PRNGKey(0), (6, 2, 2, 1))
  fake = jax.random.normal(jax.random.PRNGKey(1), (6, 2, 2, 1))
  key = jax.random.PRNGKey(2)
  np.testing.assert_allclose(G.wgan_gp_penalty(d, real, fake, key), (5.0 - 1.0)**2, rtol=1e-5)
  np.testing.assert_allclose(G.dragan_penalty(d, real, fake, key), 16.0, rtol=1e-5)
  np.testing.assert_allclose(G.r1_penalty(d, real, fake, key), 25.0, rtol=1e-5)
  np.testing.assert_allclose(G.r2_penalty(d, real, fake, key), 25.0, rtol=1e-5)


def test_r1_differs_from_r2_for_a_quadratic_critic():
  d = lambda x: jnp.sum(x.reshape(x.shape[0], -1)**2, axis=-1)  # grad = 2x
  real = jnp.ones((3, 1, 1, 2))
  fake = 2 * jnp.ones((3, 1, 1, 2))
  key = jax.random.PRNGKey(0)
  np.testing.assert_allclose(G.r1_penalty(d, real, fake, key), 8.0, rtol=1e-6)   # ||2*1||^2 * 2 dims
  np.testing.assert_allclose(G.r2_penalty(d, real, fake, key), 32.0, rtol=1e-6)  # ||2*2||^2 * 2 dims


def test_the_wgan_gp_interpolates_lie_between_real_and_fake():
  """A quadratic critic D(x) = ||x||^2 / 2 has gradient x, so the penalty sees the points
  themselves: with real = fake = x every interpolate is x ((||x|| - 1)^2 whatever eps is);
  with real = 0 and fake = u they are eps u, eps ~ U(0, 1): E(eps ||u|| - 1)^2 = 1/3 at ||u|| = 2."""
  d = lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1)**2, axis=-1)
  x = jnp.tile(jnp.array([0.0, 3.0, 4.0, 0.0]).reshape(1, 2, 2, 1), (64, 1, 1, 1))  # ||x|| = 5
  np.testing.assert_allclose(G.wgan_gp_penalty(d, x, x, jax.random.PRNGKey(0)), 16.0, rtol=1e-5)
  u = jnp.tile(jnp.array([2.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2, 1), (200_000, 1, 1, 1))
  for real, fake in ((jnp.zeros_like(u), u), (u, jnp.zeros_like(u))):
    np.testing.assert_allclose(G.wgan_gp_penalty(d, real, fake, jax.random.PRNGKey(1)), 1 / 3,
                               rtol=0.01)


def test_dragan_perturbs_real_data_by_c_times_its_std():
  """D(x) = ||x||^2 / 2 on real data of one point x0 repeated (std over the batch's
  values s): the gradient at x0 + c s u, u ~ U(0, 1) per value, has norm
  ||x0 + c s u||, whose square averages ||x0||^2 + 2 c s E[u] sum(x0) + (c s)^2 E[u^2] d."""
  d = lambda x: 0.5 * jnp.sum(x.reshape(x.shape[0], -1)**2, axis=-1)
  x0 = jnp.array([1.0, -1.0, 2.0, 0.0])
  real = jnp.tile(x0.reshape(1, 4), (100_000, 1))
  s = float(jnp.std(real))
  for c in (0.5, 2.0):
    pen = float(G.dragan_penalty(d, real, real, jax.random.PRNGKey(2), c=c))
    u = np.random.default_rng(0).uniform(size=(100_000, 4))
    want = np.mean((np.linalg.norm(np.asarray(x0) + c * s * u, axis=1) - 1.0)**2)
    np.testing.assert_allclose(pen, want, rtol=0.01)


def test_path_length_of_a_linear_synthesis_matches_the_hand_computation():
  """synthesize(ws) = s * ws laid out as an image: J^T y = s * y, so the length of each
  example is s * sqrt(mean over layers of sum over w of y^2); the running mean moves by
  decay towards the mean length and is not differentiated."""
  ws = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 16))  # [B, layers, w] -> 8x8 images
  rng = jax.random.PRNGKey(1)
  y = jax.random.normal(rng, (6, 8, 8, 1)) / 8.0
  c = jnp.sqrt(jnp.mean(jnp.sum(y.reshape(6, 4, 16) ** 2, axis=2), axis=1))  # s = 1
  def penalty(s):
    synthesize = lambda ws: s * ws.reshape(6, 8, 8, 1)
    return G.path_length_penalty(synthesize, ws, 0.5, rng, decay=0.01)
  pen, mean, lengths = penalty(3.0)
  np.testing.assert_allclose(lengths, 3.0 * c, rtol=1e-5)
  want_mean = 0.5 + 0.01 * (jnp.mean(3.0 * c) - 0.5)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
  np.testing.assert_allclose(pen, jnp.mean((3.0 * c - want_mean) ** 2), rtol=1e-5)
  grad = jax.grad(lambda s: penalty(s)[0])(3.0)  # through the lengths only
  np.testing.assert_allclose(grad, jnp.mean(2 * (3.0 * c - want_mean) * c), rtol=1e-4)
