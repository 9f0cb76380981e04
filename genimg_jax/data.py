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
only example *indices* (each epoch's permutation is the one a per-example shuffle of
the examples with the same seed gives: tests/test_data.py compares with that form), and
each batch is one gather plus the preprocessing.

TensorFlow only runs on the host CPU; it is hidden from accelerators.
"""
import inspect
import os
import socket
import urllib.parse

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import jax

from genimg_jax import parallel

tf.config.set_visible_devices([], "GPU")

PREPROCESS = ("binarize", "unit", "symmetric")


class DatasetUnavailableError(ValueError):
  """The dataset is neither prepared on disk nor downloadable (a user error)."""


class DatasetDamagedError(DatasetUnavailableError):
  """A file of the prepared dataset does not read (a user error: prepare it again)."""


# tfds.testing.mock_data replaces this method of DatasetBuilder by a no-op; a run under it
# needs no download. Compared as the class attribute itself (inspect.getattr_static): tfds
# wraps the method, so each plain attribute access makes a new object.
_DOWNLOAD_AND_PREPARE = inspect.getattr_static(tfds.core.DatasetBuilder, "download_and_prepare")
DOWNLOAD_HOST = ("storage.googleapis.com", 443)  # where tfds fetches prepared datasets first
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


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
    if not _mocked(builder):
      host = _download_route()
      if not _reachable(host):
        raise DatasetUnavailableError(_unavailable(
            name, ddir, builder, f"there is no network ({host[0]}:{host[1]} is unreachable)"))
    try:
      builder.download_and_prepare()
    except Exception as e:  # no permission, a server error, ...
      raise DatasetUnavailableError(_unavailable(
          name, ddir, builder, f"the download failed ({type(e).__name__}: {str(e)[:200]})")) from e
  return builder


def _mocked(builder):
  """Whether tfds.testing.mock_data stands in for the download (nothing to fetch)."""
  return inspect.getattr_static(type(builder), "download_and_prepare") is not _DOWNLOAD_AND_PREPARE


def _download_route():
  """(host, port) that tfds's first connection goes to: the HTTPS proxy when one is set
  ($https_proxy, $all_proxy), else DOWNLOAD_HOST."""
  for var in PROXY_VARIABLES:
    if os.environ.get(var):
      url = os.environ[var]
      parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
      default = {"https": 443, "socks5": 1080, "socks5h": 1080}.get(parts.scheme, 80)
      return parts.hostname or "", parts.port or default
  return DOWNLOAD_HOST


def _reachable(host, timeout=3.0):
  """Whether `host` (host, port) accepts a connection within `timeout` seconds: the check
  that tfds could download, in seconds rather than its minutes of retries."""
  try:
    socket.create_connection(host, timeout=timeout).close()
    return True
  except OSError:
    return False


def _unavailable(name, ddir, builder, why):
  return (f"Dataset {name!r} is not prepared in the tfds data dir {ddir} (looked for "
          f"{os.path.join(ddir, name, str(builder.version))}) and cannot be downloaded: {why}. "
          f"Either set TFDS_DATA_DIR (or --experiment.data.data_dir) to a folder that holds "
          f"{name}/{builder.version}/ as tfds prepares it; or, on a machine with internet, "
          f"run `python -c \"import tensorflow_datasets as tfds; "
          f"tfds.builder('{name}').download_and_prepare()\"` and copy "
          f"~/tensorflow_datasets/{name} into {ddir}; or, only to check that the code runs, "
          "pass --mock_data=64 (random images of the dataset's shapes).")


def _damaged(config, builder, split, error):
  """What to say when a split's files do not read: which file, and what to do."""
  try:
    paths = [os.fspath(p) for p in builder.info.splits[split].filepaths]
  except Exception:  # an info without file lists (mock_data): name none
    paths = []
  bad = []
  for path in paths:  # read each file on its own: the record checksums tell which is damaged
    try:
      for _ in tf.data.TFRecordDataset(path, buffer_size=8 << 20):
        pass
    except tf.errors.DataLossError:
      bad.append(path)
  where = ", ".join(bad) if bad else f"a file of {split} ({error.message.splitlines()[0][:200]})"
  folder = os.path.join(data_dir(config), config.data.name, str(builder.version))
  return (f"Dataset {config.data.name!r} is damaged on disk: {where} does not read (a record "
          f"fails its checksum). Prepare it again: delete {folder} and rerun (tfds downloads "
          "and prepares it where there is a network), or copy it again from a good copy.")


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
  cores, fixed. Faster on a CPU host, where the pipeline shares the cores with the train
  step, and with autotuning on, deleting the iterator waits for its optimization thread
  (tens of seconds at the end of a run). Measurements: benchmarks/README.md, "Design notes".
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


_KEPT = {}  # _files_key -> arrays: the splits this process has read (see _arrays)
KEEP_SPLITS = 4


def _files_key(builder, split, limit):
  """What identifies a split's arrays: its files (path, size, modification time), the
  split and the limit; None where there are no files to name (tfds.testing.mock_data)."""
  try:
    paths = [os.fspath(p) for p in builder.info.splits[split].filepaths]
    stats = [os.stat(p) for p in paths]
  except Exception:  # no file list (mock data), a store os.stat cannot reach: not kept
    return None
  if not paths:
    return None
  return tuple((p, s.st_size, s.st_mtime_ns) for p, s in zip(paths, stats)) + (split, limit)


def _arrays(config, split, limit=0):
  """A whole split in host memory: {"image": uint8 [N, H, W, C], "label": int32 [N]}
  (label -1 where the dataset has none), in the dataset's order; only its first `limit`
  examples if limit > 0.

  Read in batches by tfds itself, decoding only these features (the same arrays as a
  per-example read, tests/test_data.py's reference, in less time). The process keeps the
  last KEEP_SPLITS splits it read, read-only, so that a second run in the same process (a
  sweep's trials, a test session, the text-to-image task's statistics and its input
  pipeline) does not decode the files again; a file changed on disk (another size or
  modification time) is read again, and mock data is never kept.
  """
  builder = get_builder(config)
  key = _files_key(builder, split, limit)
  if key in _KEPT:
    return _KEPT[key]
  has_label = "label" in builder.info.features
  keep = tfds.decode.PartialDecoding({"image": True, **({"label": True} if has_label else {})})
  batch = min(8192, limit) if limit > 0 else 8192
  ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=batch, decoders=keep)
  if limit > 0:
    ds = ds.take(-(-limit // batch))
  try:
    chunks = list(_fixed_parallelism(ds).as_numpy_iterator())
  except tf.errors.DataLossError as e:
    raise DatasetDamagedError(_damaged(config, builder, split, e)) from None
  image = np.concatenate([c["image"] for c in chunks])[:limit or None]
  label = (np.concatenate([c["label"] for c in chunks])[:limit or None].astype(np.int32)
           if has_label else np.full(len(image), -1, np.int32))
  arrays = {"image": image, "label": label}
  if key is not None:
    for v in arrays.values():
      v.flags.writeable = False  # shared by every later read in this process
    _KEPT[key] = arrays
    while len(_KEPT) > KEEP_SPLITS:
      del _KEPT[next(iter(_KEPT))]  # the oldest
  return arrays


def is_mocked(config):
  """Whether tfds.testing.mock_data stands in for the dataset (random examples)."""
  return _mocked(get_builder(config))


def split_arrays(config, split):
  """A whole split in host memory, {"image": uint8 [N, H, W, C], "label": int32 [N]} (what
  a task measures on the data itself, e.g. the captions' attribute levels)."""
  return _arrays(config, split)


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
  exactly 0 at v = 0 and 1 at v = 255 (tests/test_data.py). 16 bits rather than a float32
  uniform per pixel: half the random numbers, which are most of the pipeline's CPU. The
  halves are taken in the host's byte order (little-endian on x86-64 and ARM hosts).
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
  compiled call of train.steps_per_call=k steps (stacked by tf.data itself).
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

  # Each epoch's permutation is made whole (tf.data's shuffle of range(n), batched to one
  # [n] tensor) and cut into batches by `rebatch`: the same indices as a per-index stream
  # (flat_map of the shuffles, skip, batch; tests/test_data.py), without passing each
  # index through tf.data on its own.
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


def eval_batches(config, split=None, num_examples_limit=0, originals=False):
  """This process's rows of the global eval batches, one pass, in order.

  The last batch is padded to the global batch size; "mask" is 1 on real rows.
  Binarization uses a fixed seed, so every evaluation sees the same test set.
  originals: also "original", the images' gray levels in [0, 1] before preprocessing.
  The split (its first num_examples_limit examples when > 0) is read by `_arrays`.
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
    if originals:
      batch["original"] = preprocess(batch["image"], "unit", key)
    batch["image"] = preprocess(batch["image"], config.data.preprocess, key)
    return _process_rows(batch, global_bs)

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(config.data.prefetch)
  return _fixed_parallelism(ds).as_numpy_iterator()
