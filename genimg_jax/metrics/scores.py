"""Scores generated images against real ones under feature networks, with their protocols.

For each feature network, N generated images are compared with N reference images:
Frechet distance, KID (with its standard error), precision and recall, and the
Inception Score where the network gives class probabilities (with the same score of the
real images, its ceiling). The floor, the same statistics between N real training
images and the N reference images, says how far from zero a perfect generator would
score at this N. Reference features are cached per protocol (one .npz per network,
dataset, split and N), so they are computed once.
"""
import hashlib
import json

from absl import logging
import jax
import numpy as np

from genimg_jax import data, files
from genimg_jax.metrics import sample_quality


def features(net, images, batch_size):
  """(features [N, D], probs [N, K] or None) of host images, in batches."""
  feats, probs = [], []
  for i in range(0, len(images), batch_size):
    f, p = net(images[i:i + batch_size])
    feats.append(np.asarray(f))
    probs.append(None if p is None else np.asarray(p))
  return np.concatenate(feats), (None if probs[0] is None else np.concatenate(probs))


def real_images(config, split, n):
  """The first n images of a split in [-1, 1] (the dataset's order) as float32 NHWC."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.preprocess = "symmetric"
    c.eval.batch_size = max(1, min(1000, n))
  out = [b["image"][b["mask"] > 0] for b in data.eval_batches(c, split=split, num_examples_limit=n)]
  return np.concatenate(out)[:n]


def reference_features(config, net, split, n):
  """Features (and probs) of the first n images of `split`, cached in metrics.cache_dir: one
  .npz per (network protocol, dataset, split) and N. A miss is served from the cache of a
  larger N when there is one (its first n rows: the same images through the same network)."""
  key = dict(net.protocol, dataset=config.data.name, split=split)
  if "weights_sha256" in key:
    del key["weights"]  # where the weights lie does not matter: their hash names them
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  prefix = f"{net.name}_{config.data.name}_{split}_"
  cache_dir = files.path(config.metrics.cache_dir)
  path = cache_dir / f"{prefix}{n}_{digest}.npz"
  cached = {}  # N -> path of every cache of this protocol
  for p in (cache_dir.glob(f"{prefix}*_{digest}.npz") if cache_dir.exists() else []):
    size = p.name[len(prefix):].split("_")[0]
    if size.isdigit() and int(size) >= n:
      cached[int(size)] = p
  if cached:
    with cached[min(cached)].open("rb") as f:
      z = np.load(f)
      return z["features"][:n], (z["probs"][:n] if "probs" in z else None)
  feats, probs = features(net, real_images(config, split, n), config.metrics.batch_size)
  if jax.process_index() == 0:
    import io
    buf = io.BytesIO()
    np.savez(buf, features=feats, **({} if probs is None else {"probs": probs}))
    files.write_bytes(path, buf.getvalue())
  return feats, probs


def compare(real_feats, fake_feats, m):
  """FD, KID (+ standard error), precision and recall between two feature sets.
  m: config.metrics (KID subsets, k of the k-NN manifolds)."""
  mu_r, s_r = sample_quality.feature_stats(real_feats)
  mu_f, s_f = sample_quality.feature_stats(fake_feats)
  kid, kid_se = sample_quality.kernel_inception_distance(real_feats, fake_feats, m.kid_subsets,
                                                         m.kid_subset_size)
  precision, recall = sample_quality.precision_recall(real_feats, fake_feats, m.pr_k)
  return {"fd": sample_quality.frechet_distance(mu_r, s_r, mu_f, s_f), "kid": kid,
          "kid_stderr": kid_se, "precision": precision, "recall": recall}


def score(config, net, samples, protocol):
  """Every score of `samples` (float [N, H, W, C] in [-1, 1]) under `net` against the first
  N reference images, as {"fd": ..., ..., "protocol": ...}. protocol: what the caller
  records beside the network's own (sampler, mismatch, ...)."""
  m = config.metrics
  n = len(samples)
  protocol = dict(net.protocol, **protocol, num_samples=n, reference_split=m.reference_split,
                  dataset=config.data.name)
  real_f, real_p = reference_features(config, net, m.reference_split, n)
  fake_f, fake_p = features(net, samples, m.batch_size)
  out = compare(real_f, fake_f, m)
  if fake_p is not None:
    out["is"], out["is_std"] = sample_quality.inception_score(fake_p)
    out["is_reference"], _ = sample_quality.inception_score(real_p)  # the ceiling of "is"
  if m.real_floor:
    train_f, _ = reference_features(config, net, config.data.train_split, n)
    floor = compare(real_f, train_f, m)
    out["fd_floor"], out["kid_floor"] = floor["fd"], floor["kid"]
    protocol["floor"] = f"{config.data.train_split} vs {m.reference_split}, first {n} images of each"
  out["protocol"] = protocol
  logging.info("%s metrics: %s", net.name, {k: v for k, v in out.items() if k != "protocol"})
  return out
