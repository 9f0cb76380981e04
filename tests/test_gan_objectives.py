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
