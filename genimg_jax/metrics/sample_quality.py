"""Sample-quality statistics on feature vectors (numpy / scipy, float64).

* Frechet distance (Heusel et al. 2017): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).
* KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets, with its standard error.
* Precision and recall (Kynkaanniemi et al. 2019): k-NN manifolds of each set.
* Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over splits.
"""
import numpy as np
import scipy.linalg


def feature_stats(features):
  """(mean, covariance) of [N, D] features in float64."""
  f = np.asarray(features, np.float64)
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  Covariances of ReLU features with dead units are singular; scipy's sqrtm then warns
  "Matrix is singular", but units that are zero in both sets add nothing to the distance.
  """
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():  # singular product: nudge the diagonals
    offset = np.eye(sigma1.shape[0]) * 1e-6
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  covmean = np.real(covmean)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _mmd2_unbiased(x, y):
  d = x.shape[1]
  kxx = (x @ x.T / d + 1.0)**3
  kyy = (y @ y.T / d + 1.0)**3
  kxy = (x @ y.T / d + 1.0)**3
  m, n = len(x), len(y)
  return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
          - 2.0 * kxy.mean())


def kernel_inception_distance(feats_a, feats_b, num_subsets=100, subset_size=1000, seed=0):
  """(KID mean, standard error) over random subsets (each an unbiased MMD^2 estimate).

  Subsets have min(subset_size, N/2) points of each set.
  """
  a = np.asarray(feats_a, np.float64)
  b = np.asarray(feats_b, np.float64)
  # Subsets of at most half of each set, so that they differ and the standard error
  # means something (subsets of the whole set would all be the same).
  m = min(subset_size, len(a) // 2, len(b) // 2)
  rng = np.random.default_rng(seed)
  vals = np.array([_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                                  b[rng.choice(len(b), m, replace=False)])
                   for _ in range(num_subsets)])
  return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else 0.0)


def _pairwise_sq_dists(a, b):
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _knn_radii(feats, k, block=2000):
  """Distance of each point to its k-th nearest neighbour (excluding itself)."""
  radii = np.empty(len(feats))
  for i in range(0, len(feats), block):
    d = _pairwise_sq_dists(feats[i:i + block], feats)
    radii[i:i + block] = np.sqrt(np.partition(d, k, axis=1)[:, k])  # index 0 is the point itself
  return radii


def _coverage(query, ref, ref_radii, block=2000):
  """Fraction of `query` points inside the union of balls around `ref`."""
  inside = np.zeros(len(query), bool)
  for i in range(0, len(query), block):
    d = np.sqrt(_pairwise_sq_dists(query[i:i + block], ref))
    inside[i:i + block] = (d <= ref_radii[None, :]).any(axis=1)
  return float(inside.mean())


def precision_recall(real_feats, fake_feats, k=3):
  """(precision, recall): fakes inside the real manifold, reals inside the fake one."""
  real = np.asarray(real_feats, np.float64)
  fake = np.asarray(fake_feats, np.float64)
  precision = _coverage(fake, real, _knn_radii(real, k))
  recall = _coverage(real, fake, _knn_radii(fake, k))
  return precision, recall


def inception_score(probs, splits=10):
  """(mean, std) of exp(E KL(p(y|x) || p(y))) over `splits` splits of [N, classes] probs."""
  p = np.asarray(probs, np.float64)
  scores = []
  for part in np.array_split(p, splits):
    py = part.mean(axis=0, keepdims=True)
    kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
