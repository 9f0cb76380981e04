"""Sample-quality evaluation of a generator: FD, KID, precision/recall and IS per feature network.

For each available feature network (the project's MNIST classifier; Inception-v3)
the generator's N samples are compared with N reference images (metrics.reference_split)
under one protocol, recorded next to the numbers. The floor, the same statistics
between real train and real reference images, is reported too. Reference features
are cached on disk per protocol (metrics.cache_dir), so they are computed once.
"""
import hashlib
import json
import os

from absl import logging
import jax
import numpy as np

from genimg_jax import data, parallel
from genimg_jax.metrics import sample_quality
from genimg_jax.metrics.features import (ClassifierFeatures, FeatureNetworkUnavailable,
                                         InceptionFeatures)


def feature_networks(config):
  """[(name, network or None, reason if unavailable, num_samples)] from config.metrics.

  A network whose path is "" or whose sample count is 0 is left out (not computed).
  """
  m = config.metrics
  out = []
  for name, make, path, n in (
      ("classifier", ClassifierFeatures, m.classifier_workdir, m.num_samples),
      ("inception", InceptionFeatures, m.inception_weights, m.inception_num_samples)):
    if not path or n <= 0:
      continue
    try:
      out.append((name, make(path), None, n))
    except FeatureNetworkUnavailable as e:
      logging.warning("Metric skipped: %s", e)
      out.append((name, None, str(e), n))
  return out


def _features(net, images, batch_size):
  feats, probs = [], []
  for i in range(0, len(images), batch_size):
    f, p = net(images[i:i + batch_size])
    feats.append(np.asarray(f))
    probs.append(None if p is None else np.asarray(p))
  return np.concatenate(feats), (None if probs[0] is None else np.concatenate(probs))


def real_images(config, split, n):
  """The first n images of a split in [-1, 1] (fixed order) as float32 NHWC."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.preprocess = "symmetric"
    c.eval.batch_size = max(1, min(1000, n))
  out, got = [], 0
  for b in data.eval_batches(c, split=split, num_examples_limit=n):
    keep = b["image"][b["mask"] > 0]
    out.append(keep)
    got += len(keep)
  return np.concatenate(out)[:n]


def _cached_features(config, net, protocol, split, n):
  key = hashlib.sha256(json.dumps(dict(protocol, split=split, n=n), sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(config.metrics.cache_dir, f"{net.name}_{config.data.name}_{split}_{n}_{key}.npz")
  if os.path.exists(path):
    z = np.load(path)
    return z["features"], (z["probs"] if "probs" in z else None)
  feats, probs = _features(net, real_images(config, split, n), config.metrics.batch_size)
  if jax.process_index() == 0:
    os.makedirs(config.metrics.cache_dir, exist_ok=True)
    extra = {} if probs is None else {"probs": probs}
    np.savez(path + ".tmp.npz", features=feats, **extra)
    os.replace(path + ".tmp.npz", path)
  return feats, probs


def generate_samples(task, state, n, rng, batch_size):
  """n generator samples in [-1, 1] as host float32 NHWC."""
  gen = jax.jit(task.generate, compiler_options=parallel.compiler_options())
  params, stats = task.sampling_params(state), state.extra["g_stats"]
  out = []
  for i in range(0, n, batch_size):
    b = min(batch_size, n - i)
    kz, ky = jax.random.split(jax.random.fold_in(rng, i))
    z = jax.random.normal(kz, (b, task.config.model.latent_dim))
    y = task._labels(ky, b)
    out.append(np.asarray(parallel.fetch(gen(params, stats, z, y))))
  return np.concatenate(out)


def compare(real_feats, fake_feats, config):
  """FD, KID (+ standard error), precision and recall between two feature sets."""
  m = config.metrics
  mu_r, s_r = sample_quality.feature_stats(real_feats)
  mu_f, s_f = sample_quality.feature_stats(fake_feats)
  kid, kid_se = sample_quality.kernel_inception_distance(real_feats, fake_feats, m.kid_subsets,
                                                         m.kid_subset_size)
  precision, recall = sample_quality.precision_recall(real_feats, fake_feats, m.pr_k)
  return {"fd": sample_quality.frechet_distance(mu_r, s_r, mu_f, s_f), "kid": kid,
          "kid_stderr": kid_se, "precision": precision, "recall": recall}


def evaluate_generator(task, state, mesh, rng):
  """All sample-quality metrics of the task's (EMA) generator, with their protocols."""
  del mesh  # sampling and features are cheap next to training; done replicated
  config = task.config
  m = config.metrics
  results = {}
  nets = feature_networks(config)
  if not nets:
    return results
  samples = generate_samples(task, state, max(n for *_, n in nets), rng, m.batch_size)
  for name, net, reason, n in nets:
    if net is None:
      results[f"{name}/skipped"] = reason
      continue
    protocol = dict(net.protocol, num_samples=n, reference_split=m.reference_split,
                    dataset=config.data.name, sampler="EMA generator" if config.gan.ema_decay > 0
                    else "generator")
    real_f, real_p = _cached_features(config, net, protocol, m.reference_split, n)
    fake_f, fake_p = _features(net, samples[:n], m.batch_size)
    for k, v in compare(real_f, fake_f, config).items():
      results[f"{name}/{k}"] = v
    if fake_p is not None:
      results[f"{name}/is"], results[f"{name}/is_std"] = sample_quality.inception_score(fake_p)
      # the same score of the N real reference images: the ceiling of "is"
      results[f"{name}/is_reference"], _ = sample_quality.inception_score(real_p)
    if m.real_floor:
      train_split = config.data.train_split
      train_f, _ = _cached_features(config, net, protocol, train_split, n)
      floor = compare(real_f, train_f, config)
      results[f"{name}/fd_floor"] = floor["fd"]
      results[f"{name}/kid_floor"] = floor["kid"]
      protocol["floor"] = f"{train_split} vs {m.reference_split}, first {n} images of each"
    results[f"{name}/protocol"] = protocol
    logging.info("%s metrics: %s", name, {k: v for k, v in results.items()
                                          if k.startswith(name) and not k.endswith("protocol")})
  return results
