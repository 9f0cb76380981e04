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


def test_reference_features_are_cached_once_and_a_smaller_n_is_served_from_a_larger_one(tmp_path, monkeypatch):
  from genimg_jax import configs
  from genimg_jax.metrics import scores
  from genimg_jax.metrics.features import FeatureNetwork
  calls = []

  def apply(params, x):  # mean gray level and a pixel: features that tell images apart
    return x.reshape(len(x), -1)[:, [0, 300, 400]] * params, None
  net = FeatureNetwork("toy", apply, 1.0, {"network": "toy", "weights": str(tmp_path / "w"),
                                           "weights_sha256": "abc"})
  c = configs.vae_config()
  c.metrics.cache_dir = str(tmp_path / "cache")
  original = scores.real_images
  monkeypatch.setattr(scores, "real_images",
                      lambda config, split, n: calls.append(n) or original(config, split, n))
  f50, _ = scores.reference_features(c, net, "test", 50)
  f20, _ = scores.reference_features(c, net, "test", 20)  # the first 20 of the cached 50
  net.protocol["weights"] = str(tmp_path / "elsewhere")  # moved weights, same hash: a hit
  again, _ = scores.reference_features(c, net, "test", 50)
  net.protocol["weights_sha256"] = "other"  # other weights: computed anew
  scores.reference_features(c, net, "test", 10)
  assert calls == [50, 10]
  np.testing.assert_array_equal(f20, f50[:20])
  np.testing.assert_array_equal(again, f50)
  assert len(np.unique(f50[:, 1])) > 1


def test_the_manifold_radius_is_the_distance_to_the_kth_other_point():
  x = np.array([[0.0], [1.0], [3.0], [7.0]])
  np.testing.assert_allclose(Q._knn_radii(x, 1), [1, 1, 2, 4])
  np.testing.assert_allclose(Q._knn_radii(x, 2), [3, 2, 3, 6])


def test_precision_and_recall_count_points_inside_the_other_sets_balls():
  """Reals at 0, 1, 3, 7 (k = 1 radii 1, 1, 2, 4): fakes at 0.5 (inside), 5 (inside 3's
  ball of radius 2, on its edge), 12 (outside) give precision 2/3. The fakes' own radii
  (4.5, 4.5, 7) cover reals 0, 1 and 3 (from 0.5) and 7 (from 5): recall 1."""
  real = np.array([[0.0], [1.0], [3.0], [7.0]])
  fake = np.array([[0.5], [5.0], [12.0]])
  np.testing.assert_allclose(Q.precision_recall(real, fake, k=1), (2 / 3, 1.0))
  # k = 2 (radii 3, 2, 3, 6): 12 is inside 7's ball (5 from it)
  np.testing.assert_allclose(Q.precision_recall(real, fake, k=2)[0], 1.0)
  # The balls are closed (Kynkaenniemi et al. 2019: distance <= radius): reals 0, 1, 3
  # (radii 1, 1, 2); fakes at 5, on the edge of 3's ball only (exact in floats), and 20
  assert Q.precision_recall(real[:3], np.array([[5.0], [20.0]]), k=1)[0] == 0.5


def test_the_scores_use_the_configured_neighbourhood_and_kid_subsets():
  import ml_collections
  from genimg_jax.metrics import scores
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(60, 3)), rng.normal(0.5, 1.0, size=(60, 3))
  m = ml_collections.ConfigDict({"kid_subsets": 7, "kid_subset_size": 20, "pr_k": 1})
  got = scores.compare(real, fake, m)
  assert (got["precision"], got["recall"]) == Q.precision_recall(real, fake, k=1)
  assert (got["precision"], got["recall"]) != Q.precision_recall(real, fake, k=3)
  assert (got["kid"], got["kid_stderr"]) == Q.kernel_inception_distance(real, fake, 7, 20)
  mu_r, s_r = Q.feature_stats(real)
  mu_f, s_f = Q.feature_stats(fake)
  assert got["fd"] == Q.frechet_distance(mu_r, s_r, mu_f, s_f)


def test_the_inception_score_is_computed_per_split():
  """Two halves, each of one class only (p(y|x) one-hot, p(y) one-hot within a half): each
  split's score is 1, so the mean over 2 splits is 1, where one split over all would give 2."""
  probs = np.eye(2)[np.repeat([0, 1], 50)]
  np.testing.assert_allclose(Q.inception_score(probs, splits=2)[0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(Q.inception_score(probs, splits=1)[0], 2.0, rtol=1e-6)
