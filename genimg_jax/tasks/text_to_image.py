"""The text-to-image task: the diffusion task conditioned on captions (genimg_jax/captions.py)
read by a text encoder (models/text.py) trained with the denoiser.

Everything but the conditioning is the diffusion task's: the formulation, the loss, the
EMA, the samplers, guidance, the evaluators. What changes (the diffusion task's
conditioning methods):
* training: each image's caption is drawn inside the compiled step from its label, the
  levels of the attributes measured on it, and the step's key (so a resume is exact);
  with probability diffusion.label_dropout it is the empty caption, the null of
  classifier-free guidance;
* samples for the metrics: the captions of random test images (training templates), so
  that the prompted classes and attributes follow the test set's;
* the sample grid: the class 0..9 along a row, thickness, slant and size levels changing
  down the columns (fixed captions).

What it adds for the "adherence" evaluator (evaluators/adherence.py): prompt_samples,
which samples from complete captions (every attribute named) of test images, in the
training or the held-out templates, and returns what was prompted; and `attribute_levels`, the
per-class attribute terciles of the training split. For the command line, prompt_images
samples a prompt typed by the user (an unknown word is an error, not dropped).
"""
import jax
import jax.numpy as jnp
import numpy as np

from genimg_jax import captions, data, parallel, xla
from genimg_jax.models import denoisers, text
from genimg_jax.tasks import diffusion

_IDF_KEY = 0  # the fixed key of the training captions that TF-IDF's document frequencies count


_STATISTICS = {}  # per dataset, split and classes: what _data_statistics measured


def _data_statistics(config):
  """What the captions measure on the data, once per process and dataset (a sweep's trials
  and a run's --prompt build the task again): the per-class attribute terciles of the
  training split, the test images' labels and levels, and 20,000 training images'
  labels and levels (TF-IDF's document frequencies)."""
  key = (config.data.name, data.data_dir(config), config.data.train_split,
         config.data.eval_split, config.model.num_classes,
         data.is_mocked(config))  # tfds.testing.mock_data: other arrays under the same name
  if key not in _STATISTICS:
    train = data.split_arrays(config, config.data.train_split)
    test = data.split_arrays(config, config.data.eval_split)
    train_values = captions.measure_images(train["image"])
    test_values = captions.measure_images(test["image"])
    levels = captions.Levels.fit(train_values, train["label"], config.model.num_classes)
    of = lambda values, labels: levels.levels(jnp.asarray(values), jnp.asarray(labels))
    n = 20_000
    _STATISTICS[key] = {"levels": levels, "test_labels": jnp.asarray(test["label"]),
                        "test_levels": of(test_values, test["label"]),
                        "test_values": test_values, "idf_labels": train["label"][:n],
                        "idf_levels": of(train_values[:n], train["label"][:n])}
  return _STATISTICS[key]


class TextToImageTask(diffusion.DiffusionTask):
  """The diffusion task conditioned on captions (see the module doc)."""

  def __init__(self, config):
    m = config.model
    if m.num_classes <= 0:
      raise ValueError("The text_to_image task captions labeled data: model.num_classes must "
                       "be the dataset's number of classes.")
    if config.latent.autoencoder_workdir:
      raise ValueError("The text_to_image task generates pixels: captions are measured on "
                       "the images; leave latent.autoencoder_workdir empty.")
    super().__init__(config)
    self.captioner = captions.Captioner(config.data.name)
    stats = _data_statistics(config)
    self.attribute_levels = stats["levels"]
    self.test_labels, self.test_levels = stats["test_labels"], stats["test_levels"]
    self.test_values = stats["test_values"]  # the attributes measured on the test images
    # The bag encoders count the words the training captions contain, no others
    # (models/text.py); TF-IDF weights them by their idf in 4,096 training captions.
    weights = self.captioner.training_words.astype(np.float64)
    if m.text_encoder == "tfidf":
      df = self.captioner.document_frequency(jax.random.PRNGKey(_IDF_KEY),
                                             stats["idf_labels"], stats["idf_levels"])
      weights *= np.log(1.0 / np.maximum(df, 1.0 / 4096))  # a word missed by the 4,096: rare
    self.text_encoder = text.build_text_encoder(
        m.text_encoder, self.captioner.vocab_size, m.text_dim, m.text_depth, m.text_heads,
        weights)
    self.model = denoisers.build_denoiser(m, self.image_shape, text=self.text_encoder)
    self._tokens = xla.jit(self.captioner.tokens, static_argnames=("heldout", "complete"))

  # --- the conditioning (diffusion.DiffusionTask's seam) ---------------------------------
  def caption(self, rng, images, labels):
    """Training captions [B, L] of images [B, H, W, 1] in [-1, 1] with labels [B]."""
    levels = self.attribute_levels.levels(captions.measure(images), labels)
    return self.captioner.tokens(rng, labels, levels)

  def train_conditioning(self, batch, rng):
    k_caption, k_drop = jax.random.split(rng)
    tokens = self.caption(k_caption, batch["image"], batch["label"])
    drop = jax.random.bernoulli(k_drop, self.config.diffusion.label_dropout, batch["label"].shape)
    return jnp.where(drop[:, None], 0, tokens)

  def null_labels(self, n):
    return jnp.zeros((n, captions.MAX_LENGTH), jnp.int32)  # the empty caption

  def draw_conditioning(self, rng, n):
    """(captions [n, L], their classes [n]) of random test images."""
    tokens, labels, _ = self.captions_of_test_images(rng, n)
    return tokens, labels

  def captions_of_test_images(self, rng, n, heldout=False, complete=False):
    """Captions [n, L] of n random test images, with their classes [n] and attribute levels
    [n, 3]: the prompts of the FD's samples and of the adherence evaluator's."""
    k_index, k_caption = jax.random.split(rng)
    i = jax.random.randint(k_index, (n,), 0, len(self.test_labels))
    labels, levels = self.test_labels[i], self.test_levels[i]
    tokens = self._tokens(k_caption, labels, levels, heldout=heldout, complete=complete)
    return tokens, labels, levels

  def grid_conditioning(self, n):
    i = jnp.arange(n)
    levels = jnp.stack([(i // 10) % 3, (i // 30) % 3, (i // 10 + 1) % 3], 1)
    labels = i % self.config.model.num_classes
    return self.captioner.tokens(jax.random.PRNGKey(self.config.seed + 2), labels, levels,
                                 complete=True)

  def about_samples(self):
    return dict(super().about_samples(),
                labels="captions of random test images (training templates)",
                text_encoder=self.config.model.text_encoder)

  # --- what the adherence evaluator and the command line use ------------------------------
  def prompt_samples(self, state, rng, n, heldout):
    """n samples from complete captions of random test images (held-out templates with
    heldout): (images [n, H, W, 1] in [-1, 1], prompted classes [n], prompted levels [n, 3])."""
    k_draw, k_sample = jax.random.split(rng)
    tokens, labels, levels = [], [], []
    b = self.config.metrics.batch_size
    for i in range(0, n, b):
      t, y, lv = self.captions_of_test_images(jax.random.fold_in(k_draw, i), min(b, n - i),
                                              heldout, complete=True)
      tokens.append(t)
      labels.append(np.asarray(parallel.fetch(y)))
      levels.append(np.asarray(parallel.fetch(lv)))
    images = self.sample(self.sampling_params(state), k_sample, n, b,
                         labels=jnp.concatenate(tokens))
    return images, np.concatenate(labels), np.concatenate(levels)

  def prompt_images(self, state, rng, prompt, n):
    """n samples of one typed prompt, float [n, H, W, C] in [-1, 1]. Raises ValueError for
    a word the captions do not have."""
    tokens = jnp.asarray(np.repeat(self.captioner.tokenize(prompt), n, 0))
    return self.sample(self.sampling_params(state), rng, n, min(n, self.config.metrics.batch_size),
                       labels=tokens)
