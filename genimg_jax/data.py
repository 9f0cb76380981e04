"""Input pipeline: tfds -> tf.data -> per-process numpy -> global sharded jax.Array.

Determinism and multi-host. Every process builds the same stream of examples
(one seeded shuffle per epoch of the full split), cuts it into *global* batches,
preprocesses each global batch with a key derived from (seed, step), and keeps
only its own rows: process i holds rows [i*L, (i+1)*L) with L = global/processes.
So the global batch at step s is the same whatever the number of processes or
devices (1 host x 4 devices == 2 hosts x 2 devices, bit for bit), and resuming
at step s needs only s: the stream is rebuilt from the epoch that step falls in.
The cost is that each host reads the whole split, which is right for datasets
that fit in host memory (MNIST, CIFAR); a file-sharded reader is future work.

Speed. The training split is held in host memory as uint8 arrays; tf.data shuffles
only example *indices* (the per-epoch shuffle of range(N) with the seeds it always
had, so the permutation, hence every batch, is the one a per-example shuffle of
the examples gives: tests/test_data.py compares with that form), and each batch is
one gather plus the preprocessing. Measured for vae_mnist at batch 1024 on 2 CPU
cores (2026-11-22, the pipeline alone, two rounds of 3 timings each): 127k-189k
images/s with the per-example form, 234k-276k with this.

TensorFlow only runs on the host CPU; it is hidden from accelerators.
"""
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import jax

from genimg_jax import parallel

tf.config.set_visible_devices([], "GPU")

PREPROCESS = ("binarize", "unit", "symmetric")


class DatasetUnavailableError(RuntimeError):
  """The dataset is neither prepared on disk nor downloadable."""


def data_dir(config):
  """The tfds data dir: config.data.data_dir, else $TFDS_DATA_DIR, else tfds' default."""
  return (config.data.data_dir or os.environ.get("TFDS_DATA_DIR")
          or os.path.expanduser("~/tensorflow_datasets"))


def get_builder(config):
  """The tfds builder for config.data.name, prepared (downloading if it can)."""
  name, ddir = config.data.name, data_dir(config)
  try:
    builder = tfds.builder(name, data_dir=ddir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"Unknown dataset {name!r}: tfds has no builder of that name "
                     f"(see tfds.list_builders()).") from e
  if not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception as e:  # no network, no permission, ...: say where we looked
      raise DatasetUnavailableError(
          f"Dataset {name!r} is not prepared in data dir {ddir!r} and could not be "
          f"downloaded ({type(e).__name__}: {str(e)[:200]}). Set TFDS_DATA_DIR (or "
          f"--experiment.data.data_dir) to a folder holding {name}/<version>/, "
          f"e.g. TFDS_DATA_DIR=../shared/tensorflow_datasets.") from e
  return builder


def image_shape(config):
  """(H, W, C) of the dataset's images."""
  return tuple(get_builder(config).info.features["image"].shape)


def num_examples(config, split):
  """Examples in a split, from the dataset info (counted where the info has no splits,
  as under tfds.testing.mock_data)."""
  builder = get_builder(config)
  try:
    return builder.info.splits[split].num_examples
  except KeyError:
    ds = builder.as_dataset(split=split)
    n = int(ds.cardinality())
    return n if n >= 0 else sum(1 for _ in ds)


def _fixed_parallelism(ds):
  """`ds` with tf.data's autotuning off: AUTOTUNE then means as many parallel calls as
  cores, fixed. Measured on 2 CPU cores (2026-11-22, vae_mnist's pipeline alone, three
  alternating rounds): 143k-164k -> 235k-242k images/s at batch 100 and 1.0 -> 0.77 ms of
  CPU per batch (CPU the training step shares on a CPU host); 191k-194k -> 286k-288k at
  batch 1024. And with autotuning on, deleting the iterator waited for its optimization
  thread, which cancellation does not wake: 37 and 47 s at the end of two 20,000-step
  launch.py runs (gdb: ~RootDataset::Iterator waiting on Model::OptimizeLoop).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def _arrays(config, split, limit=0):
  """A whole split in host memory: {"image": uint8 [N, H, W, C], "label": int32 [N]}
  (label -1 where the dataset has none), in the dataset's order; only its first `limit`
  examples if limit > 0.

  Read in batches by tfds itself, decoding only these features: MNIST's training split
  in 2.2-2.4 s instead of 3.0-3.1 s through a per-example map (2 CPU cores, 2026-11-27,
  two rounds; the same arrays; that map is tests/test_data.py's reference read).
  """
  builder = get_builder(config)
  has_label = "label" in builder.info.features
  keep = tfds.decode.PartialDecoding({"image": True, **({"label": True} if has_label else {})})
  batch = min(8192, limit) if limit > 0 else 8192
  ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=batch, decoders=keep)
  if limit > 0:
    ds = ds.take(-(-limit // batch))
  chunks = list(_fixed_parallelism(ds).as_numpy_iterator())
  image = np.concatenate([c["image"] for c in chunks])[:limit or None]
  label = (np.concatenate([c["label"] for c in chunks])[:limit or None].astype(np.int32)
           if has_label else np.full(len(image), -1, np.int32))
  return {"image": image, "label": label}


def preprocess(image_uint8, mode, seed):
  """uint8 images -> float32 model input. `seed`: int[2] for binarization."""
  if mode == "binarize":
    return binarize(image_uint8, seed)
  x = tf.cast(image_uint8, tf.float32) / 255.0
  if mode == "unit":
    return x
  if mode == "symmetric":
    return x * 2.0 - 1.0
  raise ValueError(f"Unknown data.preprocess {mode!r}; allowed: {PREPROCESS}")


def binarize(image_uint8, seed):
  """Dynamic binarization: pixel value v -> 1.0 with probability v/255, else 0.0.

  Each pixel draws a 16-bit uniform integer u (two per 32-bit number of TF's stateless
  Philox) and is 1 iff u + 0.5 < 65536 v / 255: the probability is v/255 to within 2^-17,
  exactly 0 at v = 0 and 1 at v = 255 (tests/test_data.py). Why 16 bits, not a float32
  uniform per pixel (the form before 2026-11-22, which the recorded vae runs up to then
  used): TF's Philox costs ~5 ns per 32-bit number on one core, which was most of the
  pipeline's CPU; halving the numbers took vae_mnist's pipeline alone at batch 1024 from
  223k-298k to 356k-387k images/s and its CPU per batch of 100 from 0.85-0.95 to
  0.63-0.72 ms (2 CPU cores, alternating runs of 3 timings). The halves are taken
  in the host's byte order (little-endian on x86-64 and ARM hosts).
  """
  shape, n = tf.shape(image_uint8), tf.size(image_uint8)
  bits = tf.random.stateless_uniform([(n + 1) // 2], seed=seed, minval=None, maxval=None,
                                     dtype=tf.uint32)
  u = tf.reshape(tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:n], shape)
  threshold = tf.cast(image_uint8, tf.float32) * (65536 / 255) - 0.5
  return tf.cast(tf.cast(u, tf.float32) < threshold, tf.float32)


def _process_rows(batch, global_batch_size):
  """This process's contiguous slice of a global batch."""
  local = parallel.local_batch_size(global_batch_size)
  start = jax.process_index() * local
  return {k: v[start:start + local] for k, v in batch.items()}


def train_batches(config, start_index=0, batch_size=None, stack=1, skip=()):
  """Yields this process's numpy rows of the global training batches from data index
  `start_index` on.

  Batch i is a pure function of (config.seed, i), so a resumed run sees exactly the
  batches the uninterrupted run would have. batch_size: global examples per step
  (default train.batch_size; a GAN with n_critic D steps takes n_critic times that).
  skip: data indices left out of the stream (the batches a non-finite rollback skipped).
  stack=k: k consecutive batches at a time, as [k, rows, ...] arrays: the input of one
  compiled call of train.steps_per_call=k steps. Stacking them in tf.data rather than
  numpy batches in Python (before 2026-11-27): vae_mnist's pipeline at k=10, batch 100,
  0.96-0.98 -> 0.63-0.70 ms of CPU per batch (2 CPU cores, one process, two rounds),
  the same arrays.
  """
  global_bs = batch_size or config.train.batch_size
  split = _arrays(config, config.data.train_split)
  n = len(split["label"])
  if global_bs > n:
    raise ValueError(f"train.batch_size={global_bs} exceeds the {n} examples of "
                     f"{config.data.name}:{config.data.train_split}.")
  split = {k: tf.constant(v) for k, v in split.items()}
  seed = int(config.seed)
  buffer = max(1, min(config.data.shuffle_buffer, n))
  start_epoch, offset = divmod(start_index * global_bs, n)

  # Each epoch's permutation is made whole (tf.data's shuffle of range(n), the seeds it
  # always had, batched to one [n] tensor) and cut into batches by `rebatch`: the same
  # indices as the per-index stream (flat_map of the shuffles, skip, batch) used before
  # 2026-11-28 (tests/test_data.py), without passing 100 scalars per batch through it.
  # vae_mnist's pipeline at k=10, batch 100 (2 CPU cores, 3 alternating rounds of 3,000
  # batches): 0.59-0.65 vs 0.67-0.76 ms of CPU per batch.
  def permutation(epoch):
    return tf.data.Dataset.range(n).shuffle(
        buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False
    ).batch(n).get_single_element()

  first = tf.data.Dataset.from_tensors(tf.constant(start_epoch, tf.int64))
  first = first.map(lambda e: permutation(e)[offset:])  # resuming mid-epoch
  rest = tf.data.Dataset.range(start_epoch + 1, 2**62).map(permutation)
  ds = first.concatenate(rest).rebatch(global_bs, drop_remainder=True)
  ds = ds.enumerate(start=start_index)
  if skip:
    skipped = tf.constant(sorted(skip), tf.int64)
    ds = ds.filter(lambda i, _: tf.reduce_all(tf.not_equal(i, skipped)))

  def prepare(i, indices):
    batch = {k: tf.gather(v, indices) for k, v in split.items()}
    key = tf.stack([tf.cast(seed, tf.int64), i])
    batch["image"] = preprocess(batch["image"], config.data.preprocess, key)
    return _process_rows(batch, global_bs)

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if stack > 1:
    ds = ds.batch(stack)
  ds = ds.prefetch(config.data.prefetch)
  return _fixed_parallelism(ds).as_numpy_iterator()


def train_batch_spec(config, batch_size=None, stack=1):
  """Shapes and dtypes of what train_batches(config, ..., batch_size, stack) yields, without
  reading the data: {"image": float32 [stack, rows, H, W, C], "label": int32 [stack, rows]}
  (no leading stack axis when stack == 1; rows: this process's). What the train step is
  compiled for while the split is read (train.run); tests/test_data.py compares with
  the batches.
  """
  rows = parallel.local_batch_size(batch_size or config.train.batch_size)
  lead = (stack, rows) if stack > 1 else (rows,)
  return {"image": jax.ShapeDtypeStruct(lead + image_shape(config), np.float32),
          "label": jax.ShapeDtypeStruct(lead, np.int32)}


def eval_batches(config, split=None, num_examples_limit=0):
  """This process's rows of the global eval batches, one pass, in order.

  The last batch is padded to the global batch size; "mask" is 1 on real rows.
  Binarization uses a fixed seed, so every evaluation sees the same test set.
  The split (its first num_examples_limit examples when > 0) is read by `_arrays`: MNIST's
  test split in 0.57-0.82 s vs 1.09-1.58 s through the per-example map used before
  2026-11-27 (2 CPU cores, three alternating rounds); the same batches (tests/test_data.py).
  """
  split = split or config.data.eval_split
  global_bs = config.eval.batch_size
  arrays = _arrays(config, split, limit=num_examples_limit)
  n = len(arrays["label"])
  batches = -(-n // global_bs)

  def padded(v):  # [batches, global_bs, ...], zeros after the n real rows
    out = np.zeros((batches * global_bs,) + v.shape[1:], v.dtype)
    out[:n] = v
    return out.reshape((batches, global_bs) + v.shape[1:])

  arrays = {k: padded(v) for k, v in arrays.items()}
  arrays["mask"] = padded(np.ones(n, np.float32))
  ds = tf.data.Dataset.from_tensor_slices(arrays).enumerate()

  def prepare(i, batch):
    key = tf.stack([tf.constant(2**31 - 1, tf.int64), i])  # fixed, independent of seed
    batch["image"] = preprocess(batch["image"], config.data.preprocess, key)
    return _process_rows(batch, global_bs)

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(config.data.prefetch)
  return _fixed_parallelism(ds).as_numpy_iterator()
