"""Text-to-image: captions, their attributes and tokenizer, the text encoders,
cross-attention, guidance's null caption, adherence and the prompt command, end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax import captions
from genimg_jax.models import text


def _bar(height, width, shear=0.0, top=4, left=10, size=28):
  """A synthetic stroke in [-1, 1]: `height` rows of `width` full pixels, each row shifted
  right by shear * (rows above the bottom row), so the top leans right for shear > 0."""
  img = -np.ones((size, size), np.float32)
  for i in range(height):
    x0 = left + int(round(shear * (height - 1 - i)))
    img[top + i, x0:x0 + width] = 1.0
  return img[..., None]


def test_measured_attributes_equal_their_hand_computed_values_on_synthetic_strokes():
  upright, thick = _bar(20, 2), _bar(20, 4)
  leaning = _bar(20, 2, shear=0.5)
  v = np.asarray(captions.measure(jnp.asarray(np.stack([upright, thick, leaning]))))
  # thickness: ink per row of the box = the stroke's width
  np.testing.assert_allclose(v[:, 0], [2.0, 4.0, 2.0], rtol=1e-5)
  # slant: -mu11 / mu02; an upright bar has none; a bar sheared by s has about s
  assert abs(v[0, 1]) < 1e-5 and abs(v[1, 1]) < 1e-5
  ys = np.repeat(np.arange(20.0), 2)
  xs = np.concatenate([[np.round(0.5 * (19 - i)) + d for d in (0, 1)] for i in range(20)])
  dy, dx = ys - ys.mean(), xs - xs.mean()
  np.testing.assert_allclose(v[2, 1], -(dx * dy).mean() / (dy * dy).mean(), rtol=1e-4)
  assert 0.4 < v[2, 1] < 0.6
  # size: the radius of gyration sqrt(var_x + var_y); a w-wide, h-tall box: (w^2 - 1) / 12
  # + (h^2 - 1) / 12
  np.testing.assert_allclose(v[0, 2], np.sqrt((2**2 - 1) / 12 + (20**2 - 1) / 12), rtol=1e-5)
  np.testing.assert_allclose(v[1, 2], np.sqrt((4**2 - 1) / 12 + (20**2 - 1) / 12), rtol=1e-5)


def test_levels_are_the_class_terciles_and_percentiles_rank_within_the_class():
  rng = np.random.RandomState(0)
  values = rng.normal(size=(300, 3)).astype(np.float32)
  labels = np.repeat([0, 1], 150)
  values[labels == 1] += 10.0  # another class, another scale: its own terciles
  lv = captions.Levels(np.stack([np.quantile(values[labels == c], [1 / 3, 2 / 3], axis=0).T
                                 for c in (0, 1)]),
                       [np.sort(values[labels == c], axis=0).T for c in (0, 1)])
  levels = np.asarray(lv.levels(jnp.asarray(values), jnp.asarray(labels)))
  for c in (0, 1):
    for a in range(3):
      np.testing.assert_array_equal(np.bincount(levels[labels == c, a]), [50, 50, 50])
  pct = lv.percentiles(values, labels)
  assert pct.min() > 0 and pct.max() < 1
  np.testing.assert_array_equal(np.floor(pct * 3).clip(0, 2), levels)


def test_captions_are_a_function_of_the_key_and_say_the_class_and_levels():
  c = captions.Captioner("mnist")
  labels = jnp.arange(40) % 10
  levels = jnp.stack([jnp.arange(40) % 3, (jnp.arange(40) // 3) % 3, (jnp.arange(40) // 9) % 3], 1)
  key = jax.random.fold_in(jax.random.PRNGKey(0), 7)  # (seed, step)
  a, b = c.tokens(key, labels, levels), c.tokens(key, labels, levels)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c.tokens(jax.random.fold_in(jax.random.PRNGKey(0), 8), labels,
                                        levels))
  spec = captions.VOCABULARIES["mnist"]
  full = c.decode(c.tokens(key, labels, levels, complete=True))
  for text_, y, lv in zip(full, np.asarray(labels), np.asarray(levels)):
    padded = f" {text_} "
    assert any(f" {w} " in padded for w in spec["class"][y]), text_
    for slot, a_ in (("slant", 1), ("size", 2)):
      assert any(f" {w} " in padded for w in spec[slot][lv[a_]]), (text_, slot)
    assert any(f" {w} " in padded for w in spec["thickness"][lv[0]]
               + spec["thickness_adverb"][lv[0]]), text_
  # the held-out templates: phrasings the training templates never make
  heldout = set(c.decode(c.tokens(key, labels, levels, heldout=True)))
  train = set().union(*(set(c.decode(c.tokens(jax.random.PRNGKey(s), labels, levels)))
                        for s in range(20)))
  assert heldout and not heldout & train
  assert all(t.startswith(("an image of", "someone drew")) for t in heldout)
  # the training vocabulary: every word of the training captions, no held-out filler word
  in_train = {w for t in train for w in t.split()}
  assert {w for w, k in zip(c.vocabulary, c.training_words) if k} == in_train
  assert {"image", "someone", "drew"} <= {w for w, k in zip(c.vocabulary, c.training_words)
                                          if not k}


def test_the_tokenizer_reports_unknown_words_and_round_trips():
  c = captions.Captioner("mnist")
  ids = c.tokenize(["a thick, slanted seven", "the digit 7: written boldly."])
  assert ids.shape == (2, captions.MAX_LENGTH) and ids.dtype == np.int32
  assert c.decode(ids) == ["a thick slanted seven", "the digit 7 written boldly"]
  with pytest.raises(ValueError, match=r"Unknown word\(s\) \['purple', 'eigth'\]"):
    c.tokenize("a purple eigth")
  with pytest.raises(ValueError, match="No captions for dataset 'cifar10'"):
    captions.Captioner("cifar10")
  assert "ankle" in captions.Captioner("fashion_mnist").ids


@pytest.mark.parametrize("name", text.ENCODERS)
def test_each_encoder_gives_features_a_mask_and_a_pooled_vector(name):
  c = captions.Captioner("mnist")
  ids = jnp.asarray(np.concatenate([c.tokenize(["a thick seven", "one"]),
                                    np.zeros((1, captions.MAX_LENGTH), np.int32)]))
  enc = text.build_text_encoder(name, c.vocab_size, 8, depth=1, num_heads=2,
                                word_weights=np.ones(c.vocab_size))
  params = enc.init(jax.random.PRNGKey(0), ids)
  features, mask, pooled = enc.apply(params, ids)
  assert pooled.shape == (3, 8) and features.shape[0] == 3 and features.shape[-1] == 8
  if name in ("bow", "tfidf"):  # one vector for the caption
    assert features.shape[1] == 1
    np.testing.assert_array_equal(mask, [[True], [True], [False]])
  else:  # a feature per token, the padding masked
    assert features.shape[1] == captions.MAX_LENGTH
    np.testing.assert_array_equal(mask[:, :4], [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  # padding is no word: fewer padding columns give the same caption features
  f2, m2, p2 = enc.apply(params, ids[:, :5])
  np.testing.assert_allclose(p2, pooled, atol=1e-5)
  np.testing.assert_allclose(f2[:, :1] if name in ("bow", "tfidf") else f2[:, :3],
                             features[:, :1] if name in ("bow", "tfidf") else features[:, :3],
                             atol=1e-5)


def test_cross_attention_ignores_padded_tokens_and_the_empty_caption_adds_nothing():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  feats = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 6))
  mask = jnp.array([[True, True, False, False], [False] * 4])
  ca = text.CrossAttention()
  params = ca.init(jax.random.PRNGKey(2), x, feats, mask)
  params = jax.tree.map(lambda p: p + 0.1, params)  # the output layer starts at zero
  out = ca.apply(params, x, feats, mask)
  changed = feats.at[:, 2:].set(100.0)  # what stands in the padding
  np.testing.assert_allclose(ca.apply(params, x, changed, mask), out, atol=1e-6)
  np.testing.assert_allclose(out[1], x[1], atol=1e-6)  # no real token: the identity
  assert float(jnp.abs(out[0] - x[0]).max()) > 1e-3


def _runlocal():
  from experiments import t2i_mnist
  c = t2i_mnist.get_config("runlocal")
  c.experiment, c.experiment_arg = "t2i_mnist", "runlocal"
  return c


@pytest.mark.parametrize("name", ["bow", "tfidf"])
def test_the_bag_encoders_ignore_a_word_no_training_caption_contains(name):
  from genimg_jax import tasks
  c = _runlocal()
  c.model.text_encoder = name
  task = tasks.build_task(c)
  ids = jnp.asarray(task.captioner.tokenize(
      ["a thick seven", "someone drew a thick seven", "a thin seven", "someone drew"]))
  enc = task.text_encoder
  params = jax.tree.map(lambda p: p + 0.1, enc.init(jax.random.PRNGKey(0), ids))
  _, _, pooled = enc.apply(params, ids)
  np.testing.assert_array_equal(pooled[1], pooled[0])  # "someone drew": held-out filler
  assert float(jnp.abs(pooled[2] - pooled[0]).max()) > 1e-3  # a training word counts
  np.testing.assert_array_equal(pooled[3], params["params"]["Dense_0"]["bias"])  # nothing


def test_the_empty_caption_is_the_null_and_dropout_draws_it_with_its_probability():
  from genimg_jax import tasks
  c = _runlocal()
  c.diffusion.label_dropout = 0.3
  task = tasks.build_task(c)
  np.testing.assert_array_equal(task.null_labels(3), 0)
  images = jnp.asarray(np.stack([_bar(20, 2 + i % 3) for i in range(2000)]))
  batch = {"image": images, "label": jnp.arange(2000) % 10}
  key = jax.random.PRNGKey(0)
  y = np.asarray(jax.jit(task.train_conditioning)(batch, key))
  empty = (y == 0).all(1)
  assert 0.26 < empty.mean() < 0.34
  kept = np.asarray(jax.jit(task.caption)(jax.random.split(key)[0], images, batch["label"]))
  assert not (kept == 0).all(1).any()
  np.testing.assert_array_equal(y[~empty], kept[~empty])  # the rest: the image's caption
  # the metrics' prompts: captions of test images, naming each one's class
  tokens, classes = task.draw_conditioning(key, 20)
  names = captions.VOCABULARIES["mnist"]["class"]
  for t, y_ in zip(task.captioner.decode(tokens), np.asarray(classes)):
    assert any(f" {w} " in f" {t} " for w in names[y_]), (t, y_)
  assert "captions" in task.about_samples()["labels"]
  # guidance's unconditional half is the network on the empty caption
  params = jax.jit(lambda k: jax.tree.map(lambda p: p + 0.01, task.init_state(k).params))(key)

  @jax.jit
  def eps(params, z, logsnr, tokens):
    of = lambda y: task.formulation.to_x0_eps(task.predict(params, z, logsnr, y), z, logsnr)[1]
    return of(task.null_labels(len(z))), of(tokens), task.denoiser(params, tokens, 3.0)(z, logsnr)[1]

  null, cond, guided = eps(params, jax.random.normal(key, (2, 28, 28, 1)), jnp.zeros((2,)),
                           jnp.asarray(kept[:2]))
  assert float(jnp.abs(cond - null).max()) > 1e-4  # the caption changes the prediction
  np.testing.assert_allclose(guided, 4.0 * cond - 3.0 * null, rtol=1e-4, atol=1e-5)


def test_t2i_runlocal_end_to_end_resumes_bitwise_with_adherence_and_a_prompt(
    tmp_path, classifier_workdir, monkeypatch):
  """Trains, evaluates adherence and FID, samples a typed prompt; a run stopped by SIGTERM
  between checkpoints resumes to the uninterrupted run's weights and numbers bitwise (the
  captions are drawn inside the step from its key)."""
  from test_fault_tolerance import assert_resumes_bitwise
  from genimg_jax import train
  c = _runlocal()
  c.train.steps, c.train.log_every, c.train.checkpoint_every = 12, 6, 6
  c.metrics.classifier_workdir = classifier_workdir
  c.evals.sample_quality.type = "none"  # FD's path: the metrics' own tests; its prompts: above
  c.metrics.adherence_num_samples = 50
  c.metrics.batch_size = 50
  one = jax.devices()[:1]  # one device: the sharding is other tests' subject; its compile is not
  straight = train.run(c, str(tmp_path / "straight"), devices=one)
  m = straight["metrics"]
  for suffix in ("", "_heldout"):
    assert 0.0 <= m[f"test/adherence/class_accuracy{suffix}"] <= 1.0
    assert f"test/adherence/slant_corr{suffix}" in m
  ceiling = m["test/adherence/protocol"]["real_attribute_corr"]
  assert all(0.9 < v < 0.96 for v in ceiling.values())  # a tercile of a percentile: ~0.94
  assert "captions" in m["test/adherence/protocol"]["labels"]
  assert (tmp_path / "straight" / "samples.png").exists()
  assert_resumes_bitwise(c, str(tmp_path / "straight"), straight, str(tmp_path / "interrupted"),
                         monkeypatch, devices=one)
  # the evaluation's batch: its compiled sampler (an unknown word: the tokenizer's test)
  out = train.prompt_grid(c, str(tmp_path / "straight"), "a thick, slanted seven", 50,
                          devices=one)
  assert out.name == "a_thick_slanted_seven_n50_seed0.png" and out.exists()
