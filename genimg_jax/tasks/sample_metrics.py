"""Sample-quality metrics of a generative task (GAN, VAE, diffusion), from config.metrics.

  check(config)                         before training: refuses a feature network trained
                                        on other data than the run's (metrics.allow_mismatched)
  evaluate(config, sample, rng, about, periodic)
                                        N samples from `sample(rng, n)` scored under each
                                        feature network (periodic evaluations: N =
                                        metrics.periodic_num_samples, 0 = none)

The feature networks: the project's classifier for the run's dataset
(metrics.classifier_workdir, `metrics.num_samples` samples) and Inception-v3
(metrics.inception_weights, `metrics.inception_num_samples` samples). A network whose
path is "" or whose N is 0 is left out; one whose weights are missing is reported as
skipped (`test/<name>/skipped`) and the run goes on.
"""
import functools

from absl import logging

from genimg_jax import metrics
from genimg_jax.tasks import classifier


def _mismatch(config):
  """A message when the classifier was trained on other data than the run's, else None."""
  m = config.metrics
  if not m.classifier_workdir or m.num_samples <= 0:
    return None
  try:
    on = classifier.trained_on(m.classifier_workdir)
  except metrics.FeatureNetworkUnavailable:
    return None  # reported as skipped at the evaluation
  if on["dataset"] != config.data.name:
    return (f"The classifier in metrics.classifier_workdir={m.classifier_workdir!r} was trained "
            f"on {on['dataset']!r}, but this run's data is {config.data.name!r}: its FD, KID "
            "and IS would measure the wrong thing. Point metrics.classifier_workdir at a "
            f"classifier trained on {config.data.name!r} (e.g. `python launch.py "
            "--experiment=classifier_mnist:fashion` for fashion_mnist), set it to '' to skip "
            "those metrics, or set metrics.allow_mismatched=True to compute them anyway "
            "(marked 'mismatched' in results.json).")
  return None


def check(config):
  """Raises ValueError (before any compute) when a feature network was trained on other
  data than the run's and metrics.allow_mismatched is off."""
  msg = _mismatch(config)
  if msg and not config.metrics.allow_mismatched:
    raise ValueError(msg)


# Loaded once per process (a periodic evaluation reuses the final one's compiled networks).
_LOADERS = {"classifier": functools.lru_cache(4)(classifier.feature_network),
            "inception": functools.lru_cache(2)(metrics.inception_network)}


def feature_networks(config, periodic=False):
  """[(name, FeatureNetwork or None, reason if unavailable, N)] from config.metrics; for a
  periodic evaluation N is metrics.periodic_num_samples for each network that is on."""
  m = config.metrics
  out = []
  for name, where, n in (("classifier", m.classifier_workdir, m.num_samples),
                         ("inception", m.inception_weights, m.inception_num_samples)):
    n = min(n, m.periodic_num_samples) if periodic else n
    if not where or n <= 0:
      continue
    try:
      out.append((name, _LOADERS[name](where), None, n))
    except metrics.FeatureNetworkUnavailable as e:
      logging.warning("Metric skipped: %s", e)
      out.append((name, None, str(e), n))
  return out


def evaluate(config, sample, rng, about, periodic=False):
  """Every sample-quality metric: {"<network>/fd": ..., "<network>/protocol": {...}, ...}.

  sample(rng, n) -> n generated images, float [n, H, W, C] in [-1, 1] on the host.
  about: what produced the samples, recorded in each protocol (e.g. {"sampler": ...}).
  periodic: an evaluation during training (metrics.periodic_num_samples samples).
  """
  nets = feature_networks(config, periodic)
  if not nets:
    return {}
  samples = sample(rng, max(n for *_, n in nets))
  mismatch = _mismatch(config)
  results = {}
  for name, net, reason, n in nets:
    if net is None:
      results[f"{name}/skipped"] = reason
      continue
    protocol = dict(about)
    if name == "classifier" and mismatch:
      protocol["mismatched"] = mismatch
    for k, v in metrics.score(config, net, samples[:n], protocol).items():
      results[f"{name}/{k}"] = v
  return results
