"""The "sample_quality" evaluator: FD, KID, precision / recall and IS of a generative task's
samples (GAN, VAE, diffusion), under the settings of config.metrics.

  check(config)                         before training: refuses a feature network trained
                                        on other data than the run's (metrics.allow_mismatched)
  evaluate(config, sample, rng, about, periodic)
                                        N samples from `sample(rng, n)` scored under each
                                        feature network (periodic evaluations: N =
                                        metrics.periodic_num_samples, 0 = none)
  SampleQuality(config, task)           the evaluator: check at construction, then
                                        evaluate with task.samples and task.about_samples

The feature networks: the project's classifier for the run's dataset
(metrics.classifier_workdir, `metrics.num_samples` samples) and Inception-v3
(metrics.inception_weights, `metrics.inception_num_samples` samples). A network whose
path is "" or whose N is 0 is left out; one whose weights are missing is reported as
skipped (`test/<name>/skipped`) and the run goes on. The classifier is a finished run of
the classifier task, restored through genimg_jax/runs.py; its protocol records the
checkpoint's step and the sha256 of its weights.

The numbers of the sampler's protocol that a table plots against (its NFE, the guidance
scale) are reported as metrics as well ("nfe", "guidance"), at every evaluation.
"""
import functools

from absl import logging

from genimg_jax import data, metrics, runs

_HOW_TO_TRAIN = ("run `python launch.py --experiment=classifier_mnist` first, or set "
                 "metrics.classifier_workdir")


def trained_on(workdir):
  """{"dataset", "image_shape"} of the classifier in `workdir`, from its config.json alone
  (cheap: checked before training). Raises FeatureNetworkUnavailable."""
  try:
    cfg = runs.config_of(workdir)
  except runs.RunUnavailable:
    raise metrics.FeatureNetworkUnavailable(
        f"no trained classifier in {workdir!r} ({_HOW_TO_TRAIN})") from None
  return {"dataset": cfg.data.name, "image_shape": list(data.image_shape(cfg))}


def classifier_network(workdir):
  """The classifier run in `workdir` as a FeatureNetwork. Raises FeatureNetworkUnavailable."""
  try:
    restored = runs.restore(workdir)
  except runs.RunUnavailable as e:
    raise metrics.FeatureNetworkUnavailable(
        f"no trained classifier in {workdir!r}: {e} ({_HOW_TO_TRAIN})") from None
  if not hasattr(restored.task, "feature_network"):
    raise metrics.FeatureNetworkUnavailable(
        f"the run in {workdir!r} is a {restored.config.task} run, not a classifier "
        f"({_HOW_TO_TRAIN})")
  return restored.task.feature_network(restored)


def _mismatch(config):
  """A message when the classifier was trained on other data than the run's, else None."""
  m = config.metrics
  if not m.classifier_workdir or m.num_samples <= 0:
    return None
  try:
    on = trained_on(m.classifier_workdir)
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
_LOADERS = {"classifier": functools.lru_cache(4)(classifier_network),
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


class SampleQuality:
  type = "sample_quality"
  needs = ("samples", "about_samples")

  def __init__(self, config, task):
    check(config)
    self.config, self.task = config, task

  def __call__(self, state, mesh, rng, final):
    del mesh  # sampling and features are cheap next to training; done replicated
    about = self.task.about_samples()
    out = {k: about[k] for k in ("nfe", "guidance") if k in about}
    out.update(evaluate(self.config, lambda r, n: self.task.samples(state, r, n)[0], rng,
                        about, periodic=not final))
    return out, {}
