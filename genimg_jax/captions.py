"""Captions that can be checked: text for every MNIST / Fashion-MNIST image, made from its
label and from attributes measured on the image, and the tokenizer the text encoders read.

Attributes (`measure`, on images in [-1, 1], gray levels g = (x + 1) / 2):
  thickness  ink per row: the ink mass sum(g) over the height of the bounding box (the
             rows with a pixel above 0.5); a thick stroke puts more ink in each row;
  slant      from the second moments of the ink: -mu11 / mu02 (mu11 the x-y covariance,
             mu02 the variance along y; y grows downwards), > 0 when the top leans right;
  size       the spread of the ink around its centre, sqrt(mu20 + mu02) in pixels (the
             radius of gyration). Not the bounding box: MNIST's digits were scaled to fit a
             20x20 box, so nearly all are 20 pixels tall and the box's height says nothing.
Each attribute is put in one of three levels by its terciles within the image's class on
the training split (`Levels.fit`): "a thick one" is thick for a one. So in the training
data each level of each attribute is a third of each class.

Captions come from templates with slots ({class}, {thickness}, {slant}, {size}) whose
words are drawn among synonyms ("a thick, slanted seven", "the digit 7, ... written
boldly"). Some templates are held out of training (`heldout=True`): they use word orders
and filler words ("an image of", "someone drew") the model never saw, and test whether a
model reads the content words rather than a memorized phrasing. Every content word (a
class name, an attribute level) appears in the training templates: a text encoder trained
here from scratch cannot know a word it never saw, so a held-out *content* synonym would
test nothing but the initialization of its embedding. The words are lower case, split on
spaces; ",", ":" and "." are dropped.

Everything that draws a caption is a jnp function of (labels, levels, rng) over fixed
tables (`Captioner.tokens`), so the training step draws each example's caption from the
(seed, step) stream inside the compiled step and a resume is exact. Token id 0 is the
padding; a caption is its words' ids from the left, zeros after; the empty caption (all
zeros) is the null of classifier-free guidance.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

from genimg_jax import xla

MAX_LENGTH = 16  # tokens per caption
ATTRIBUTES = ("thickness", "slant", "size")
LEVELS = 3

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOCABULARIES = {
    "mnist": {
        "class": [[name, str(i)] for i, name in enumerate(_DIGITS)],
        "thickness": [["thin", "light"], ["regular", "medium"], ["thick", "bold"]],
        "thickness_adverb": [["thinly", "lightly"], ["normally"], ["boldly", "thickly"]],
        "slant": [["backslanted", "leaning left"], ["upright", "straight"],
                  ["slanted", "leaning right"]],
        "size": [["small", "tiny"], ["medium-sized", "average-sized"], ["large", "big"]],
        "templates": [
            "a {size}, {thickness}, {slant} {class}",
            "the digit {class}, {size} and {slant}, written {thickness_adverb}",
            "{class}: {thickness}, {slant}, {size}",
            "a {thickness} {class}",
            "a {slant} {class}",
            "{class}",
        ],
        "heldout_templates": [
            "an image of a {thickness} {class}, {slant} and {size}",
            "someone drew a {size} {class} {thickness_adverb} and {slant}",
        ],
    },
    "fashion_mnist": {
        "class": [["t-shirt", "top"], ["trousers", "pants"], ["pullover", "sweater"],
                  ["dress"], ["coat", "jacket"], ["sandal"], ["shirt"],
                  ["sneaker", "trainer"], ["bag", "handbag"], ["ankle boot", "boot"]],
        "thickness": [["faint", "pale"], ["plain"], ["dark", "heavy"]],
        "size": [["small", "short"], ["medium-sized"], ["large", "tall"]],
        "templates": [
            "a {size} {thickness} {class}",
            "a photo of a {class}, {size} and {thickness}",
            "{class}: {thickness}, {size}",
            "a {class}",
        ],
        "heldout_templates": [
            "an item of clothing: {class}, {thickness}, {size}",
            "someone is selling a {thickness} {class} that is {size}",
        ],
    },
}
SLOTS = ("class", "thickness", "thickness_adverb", "slant", "size")
_SLOT_ATTRIBUTE = {"class": None, "thickness": 0, "thickness_adverb": 0, "slant": 1, "size": 2}


def words(text):
  """The words of a text, as the tokenizer splits it."""
  return re.sub(r"[,:.]", " ", text.lower()).split()


def measure(images):
  """[B, 3] float32 (thickness, slant, size) of images [B, H, W, 1] in [-1, 1] (module doc)."""
  g = jnp.clip((images[..., 0].astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)
  B, H, W = g.shape
  mass = g.sum((1, 2))
  rows = (g > 0.5).any(2)
  first = jnp.argmax(rows, 1)
  last = H - 1 - jnp.argmax(rows[:, ::-1], 1)
  height = jnp.where(rows.any(1), last - first + 1, 0).astype(jnp.float32)
  y = jnp.arange(H, dtype=jnp.float32)[None, :, None]
  x = jnp.arange(W, dtype=jnp.float32)[None, None, :]
  m = jnp.maximum(mass, 1e-6)
  cy = (g * y).sum((1, 2)) / m
  cx = (g * x).sum((1, 2)) / m
  dy, dx = y - cy[:, None, None], x - cx[:, None, None]
  mu02 = (g * dy * dy).sum((1, 2)) / m
  mu11 = (g * dx * dy).sum((1, 2)) / m
  mu20 = (g * dx * dx).sum((1, 2)) / m
  slant = -mu11 / jnp.maximum(mu02, 1e-6)
  return jnp.stack([mass / jnp.maximum(height, 1.0), slant, jnp.sqrt(mu20 + mu02)], axis=1)


def measure_images(images, batch=10_000):
  """measure() of many uint8 images [N, H, W, 1], a batch at a time: numpy [N, 3]."""
  fn = xla.jit(measure, once=True)
  return np.concatenate([np.asarray(fn(images[i:i + batch].astype(np.float32) / 127.5 - 1.0))
                         for i in range(0, len(images), batch)])


class Levels:
  """Per-class terciles of each attribute on the training split: thresholds [C, 3, 2]
  (attribute levels) and the sorted values [C, 3, n_c] (a measured value's percentile
  within its class, for the adherence metrics)."""

  def __init__(self, thresholds, sorted_values):
    self.thresholds = np.asarray(thresholds, np.float32)
    self.sorted_values = sorted_values

  @classmethod
  def fit(cls, values, labels, num_classes):
    """From the attributes measured on training images ([N, 3], measure_images) and their
    labels [N]."""
    values, labels = np.asarray(values), np.asarray(labels)
    thresholds, sorted_values = [], []
    for c in range(num_classes):
      v = values[labels == c]
      if len(v) == 0:  # a class absent (e.g. under mock data): one level
        v = np.zeros((1, len(ATTRIBUTES)), np.float32)
      thresholds.append(np.quantile(v, [1 / 3, 2 / 3], axis=0).T)
      sorted_values.append(np.sort(v, axis=0).T)
    return cls(np.stack(thresholds), sorted_values)

  def levels(self, values, labels):
    """[B, 3] int32 levels (0 low, 1 middle, 2 high) of measured values [B, 3] (jnp)."""
    t = jnp.asarray(self.thresholds)[labels]  # [B, 3, 2]
    return ((values[..., None] > t).sum(-1)).astype(jnp.int32)

  def percentiles(self, values, labels):
    """[B, 3] float percentiles in [0, 1] of measured values within their class (numpy)."""
    values, labels = np.asarray(values), np.asarray(labels)
    out = np.zeros(values.shape, np.float64)
    for i, (v, c) in enumerate(zip(values, labels)):
      for a in range(values.shape[1]):
        s = self.sorted_values[c][a]  # ties: the middle of their ranks
        out[i, a] = (np.searchsorted(s, v[a]) + np.searchsorted(s, v[a], "right")) / 2 / len(s)
    return out


class Captioner:
  """The captions of one dataset (VOCABULARIES[dataset]): its vocabulary, tokenizer, and
  the jnp tables that draw a caption (module doc)."""

  def __init__(self, dataset):
    if dataset not in VOCABULARIES:
      raise ValueError(f"No captions for dataset {dataset!r}; captioned: {sorted(VOCABULARIES)}")
    spec = VOCABULARIES[dataset]
    self.dataset = dataset
    self.slots = [s for s in SLOTS if s in spec]
    self.attributes = sorted({_SLOT_ATTRIBUTE[s] for s in self.slots} - {None})
    slot_words = {w for s in self.slots for synonyms in spec[s] for phrase in synonyms
                  for w in words(phrase)}
    template_words = lambda t: words(re.sub(r"\{\w+\}", " ", t))
    trained = slot_words | {w for t in spec["templates"] for w in template_words(t)}
    heldout = {w for t in spec["heldout_templates"] for w in template_words(t)}
    self.vocabulary = ["<pad>"] + sorted(trained | heldout)
    self.ids = {w: i for i, w in enumerate(self.vocabulary)}
    # [vocab] bool: the words a training caption can contain (the held-out templates' own
    # filler words are not among them; neither is the padding).
    self.training_words = np.array([w in trained for w in self.vocabulary])
    # Phrases: [slots, values, synonyms, phrase words] of word ids, and the synonym counts.
    self.max_phrase = max(len(words(p)) for s in self.slots for syn in spec[s] for p in syn)
    values = max(len(spec[s]) for s in self.slots)
    synonyms = max(len(syn) for s in self.slots for syn in spec[s])
    phrases = np.zeros((len(self.slots), values, synonyms, self.max_phrase), np.int32)
    counts = np.ones((len(self.slots), values), np.int32)
    for k, s in enumerate(self.slots):
      for v, syn in enumerate(spec[s]):
        counts[k, v] = len(syn)
        for j, p in enumerate(syn):
          ids = self.tokenize(p)[0][:len(words(p))]
          phrases[k, v, j, :len(ids)] = ids
    self.phrases, self.counts = jnp.asarray(phrases), jnp.asarray(counts)
    self.templates = {False: self._compile(spec["templates"]),
                      True: self._compile(spec["heldout_templates"])}
    self.complete = {h: np.array([self._mentions_all(t) for t in spec[k]])
                     for h, k in ((False, "templates"), (True, "heldout_templates"))}

  def _mentions_all(self, template):
    named = set(re.findall(r"\{(\w+)\}", template))
    return {_SLOT_ATTRIBUTE[s] for s in named} - {None} == set(self.attributes)

  def _compile(self, templates):
    """[T, S] slot index per position (-1: the literal word in the second array; -2:
    nothing) and [T, S] literal word ids."""
    parsed = []
    for t in templates:
      items = []
      for part in re.split(r"(\{\w+\})", t):
        if part.startswith("{"):
          name = part[1:-1]
          if name not in self.slots:
            raise ValueError(f"Template {t!r} names the slot {name!r}; {self.dataset} has "
                             f"{self.slots}")
          items.append((self.slots.index(name), 0))
        else:
          items.extend((-1, self.ids[w]) for w in words(part))
      parsed.append(items)
    S = max(len(p) for p in parsed)
    kind = np.full((len(parsed), S), -2, np.int32)
    literal = np.zeros((len(parsed), S), np.int32)
    for i, items in enumerate(parsed):
      for j, (k, w) in enumerate(items):
        kind[i, j], literal[i, j] = k, w
    if S * self.max_phrase > 4 * MAX_LENGTH:
      raise ValueError("A template is too long for captions.MAX_LENGTH.")
    return jnp.asarray(kind), jnp.asarray(literal)

  @property
  def vocab_size(self):
    return len(self.vocabulary)

  def tokens(self, rng, labels, levels, heldout=False, complete=False):
    """[B, MAX_LENGTH] int32 captions of images with labels [B] and attribute levels [B, 3]:
    a template per example (of the held-out ones with heldout; only those that name every
    attribute with complete) and a synonym per slot, all drawn from rng."""
    kind, literal = self.templates[bool(heldout)]
    T, S = kind.shape
    k_template, k_synonym = jax.random.split(rng)
    if complete:
      allowed = jnp.asarray(self.complete[bool(heldout)], jnp.float32)
      t = jax.random.categorical(k_template, jnp.log(allowed)[None].repeat(len(labels), 0))
    else:
      t = jax.random.randint(k_template, labels.shape, 0, T)
    kinds, lits = kind[t], literal[t]  # [B, S]
    # The value each slot takes: the class, or its attribute's level.
    per_slot = jnp.stack([labels if _SLOT_ATTRIBUTE[s] is None
                          else levels[:, _SLOT_ATTRIBUTE[s]] for s in self.slots], 1)  # [B, K]
    slot = jnp.maximum(kinds, 0)
    value = jnp.take_along_axis(per_slot, slot, 1)  # [B, S]
    u = jax.random.uniform(k_synonym, kinds.shape)
    j = jnp.floor(u * self.counts[slot, value]).astype(jnp.int32)
    phrase = self.phrases[slot, value, j]  # [B, S, P]
    lit = jnp.zeros_like(phrase).at[..., 0].set(lits)
    out = jnp.where((kinds >= 0)[..., None], phrase, jnp.where((kinds == -1)[..., None], lit, 0))
    out = out.reshape(len(labels), -1)
    order = jnp.argsort(out == 0, axis=1, stable=True)  # the words to the left, in order
    return jnp.take_along_axis(out, order, 1)[:, :MAX_LENGTH]

  def tokenize(self, texts):
    """[len(texts), MAX_LENGTH] int32 ids of texts (a str or a list of them). Raises
    ValueError naming the words that are not in the vocabulary, and for a text longer
    than MAX_LENGTH words."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = np.zeros((len(texts), MAX_LENGTH), np.int32)
    for i, text in enumerate(texts):
      ws = words(text)
      unknown = [w for w in ws if w not in self.ids]
      if unknown:
        raise ValueError(f"Unknown word(s) {unknown} in {text!r}: the {self.dataset} captions "
                         f"know {len(self.vocabulary) - 1} words: {' '.join(self.vocabulary[1:])}")
      if len(ws) > MAX_LENGTH:
        raise ValueError(f"{text!r} has {len(ws)} words; captions hold {MAX_LENGTH}.")
      out[i, :len(ws)] = [self.ids[w] for w in ws]
    return out

  def decode(self, tokens):
    """The texts of token ids [B, L] (padding dropped)."""
    return [" ".join(self.vocabulary[i] for i in row if i > 0) for row in np.asarray(tokens)]

  def document_frequency(self, rng, labels, levels, n=4096):
    """[vocab] fraction of n training captions that contain each word (TF-IDF's df)."""
    idx = jax.random.randint(rng, (n,), 0, len(labels))
    toks = np.asarray(self.tokens(jax.random.fold_in(rng, 1), jnp.asarray(labels)[idx],
                                  jnp.asarray(levels)[idx]))
    df = np.zeros(self.vocab_size, np.float64)
    for row in toks:
      df[np.unique(row[row > 0])] += 1
    return df / n
