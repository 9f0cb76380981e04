"""The input pipeline on real MNIST: determinism, resume position, preprocessing, errors."""
import os

import numpy as np
import pytest

from genimg_jax import data


def _take(it, n):
  return [next(it) for _ in range(n)]


def _per_example_split(c, split):
  """The reference read of a split: tfds' examples one by one, {"image": uint8, "label":
  int32}, in the dataset's order (the simplest correct read, which data.py's batched read must equal)."""
  import tensorflow as tf
  ds = data.get_builder(c).as_dataset(split=split, shuffle_files=False)
  return ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)})


def test_batches_are_a_function_of_seed_and_step(runlocal_config):
  c = runlocal_config
  c.data.train_split = "train[:1000]"  # (the test reads the split 5 times)
  first = _take(data.train_batches(c, 0), 4)
  again = _take(data.train_batches(c, 0), 4)
  resumed = _take(data.train_batches(c, 2), 2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(first[2:], resumed):  # resuming at step 2 yields batches 2, 3
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert not np.array_equal(first[0]["image"], first[1]["image"])
  c.seed = 1
  other = _take(data.train_batches(c, 0), 1)
  assert not np.array_equal(other[0]["label"], first[0]["label"])


def test_resume_across_an_epoch_boundary(runlocal_config):
  c = runlocal_config
  c.train.batch_size = 20_000  # 3 steps per epoch of 60,000
  straight = _take(data.train_batches(c, 0), 5)
  resumed = _take(data.train_batches(c, 4), 1)
  np.testing.assert_array_equal(straight[4]["label"], resumed[0]["label"])
  # each epoch is a permutation of the whole split, different per epoch
  epoch0 = np.concatenate([b["label"] for b in straight[:3]])
  assert np.bincount(epoch0).sum() == 60_000
  assert not np.array_equal(straight[0]["label"], straight[3]["label"])


def _per_example_batches(c, global_bs, start_step):
  """The reference form of the stream: tf.data shuffles the examples themselves (the
  simplest form of the pipeline, which data.py's stacked one must equal)."""
  import tensorflow as tf
  ds = _per_example_split(c, c.data.train_split)
  n = data.num_examples(c, c.data.train_split)
  seed = int(c.seed)
  epoch_ds = lambda e: ds.shuffle(min(c.data.shuffle_buffer, n), seed=seed * 1_000_003 + e,
                                  reshuffle_each_iteration=False)
  start_epoch, skip = divmod(start_step * global_bs, n)
  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_ds).skip(skip)
  ds = ds.batch(global_bs, drop_remainder=True).enumerate(start=start_step)
  key = lambda step: tf.stack([tf.cast(seed, tf.int64), step])
  ds = ds.map(lambda step, b: dict(b, image=data.preprocess(b["image"], c.data.preprocess, key(step))))
  return ds.as_numpy_iterator()


def test_stream_equals_a_per_example_shuffle_of_the_split(runlocal_config):
  """The in-memory, index-shuffling pipeline yields bit for bit the batches of a tf.data
  shuffle of the examples (same seeds), across epoch boundaries and on resume."""
  c = runlocal_config
  c.data.train_split = "train[:1000]"   # an epoch of 1000 examples: boundaries every ~10 steps
  c.data.shuffle_buffer = 600            # a partial shuffle too
  fast, ref = data.train_batches(c, 0, 96), _per_example_batches(c, 96, 0)
  for step in range(23):
    a, b = next(fast), next(ref)
    np.testing.assert_array_equal(a["image"], b["image"], err_msg=f"step {step}")
    np.testing.assert_array_equal(a["label"], b["label"], err_msg=f"step {step}")
  fast, ref = data.train_batches(c, 21, 96), _per_example_batches(c, 96, 21)
  np.testing.assert_array_equal(next(fast)["image"], next(ref)["image"])


def test_stacked_and_skipping_streams_are_the_plain_stream_regrouped(runlocal_config):
  """stack=k yields k consecutive batches as [k, ...] arrays, and skip leaves those data
  indices out: what the loop feeds train.steps_per_call=k after a rollback."""
  c = runlocal_config
  c.data.train_split = "train[:1000]"
  plain = _take(data.train_batches(c, 3), 8)  # data indices 3..10
  stacked = _take(data.train_batches(c, 3, stack=3, skip={4, 9}), 2)
  kept = [b for i, b in enumerate(plain, start=3) if i not in (4, 9)]  # 3, 5, 6, 7, 8, 10
  for key in ("image", "label"):
    assert stacked[0][key].shape == (3, *plain[0][key].shape)
    np.testing.assert_array_equal(np.concatenate([s[key] for s in stacked]),
                                  np.stack([b[key] for b in kept]))


@pytest.mark.parametrize("batch_size,stack,preprocess", [(100, 1, "binarize"), (60, 3, "symmetric")])
def test_batch_spec_is_what_the_stream_yields(runlocal_config, batch_size, stack, preprocess):
  """train_batch_spec (what train.run compiles the step for while the split is read) has
  the shapes and dtypes of the batches, stacked or not."""
  c = runlocal_config
  c.data.train_split, c.data.preprocess = "train[:1000]", preprocess
  b = next(data.train_batches(c, 0, batch_size, stack=stack))
  spec = data.train_batch_spec(c, batch_size, stack)
  assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
      k: (s.shape, s.dtype) for k, s in spec.items()}


def test_dynamic_binarization(runlocal_config):
  c = runlocal_config
  c.data.train_split = "train[:1000]"
  b = next(data.train_batches(c, 0))
  assert b["image"].shape == (100, 28, 28, 1) and b["image"].dtype == np.float32
  assert set(np.unique(b["image"])) <= {0.0, 1.0}
  c.data.preprocess = "symmetric"
  b = next(data.train_batches(c, 0))
  assert b["image"].min() == -1.0 and b["image"].max() == 1.0 and len(np.unique(b["image"])) > 2


def test_binarize_is_bernoulli_of_pixel_over_255():
  """Each pixel value v is 1 with probability v/255 (exactly 0 and 1 at the ends); the
  noise is a function of the seed. Inputs: every uint8 value, 4096 pixels each."""
  import tensorflow as tf
  values = tf.constant(np.repeat(np.arange(256, dtype=np.uint8), 4096).reshape(256, 64, 64, 1))
  out = data.binarize(values, tf.constant([3, 7], tf.int64)).numpy()
  assert out.dtype == np.float32 and out.shape == (256, 64, 64, 1)
  assert set(np.unique(out)) == {0.0, 1.0}
  assert out[0].max() == 0.0 and out[255].min() == 1.0
  p = np.arange(256) / 255
  freq = out.reshape(256, -1).mean(1)
  sigma = np.sqrt(p * (1 - p) / 4096) + 1e-9
  assert np.all(np.abs(freq - p) <= 5 * sigma), np.abs(freq - p).max()
  again = data.binarize(values, tf.constant([3, 7], tf.int64)).numpy()
  other = data.binarize(values, tf.constant([3, 8], tf.int64)).numpy()
  np.testing.assert_array_equal(out, again)
  assert (out != other).mean() > 0.1


def test_eval_batches_cover_the_split_once_with_a_mask(runlocal_config):
  c = runlocal_config
  c.eval.batch_size = 64
  batches = list(data.eval_batches(c, num_examples_limit=200))
  assert len(batches) == 4
  assert sum(b["mask"].sum() for b in batches) == 200
  assert batches[-1]["mask"].tolist() == [1.0] * 8 + [0.0] * 56
  again = list(data.eval_batches(c, num_examples_limit=200))
  np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])
  # the split's first 200 examples in its order (the per-example read's), zeros after them
  ref = next(_per_example_split(c, c.data.eval_split).batch(200).as_numpy_iterator())
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels[:200], ref["label"])
  assert not labels[200:].any() and not batches[-1]["image"][8:].any()
  c.data.preprocess = "unit"
  unit = np.concatenate([b["image"] for b in data.eval_batches(c, num_examples_limit=200)])
  np.testing.assert_array_equal(unit[:200], ref["image"] / np.float32(255))


def test_missing_dataset_error_names_dataset_dir_and_env(runlocal_config, tmp_path, monkeypatch):
  c = runlocal_config
  c.data.name = "fashion_mnist"
  c.data.data_dir = str(tmp_path)
  monkeypatch.setattr(data.tfds.core.DatasetBuilder, "download_and_prepare",
                      lambda self, *a, **k: (_ for _ in ()).throw(ConnectionError("no network")))
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.get_builder(c)
  msg = str(e.value)
  assert "fashion_mnist" in msg and str(tmp_path) in msg and "TFDS_DATA_DIR" in msg


def test_unknown_dataset_is_rejected(runlocal_config):
  runlocal_config.data.name = "mnistt"
  with pytest.raises(ValueError, match="Unknown dataset 'mnistt'"):
    data.get_builder(runlocal_config)


def _flip_a_byte_of_the_test_file(ddir):
  """Flips one byte of the MNIST test file in a copied tfds dir `ddir`, inside its first
  200 examples; returns the file's path."""
  bad = next((ddir / "mnist").glob("*/mnist-test.tfrecord-*"))
  os.chmod(bad, 0o644)
  with open(bad, "r+b") as f:
    f.seek(20_000)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  return bad


def test_a_damaged_tfrecord_is_one_line_naming_the_file(tmp_path):
  """A byte flipped in MNIST's test file (a copy), among the examples the runlocal
  evaluation reads: the run trains, then its evaluation stops with one line that names
  the file, exit code 2."""
  import shutil
  import subprocess
  import sys
  ddir = tmp_path / "tfds"
  shutil.copytree(os.path.join(os.environ["TFDS_DATA_DIR"], "mnist"), ddir / "mnist")
  bad = _flip_a_byte_of_the_test_file(ddir)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["TFDS_DATA_DIR"] = str(ddir)
  proc = subprocess.run([sys.executable, "launch.py", "--experiment=vae_mnist:runlocal",
                         f"--workdir={tmp_path / 'run'}", "--experiment.train.steps=2",
                         "--experiment.train.checkpoint_every=2", "--experiment.train.log_every=2"],
                        cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "'mnist' is damaged" in errors[0] and str(bad) in errors[0] and "again" in errors[0]
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["2"]  # the training was saved


def test_a_split_is_read_once_per_process_and_again_when_its_file_changes(runlocal_config,
                                                                          tmp_path):
  """The process keeps the splits it read (read-only): a second read is the same arrays;
  mock data under the same name is neither served them nor kept; after a byte of the file
  changes on disk the split is read from the file again (here: the damaged-file error,
  not the kept arrays)."""
  import shutil
  c = runlocal_config
  c.data.data_dir = str(tmp_path / "tfds")
  shutil.copytree(os.path.join(os.environ["TFDS_DATA_DIR"], "mnist"), tmp_path / "tfds" / "mnist")
  first = data._arrays(c, "test", limit=500)
  assert data._arrays(c, "test", limit=500) is first
  assert data._arrays(c, "test", limit=400) is not first  # another limit: other arrays
  np.testing.assert_array_equal(data._arrays(c, "test", limit=400)["image"], first["image"][:400])
  with pytest.raises(ValueError, match="read-only"):
    first["image"][0] = 0
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=64):  # random examples, same name: never kept
    mocked = data._arrays(c, "test", limit=500)
  assert mocked is not first and len(mocked["label"]) == 64
  assert data._arrays(c, "test", limit=500) is first
  _flip_a_byte_of_the_test_file(tmp_path / "tfds")
  with pytest.raises(data.DatasetDamagedError):
    data._arrays(c, "test", limit=500)
