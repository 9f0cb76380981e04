"""The benchmark's jax worker measures a real compiled step (numbers are checked for
sanity only; speed is reported by `python -m benchmarks.run`, never asserted)."""
import argparse

import numpy as np

from benchmarks import run as bench


def test_jax_worker_measures_the_train_step(tmp_path):
  path = str(tmp_path / "batches.npz")
  bench.write_batches("vae_mnist", 8, 4, path)
  images = np.load(path)["image"]
  assert images.shape == (4, 8, 28, 28, 1) and set(np.unique(images)) <= {0.0, 1.0}  # real, binarized
  args = argparse.Namespace(network="vae_mnist", batch=8, batches_file=path, steps_per_call=2,
                            donate=1, sync_every_call=0, dtype="float32", xla_defaults=0,
                            repeats=2, min_seconds=0.01)
  r = bench.jax_worker(args)
  assert r["images_per_s"] > 0 and r["min"] <= r["images_per_s"] <= r["max"]
  assert r["devices"] == 4 and r["compile_s"] > 0 and r["peak_rss_mib"] > 0
  # MLP VAE, batch 8: at least the forward and backward matmuls (6 x 2 x 8 x 784 x 256)
  assert r["flops_per_step"] > 6 * 2 * 8 * 784 * 256
