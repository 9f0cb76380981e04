"""The "adherence" evaluator: how well a text-conditioned model's samples match their prompts.

For N = metrics.adherence_num_samples samples (periodic evaluations: at most
metrics.periodic_num_samples) from complete captions of random test images (every
attribute named; genimg_jax/captions.py), once in the training templates and once in the
held-out ones (suffix "_heldout"):
  class_accuracy    the fraction of samples that the project's classifier
                    (metrics.classifier_workdir, the sample-quality metrics' network)
                    puts in the prompted class;
  <attribute>_corr  the Pearson correlation between the prompted level (0, 1, 2) and the
                    measured attribute's percentile within the prompted class on the
                    training split; attribute_corr their mean.
The same correlations on the test images with their own captions' levels are the
ceiling a perfect model reaches (a level is a tercile of the percentile: about 0.94),
recorded in the protocol as "real_attribute_corr".

Needs task.prompt_samples(state, rng, n, heldout), task.attribute_levels (captions.Levels),
task.captioner and the task's measured test set (test_values, test_labels, test_levels).
"""
import jax
import numpy as np

from genimg_jax import captions, xla
from genimg_jax.evaluators import sample_quality


def correlations(levels, percentiles, attributes):
  """{attribute name: Pearson r of prompted level vs measured percentile}."""
  out = {}
  for a in attributes:
    l, p = levels[:, a].astype(np.float64), percentiles[:, a]
    out[captions.ATTRIBUTES[a]] = (float(np.corrcoef(l, p)[0, 1])
                                   if l.std() > 0 and p.std() > 0 else float("nan"))
  return out


class Adherence:
  type = "adherence"
  needs = ("prompt_samples", "attribute_levels", "captioner")

  def __init__(self, config, task):
    self.config, self.task = config, task
    if not config.metrics.classifier_workdir:
      raise ValueError("The adherence evaluator needs the classifier of the dataset "
                       "(metrics.classifier_workdir).")
    sample_quality.check(config)
    self._measure = xla.jit(captions.measure)

  def _ceiling(self):
    """Correlations on the test images with their own levels."""
    t = self.task
    pct = t.attribute_levels.percentiles(t.test_values, np.asarray(t.test_labels))
    return correlations(np.asarray(t.test_levels), pct, t.captioner.attributes)

  def __call__(self, state, mesh, rng, final):
    del mesh
    m = self.config.metrics
    n = m.adherence_num_samples if final else min(m.adherence_num_samples,
                                                  m.periodic_num_samples)
    if n <= 0:
      return {}, {}
    net = sample_quality._LOADERS["classifier"](m.classifier_workdir)
    out = {}
    for heldout in (False, True):
      suffix = "_heldout" if heldout else ""
      images, labels, levels = self.task.prompt_samples(state, jax.random.fold_in(rng, heldout),
                                                        n, heldout)
      predicted = np.concatenate([np.argmax(np.asarray(net(images[i:i + m.batch_size])[1]), -1)
                                  for i in range(0, n, m.batch_size)])
      out[f"class_accuracy{suffix}"] = float(np.mean(predicted == labels))
      pct = self.task.attribute_levels.percentiles(np.asarray(self._measure(images)), labels)
      corr = correlations(levels, pct, self.task.captioner.attributes)
      for name, r in corr.items():
        out[f"{name}_corr{suffix}"] = r
      out[f"attribute_corr{suffix}"] = float(np.mean(list(corr.values())))
    out["protocol"] = {
        "num_samples": n, "prompts": "complete captions of random test images; training "
        "and held-out templates", "classifier": net.protocol,
        "attributes": [captions.ATTRIBUTES[a] for a in self.task.captioner.attributes],
        "real_attribute_corr": self._ceiling(), **self.task.about_samples()}
    return {f"adherence/{k}": v for k, v in out.items()}, {}
