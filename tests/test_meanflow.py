"""MeanFlow: the identity's target through jax.jvp, its reduction to flow matching at
r = t, exact few-step sampling with the exact average velocity, and the task's sampler.
The task trained end to end and resumed exactly: tests/test_fault_tolerance.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax import tasks
from genimg_jax.objectives import meanflow as mf

S = 0.5  # the data std of the Gaussian closed forms below


def _std(t):
  """The std of z_t = (1 - t) x + t eps for x ~ N(0, S^2)."""
  return jnp.sqrt((1.0 - t)**2 * S**2 + t**2)


def _expand(v, x):
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - 1))


def exact_velocity(z, t):
  """The marginal flow's velocity for Gaussian data: z d/dt log std(t)."""
  return z * _expand((t - (1.0 - t) * S**2) / _std(t)**2, z)


def exact_average_velocity(z, r, t):
  """(z_t - z_r) / (t - r) along the flow's straight-through-zero trajectories z_r =
  z_t std(r) / std(t); at r = t, the velocity."""
  gap = t - r
  safe = jnp.where(gap > 0, gap, 1.0)
  avg = z * _expand((1.0 - _std(r) / _std(t)) / safe, z)
  return jnp.where(_expand(gap, z) > 0, avg, exact_velocity(z, t))


def _times(n=6):
  r = jnp.linspace(0.05, 0.6, n)
  return r, r + jnp.linspace(0.3, 0.35, n)


def test_the_target_of_the_exact_average_velocity_is_itself():
  """u = v - (t - r) du/dt holds for the exact u with the exact v as the jvp's tangent:
  fails for a wrong tangent (e.g. r and t swapped), sign or factor."""
  r, t = _times()
  z = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 4, 1))
  u, target = mf.meanflow_target(exact_average_velocity, z, r, t, exact_velocity(z, t))
  np.testing.assert_allclose(target, u, rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(u - exact_velocity(z, t)))) > 0.05  # u is not v here


def test_the_jvp_target_equals_finite_differences_on_a_small_network():
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, z, r, t):
      h = jnp.concatenate([z.reshape(len(z), -1), r[:, None], t[:, None]], axis=-1)
      return nn.Dense(16)(jnp.tanh(nn.Dense(32)(h))).reshape(z.shape)

  r, t = _times()
  z = jax.random.normal(jax.random.PRNGKey(1), (6, 4, 4, 1))
  v = jax.random.normal(jax.random.PRNGKey(2), z.shape)
  net = Net()
  params = net.init(jax.random.PRNGKey(3), z, r, t)
  u_fn = lambda z, r, t: net.apply(params, z, r, t)
  u, target = mf.meanflow_target(u_fn, z, r, t, v)
  h = 1e-2  # central differences along (v, 0, 1): O(h^2) error
  dudt = (u_fn(z + h * v, r, t + h) - u_fn(z - h * v, r, t - h)) / (2 * h)
  np.testing.assert_allclose(u, u_fn(z, r, t), rtol=1e-6)
  np.testing.assert_allclose(target, v - _expand(t - r, z) * dudt, rtol=1e-3, atol=1e-4)


def test_at_r_equal_t_the_loss_is_flow_matchings():
  """ratio 0 (every r = t) and p = 0: the per-pixel MSE of u(z_t, t, t) against eps - x,
  whatever the network's dependence on r."""
  x = jax.random.normal(jax.random.PRNGKey(4), (8, 4, 4, 1))
  u_fn = lambda z, r, t: jnp.sin(z) * _expand(t, z) + _expand(r**2, z)
  rng = jax.random.PRNGKey(5)
  kw = dict(mean=-0.4, std=1.0, ratio=0.0)
  loss, parts = mf.meanflow_loss(u_fn, x, rng, p=0.0, c=1e-3, **kw)
  k_times, k_eps = jax.random.split(rng)
  r, t = mf.sample_times(k_times, 8, **kw)
  np.testing.assert_array_equal(r, t)
  eps = jax.random.normal(k_eps, x.shape)
  z = (1 - _expand(t, x)) * x + _expand(t, x) * eps
  fm = jnp.mean((u_fn(z, t, t) - (eps - x))**2)
  np.testing.assert_allclose(loss, fm, rtol=1e-6)
  np.testing.assert_allclose(parts["fm_mse"], fm, rtol=1e-6)
  # p = 1 weights each image by 1 / (its error + c): the loss is about 1 per image
  weighted, _ = mf.meanflow_loss(u_fn, x, rng, p=1.0, c=1e-3, **kw)
  assert 0.9 < float(weighted) < 1.0


def test_times_are_ordered_logit_normal_with_the_ratio_distinct():
  r, t = mf.sample_times(jax.random.PRNGKey(6), 20_000, mean=-0.4, std=1.0, ratio=0.25)
  assert bool(jnp.all((0 < r) & (r <= t) & (t < 1)))
  assert abs(float(jnp.mean(r != t)) - 0.25) < 0.015
  # max of two N(m, s) logits has mean m + s / sqrt(pi)
  np.testing.assert_allclose(jnp.mean(jax.scipy.special.logit(t)), -0.4 + 1 / np.sqrt(np.pi),
                             atol=0.03)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_few_step_sampling_with_the_exact_average_velocity_is_exact(steps):
  """z_0 = z_1 std(0) / std(1) = S z_1 in any number of steps; deterministic."""
  noise = jax.random.normal(jax.random.PRNGKey(7), (5, 4, 4, 1))
  x = mf.sample(exact_average_velocity, noise, steps, clip=None)
  np.testing.assert_allclose(x, S * noise, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(x, mf.sample(exact_average_velocity, noise, steps, clip=None))
  one = mf.sample(lambda z, r, t: jnp.ones_like(z) * _expand(t - r, z), noise, 1, clip=None)
  np.testing.assert_allclose(one, noise - 1.0, rtol=1e-6)  # x = eps - u(eps, 0, 1)


def test_the_task_refuses_what_it_cannot_train():
  from experiments import meanflow_mnist
  c = meanflow_mnist.get_config("runlocal")
  c.diffusion.target = "v"
  with pytest.raises(ValueError, match="flow path"):
    tasks.build_task(c)


def test_one_step_sampling_is_deterministic_given_the_noise():
  """The task's meanflow sampler ignores its key: the same noise gives the same images.
  (Training end to end, its bound and its exact resume: tests/test_fault_tolerance.py.)"""
  from experiments import meanflow_mnist
  task = tasks.build_task(meanflow_mnist.get_config("runlocal"))

  @jax.jit  # eagerly, each op of the init compiles on its own
  def init(key):  # off the zero output layer: the images depend on the noise
    params = task.sampling_params(task.init_state(key))
    return jax.tree.map(lambda v: v + 0.05 * jax.random.normal(jax.random.PRNGKey(4), v.shape),
                        params)
  params = init(jax.random.PRNGKey(0))
  noise = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
  a = task.sample(params, jax.random.PRNGKey(2), 4, 4, noise=noise)
  b = task.sample(params, jax.random.PRNGKey(3), 4, 4, noise=noise)
  np.testing.assert_array_equal(a, b)
  c = task.sample(params, jax.random.PRNGKey(2), 4, 4, noise=-noise)
  assert np.abs(a - c).max() > 0
