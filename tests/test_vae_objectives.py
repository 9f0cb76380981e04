"""VAE objectives against closed forms and Monte-Carlo estimates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax.models import vae as vae_models
from genimg_jax.objectives import vae as V


def test_gaussian_kl_matches_monte_carlo():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 4)).astype(np.float32)
  logvar = rng.normal(size=(3, 4)).astype(np.float32) * 0.5
  n = 400_000
  eps = jax.random.normal(jax.random.PRNGKey(0), (n, 3, 4))
  z = mean + jnp.exp(0.5 * logvar) * eps
  mc = jnp.mean(V.diag_gaussian_log_prob(z, mean, logvar)
                - V.diag_gaussian_log_prob(z, 0.0, jnp.zeros_like(z)), axis=0)
  np.testing.assert_allclose(V.gaussian_kl(mean, logvar), mc, atol=0.02)


def test_gaussian_kl_zero_at_prior():
  assert float(V.gaussian_kl(jnp.zeros(5), jnp.zeros(5))) == 0.0


def test_bernoulli_log_prob_matches_definition():
  logits = jnp.linspace(-30, 30, 101)
  for x in (0.0, 1.0, 0.3):
    want = x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)
    np.testing.assert_allclose(V.bernoulli_log_prob(logits, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -2.0), (0.7, -4.0), (-0.99, 0.5), (0.2, -6.5)])
def test_discretized_logistic_sums_to_one(mean, log_scale):
  bins = jnp.linspace(-1.0, 1.0, 256)
  p = jnp.exp(V.discretized_logistic_log_prob(bins, mean, log_scale))
  np.testing.assert_allclose(float(p.sum()), 1.0, atol=1e-4)


def _tiny_vae(key, likelihood="bernoulli"):
  model = vae_models.VAE(vae_models.MLPEncoder(4, 16, 1), vae_models.MLPDecoder((4, 4, 1), 1, 16, 1))
  params = jax.jit(model.init)(key, jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4)))
  x = (jax.random.uniform(jax.random.PRNGKey(7), (8, 4, 4, 1)) < 0.5).astype(jnp.float32)
  return model, params, x


def test_iwae_k1_equals_elbo_in_expectation():
  model, params, x = _tiny_vae(jax.random.PRNGKey(0))
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  iwae = lambda k: V.iwae_bound(model.apply, params, x, k, 1, "bernoulli")
  elbo = lambda k: -sum(V.elbo_terms(model.apply, params, x, k, "bernoulli"))
  iwae1, elbo_keys = (jax.jit(jax.vmap(f))(keys) for f in (iwae, elbo))  # jit: 3x faster
  # Same quantity, two estimators (sampled vs analytic KL): equal within MC error.
  se = np.sqrt(np.var(iwae1, axis=0) / len(keys) + np.var(elbo_keys, axis=0) / len(keys))
  np.testing.assert_array_less(np.abs(iwae1.mean(0) - elbo_keys.mean(0)), 4 * se + 1e-3)


def test_iwae_k1_is_elbo_with_sampled_kl_exactly():
  model, params, x = _tiny_vae(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(3)
  log_w = jax.jit(lambda key: V.iwae_log_weights(model.apply, params, x, key, 1, "bernoulli"))(key)
  bound = jax.jit(lambda key: V.iwae_bound(model.apply, params, x, key, 1, "bernoulli"))(key)
  np.testing.assert_allclose(bound, log_w[:, 0], rtol=1e-6)


def test_iwae_bound_does_not_decrease_with_k():
  model, params, x = _tiny_vae(jax.random.PRNGKey(0))
  keys = jax.random.split(jax.random.PRNGKey(4), 200)
  means = []
  for k in (1, 5, 50, 500):
    b = jax.jit(jax.vmap(lambda r: V.iwae_bound(model.apply, params, x, r, k, "bernoulli")))(keys)
    means.append(float(b.mean()))
  assert all(b2 > b1 for b1, b2 in zip(means, means[1:])), means


def test_chunked_iwae_is_the_logmeanexp_of_all_chunks():
  model, params, x = _tiny_vae(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(5)
  chunked = jax.jit(lambda key: V.iwae_bound(model.apply, params, x, key, 2000, "bernoulli",
                                             chunk=100))(key)  # compiled: eagerly, op by op
  log_w_of = jax.jit(lambda k: V.iwae_log_weights(model.apply, params, x, k, 100, "bernoulli"))
  log_w = jnp.concatenate([log_w_of(k) for k in jax.random.split(key, 20)], axis=1)
  np.testing.assert_allclose(chunked, jax.nn.logsumexp(log_w, axis=1) - np.log(2000), rtol=1e-5)
  with pytest.raises(ValueError, match="multiple of the chunk"):
    V.iwae_bound(model.apply, params, x, jax.random.PRNGKey(6), 50, "bernoulli", chunk=7)


@pytest.mark.parametrize("likelihood", sorted(V.LIKELIHOODS))
def test_log_likelihood_shapes_and_finite(likelihood):
  x = jnp.zeros((2, 3, 4, 4, 1)) if likelihood == "bernoulli" else jnp.full((2, 3, 4, 4, 1), 0.5)
  out = jnp.zeros((2, 3, 4, 4, 1, V.LIKELIHOODS[likelihood]))
  lp = V.log_likelihood(likelihood, x, out)
  assert lp.shape == (2, 3) and bool(jnp.all(jnp.isfinite(lp)))


def test_gaussian_log_likelihood_closed_form():
  x = jnp.full((1, 2, 2, 1), 0.3)
  out = jnp.zeros((1, 2, 2, 1, 1))
  want = 4 * (-0.5 * np.log(2 * np.pi) - np.log(0.1) - 0.5 * (0.3 / 0.1)**2)
  np.testing.assert_allclose(V.log_likelihood("gaussian", x, out, 0.1), [want], rtol=1e-5)


def test_softplus_equals_jax_softplus():
  x = jnp.concatenate([jnp.linspace(-100.0, 100.0, 2001), jnp.array([0.0, -1e-8, 1e-8, 88.7])])
  np.testing.assert_allclose(V.softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-30)


def _stand_in_vae(mean, logvar, seen):
  """A model_apply whose encoder gives fixed (mean, logvar) and whose decoder records z and
  returns zero logits (p = 1/2 per pixel: -log p(x|z) = D log 2 for binary x)."""
  def apply(params, inputs, method):
    if method == "encode":
      B = inputs.shape[0]
      return jnp.broadcast_to(mean, (B, mean.shape[-1])), jnp.broadcast_to(logvar, (B, logvar.shape[-1]))
    seen.append(inputs)
    return jnp.zeros((inputs.shape[0], 2, 2, 1, 1))  # [B, H, W, C, P]
  return apply


def test_the_beta_elbo_loss_weights_the_kl_by_beta_and_the_elbo_does_not():
  mean, logvar = jnp.array([1.0, -2.0]), jnp.array([0.5, -1.0])
  x = jnp.ones((3, 2, 2, 1))
  kl = float(V.gaussian_kl(mean, logvar))
  for beta in (1.0, 4.0):
    loss, parts = V.elbo_loss({}, x, jax.random.PRNGKey(0), model_apply=_stand_in_vae(mean, logvar, []),
                              likelihood="bernoulli", beta=beta)
    rec = 4 * np.log(2.0)
    np.testing.assert_allclose([parts["rec"], parts["kl"]], [rec, kl], rtol=1e-5)
    np.testing.assert_allclose(loss, rec + beta * kl, rtol=1e-5)
    np.testing.assert_allclose(parts["elbo"], -(rec + kl), rtol=1e-5)


def test_the_reparameterized_z_has_the_encoders_mean_and_variance():
  mean, logvar = jnp.array([1.0, -2.0]), jnp.array([0.5, -1.0])
  seen = []
  V.elbo_terms(_stand_in_vae(mean, logvar, seen), {}, jnp.ones((100_000, 2, 2, 1)),
               jax.random.PRNGKey(1), "bernoulli")
  z = np.asarray(seen[0])
  np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
  np.testing.assert_allclose(z.var(0), np.exp(logvar), rtol=0.02)
