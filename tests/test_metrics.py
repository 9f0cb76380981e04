"""Sample-quality statistics against closed forms and known cases."""
import numpy as np

from genimg_jax.metrics import sample_quality as Q


def test_fd_of_identical_sets_is_zero():
  x = np.random.default_rng(0).normal(size=(500, 8))
  mu, s = Q.feature_stats(x)
  assert abs(Q.frechet_distance(mu, s, mu, s)) < 1e-8


def test_fd_of_two_gaussians_matches_closed_form():
  # diagonal covariances: FD = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  want = 1 + 0 + 4 + (1 - 2)**2 + (2 - 1)**2 + (3 - 1)**2
  np.testing.assert_allclose(Q.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), want, rtol=1e-9)
  # and a non-diagonal case against the definition via eigendecomposition
  rng = np.random.default_rng(1)
  A = rng.normal(size=(4, 4)); s1 = A @ A.T + np.eye(4)
  B = rng.normal(size=(4, 4)); s2 = B @ B.T + np.eye(4)
  w, V = np.linalg.eigh(s1); r1 = V @ np.diag(np.sqrt(w)) @ V.T
  w2 = np.linalg.eigvalsh(r1 @ s2 @ r1)  # Tr sqrt(s1 s2) = Tr sqrt(r1 s2 r1)
  want = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(w2).sum()
  np.testing.assert_allclose(Q.frechet_distance(np.zeros(4), s1, np.zeros(4), s2), want, rtol=1e-7)


def test_kid_is_unbiased_when_distributions_match():
  # Same distribution: the unbiased MMD^2 has expectation 0 (a biased one is > 0).
  rng = np.random.default_rng(0)
  vals = [Q.kernel_inception_distance(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)),
                                      num_subsets=1, subset_size=50, seed=i)[0] for i in range(400)]
  mean, se = np.mean(vals), np.std(vals) / np.sqrt(len(vals))
  assert abs(mean) < 3 * se, (mean, se)
  kid, kid_se = Q.kernel_inception_distance(rng.normal(size=(300, 4)), rng.normal(1.0, 1.0, size=(300, 4)),
                                            num_subsets=20, subset_size=200)
  assert kid > 10 * kid_se > 0


def test_kid_matches_closed_form_for_point_masses():
  # All x equal to a, all y equal to b: MMD^2 = k(a,a) + k(b,b) - 2 k(a,b).
  a, b = np.ones((10, 2)), np.zeros((10, 2))
  k = lambda u, v: (u @ v / 2 + 1)**3
  want = k(a[0], a[0]) + k(b[0], b[0]) - 2 * k(a[0], b[0])
  np.testing.assert_allclose(Q.kernel_inception_distance(a, b, 3, 10)[0], want)


def test_precision_recall_of_a_set_with_itself_is_one():
  x = np.random.default_rng(0).normal(size=(300, 5))
  assert Q.precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_of_disjoint_sets_is_zero():
  x = np.random.default_rng(0).normal(size=(200, 5))
  assert Q.precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)


def test_inception_score_bounds():
  confident_uniform = np.eye(10)[np.arange(1000) % 10]
  np.testing.assert_allclose(Q.inception_score(confident_uniform, splits=10)[0], 10.0, rtol=1e-6)
  collapsed = np.tile(np.eye(10)[:1], (1000, 1))
  np.testing.assert_allclose(Q.inception_score(collapsed)[0], 1.0, rtol=1e-6)
