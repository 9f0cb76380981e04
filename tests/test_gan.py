"""GAN networks, the two-player step, EMA, the Inception port, and gan_mnist end to end."""
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax import parallel, tasks, train, xla
from genimg_jax.models import gan as gan_models

# One-step tests compile as the loop compiles init (xla.jit(once=True): LLVM level 1 on
# CPU): the same checks in less compile time, which is most of these tests' time.
fast_jit = lambda f: xla.jit(f, once=True)

SHARED_INCEPTION = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fid_inception_v3")


def gan_config(name="gan_mnist"):
  import importlib
  c = importlib.import_module(f"experiments.{name}").get_config("runlocal")
  c.experiment, c.experiment_arg = name, "runlocal"
  return c


@pytest.mark.parametrize("name,shape,classes,fc_units", [
    ("mlp", (28, 28, 1), 0, 0), ("dcgan", (28, 28, 1), 10, 0), ("dcgan", (32, 32, 3), 0, 0),
    ("dcgan", (28, 28, 1), 0, 16), ("resnet", (32, 32, 3), 10, 0)])
def test_gan_network_shapes(name, shape, classes, fc_units):
  c = gan_config().model
  c.name, c.num_classes, c.channels, c.mlp_units, c.fc_units = name, classes, 8, 8, fc_units
  g, d = gan_models.build_gan(c, shape)
  z = jnp.zeros((3, c.latent_dim))
  y = jnp.arange(3) if classes else None
  # G jitted (one compilation, not one per op); D only traced: its shapes are the check
  gv = jax.jit(functools.partial(g.init, train=False))(jax.random.PRNGKey(0), z, y)
  x = jax.jit(functools.partial(g.apply, train=False))(gv, z, y)
  assert x.shape == (3, *shape) and float(jnp.abs(x).max()) <= 1.0
  dv = jax.eval_shape(functools.partial(d.init, train=False), jax.random.PRNGKey(1), x, y)
  assert jax.eval_shape(functools.partial(d.apply, train=False), dv, x, y).shape == (3,)
  if fc_units:  # the fully connected hidden layer of G (before the seed) and of D
    assert gv["params"]["Dense_0"]["kernel"].shape == (c.latent_dim, fc_units)
    assert dv["params"]["Dense_0"]["kernel"].shape[1] == fc_units


def test_spectral_norm_drives_largest_singular_value_to_one():
  layer = nn.SpectralNorm(nn.Dense(16))
  x = jnp.ones((1, 32))
  v = layer.init(jax.random.PRNGKey(0), x, update_stats=False)
  kernel = v["params"]["layer_instance"]["kernel"] * 5.0
  v = {"params": {"layer_instance": {"kernel": kernel, "bias": v["params"]["layer_instance"]["bias"]}},
       "batch_stats": v["batch_stats"]}
  assert np.linalg.svd(np.asarray(kernel), compute_uv=False)[0] > 2.0
  for _ in range(30):  # power iterations accumulate in the u vector
    _, upd = layer.apply(v, x, update_stats=True, mutable=["batch_stats"])
    v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
  # the normalized map x -> x @ (W / sigma) has spectral norm 1
  eye = jnp.eye(32)
  w_sn = layer.apply(v, eye, update_stats=False) - v["params"]["layer_instance"]["bias"]
  np.testing.assert_allclose(np.linalg.svd(np.asarray(w_sn), compute_uv=False)[0], 1.0, rtol=1e-3)


def test_gan_step_metrics_and_ema():
  c = gan_config()
  c.gan.ema_decay = 0.9
  task = tasks.build_task(c)
  state = fast_jit(task.init_state)(jax.random.PRNGKey(0))
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (64, 28, 28, 1), minval=-1, maxval=1),
           "label": jnp.zeros((64,), jnp.int32)}
  new, metrics = fast_jit(task.train_step)(state, batch, jax.random.PRNGKey(2))
  assert {"d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"} <= set(metrics)
  # EMA: ema' = 0.9 ema + 0.1 g' with ema = g (initial)
  want = jax.tree.map(lambda e, g: 0.9 * e + 0.1 * g, state.ema_params, new.params["g"])
  for a, b in zip(jax.tree.leaves(new.ema_params), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert int(new.step) == 1


@pytest.mark.parametrize("penalty", ["wgan_gp", "dragan", "r1", "r2"])
def test_the_penalty_enters_the_critic_loss_with_its_weight(penalty):
  """With the Wasserstein loss, d_loss = mean D(fake) - mean D(real) + weight * penalty,
  all of it in the step's metrics (of the last critic update)."""
  c = gan_config()
  c.gan.penalty, c.gan.n_critic, c.gan.loss, c.gan.penalty_weight = penalty, 2, "wasserstein", 7.0
  c.model.name = "mlp"  # the loss's arithmetic, whatever the networks: the smallest compile
  task = tasks.build_task(c)
  state = fast_jit(task.init_state)(jax.random.PRNGKey(0))
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (128, 28, 28, 1), minval=-1, maxval=1),
           "label": jnp.zeros((128,), jnp.int32)}
  _, m = jax.device_get(fast_jit(task.train_step)(state, batch, jax.random.PRNGKey(2)))
  assert penalty in m and float(m[penalty]) > 0
  np.testing.assert_allclose(m["d_loss"], m["d_fake"] - m["d_real"] + 7.0 * m[penalty], rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("name", ["gan_mnist"])
def test_batchnorm_statistics_are_over_the_global_batch(name):
  """One step on 4 devices equals one step on 1 device (the DCGAN's G has BatchNorm).
  stylegan_mnist and biggan_mnist (the minibatch standard deviation, conditional
  BatchNorm) pass it as well when added to the list; each compiles for about 75 s on
  the 2-core machine, so the suite leaves them out."""
  c = gan_config(name)
  task = tasks.build_task(c)
  n = task.examples_per_step
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (n, 28, 28, 1), minval=-1, maxval=1),
           "label": jnp.arange(n, dtype=jnp.int32) % 10}
  outs = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    _, init, step = train.compile_fns(task, mesh, options=xla.once_options(None))
    b = jax.device_put(batch, parallel.batch_sharding(mesh))
    new, m = step(init(jax.random.PRNGKey(0)), b, jax.random.PRNGKey(2))
    outs.append((jax.device_get(new.batch_stats["g"]), jax.device_get(m)))
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_INCEPTION, "weights.npz")),
                    reason="Inception weights not in ../shared")
def test_inception_port_reproduces_reference_features():
  from genimg_jax.models import inception
  variables, sha = inception.load_params(os.path.join(SHARED_INCEPTION, "weights.npz"))
  ref = np.load(os.path.join(SHARED_INCEPTION, "reference.npz"))
  x = ref["images_uint8_NHWC"].astype(np.float32) / 128.0 - 1.0
  feats = jax.jit(inception.InceptionV3().apply)(variables, x)
  want = ref["features"]
  rel = np.abs(np.asarray(feats) - want).max() / np.abs(want).max()
  assert rel < 1e-4, rel
  assert len(sha) == 64
  # the protocol records the path as given (no machine's folders) beside the hash
  from genimg_jax import metrics
  given = os.path.relpath(os.path.join(SHARED_INCEPTION, "weights.npz"))
  protocol = metrics.inception_network(given).protocol
  assert protocol["weights"] == given and protocol["weights_sha256"] == sha


def test_gan_mnist_runlocal_end_to_end_resume_and_export(classifier_workdir, tmp_path):
  c = gan_config()
  c.metrics.classifier_workdir = os.path.relpath(classifier_workdir)  # as a user passes it
  c.metrics.cache_dir = str(tmp_path / "cache")
  workdir = str(tmp_path / "run")
  r = train.run(c, workdir)
  m = r["metrics"]
  for k in ("fd", "kid", "kid_stderr", "precision", "recall", "is", "fd_floor"):
    assert np.isfinite(m[f"test/classifier/{k}"]), k
  assert 1.0 <= m["test/classifier/is"] <= 10.0
  assert m["test/classifier/is"] < m["test/classifier/is_reference"] <= 10.0  # 20 steps vs real digits
  p = m["test/classifier/protocol"]
  assert p["num_samples"] == 200 and p["reference_split"] == "test" and len(p["weights_sha256"]) == 64
  assert m["test/classifier/fd_floor"] < m["test/classifier/fd"]
  assert os.path.exists(os.path.join(workdir, "samples.png"))
  assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(r["train_metrics"])
  assert len(os.listdir(c.metrics.cache_dir)) == 2  # test and train reference features
  assert p["weights"] == c.metrics.classifier_workdir  # the path as given, not this machine's
  with open(os.path.join(workdir, "results.json")) as f:
    text = f.read()
  assert json.loads(text)["metrics"]["test/classifier/protocol"]["dataset"] == "mnist"
  assert f'"{classifier_workdir}' not in text  # no absolute path of it anywhere
  # resume: a longer run continues from the last checkpoint
  c.train.steps = 30
  r2 = train.run(c, workdir)
  assert r2["resumed_from_step"] == 20 and r2["steps"] == 30
  _check_export(c, workdir, tmp_path)


def _read_export(folder):
  z = np.load(os.path.join(folder, "samples.npz"))
  with open(os.path.join(folder, "samples.json")) as f:
    return z["images"], z["labels"], json.load(f)


def _check_export(c, workdir, tmp_path):
  """--export_samples of the finished class-conditional run: uint8 PNGs and npz, labels,
  a record of what made them; the same seed gives the same samples (here and through
  launch.py, on one device), another seed others."""
  import subprocess
  import sys
  from PIL import Image
  out = train.export_samples(c, workdir, 12, seed=3)
  assert os.path.basename(str(out)) == "step30_n12_seed3"
  x, y, about = _read_export(out)
  assert x.shape == (12, 28, 28, 1) and x.dtype == np.uint8 and x.std() > 0
  assert y.shape == (12,) and y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
  assert len(set(y.tolist())) > 1  # labels drawn per sample, not one class
  pngs = sorted(os.listdir(os.path.join(out, "png")))
  assert pngs[0] == "000000.png" and len(pngs) == 12
  np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(out, "png", pngs[5])))[..., None], x[5])
  assert about["step"] == 30 and about["seed"] == 3 and about["num_samples"] == 12
  assert about["about"]["sampler"] == "EMA generator" and about["labels"] is True
  x2, y2, _ = _read_export(train.export_samples(c, workdir, 12, str(tmp_path / "again"), seed=3))
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  x3, _, _ = _read_export(train.export_samples(c, workdir, 12, str(tmp_path / "other"), seed=4))
  assert (x3 != x).any()
  # launch.py --export_samples (one device): the same files for the same seed
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["experiment"] == "gan_mnist"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
      [sys.executable, "launch.py", "--experiment=gan_mnist:runlocal", f"--workdir={workdir}",
       "--experiment.train.steps=30", f"--experiment.metrics.classifier_workdir={c.metrics.classifier_workdir}",
       f"--experiment.metrics.cache_dir={c.metrics.cache_dir}", "--export_samples=12",
       "--export_seed=3", f"--export_dir={tmp_path / 'launched'}"],
      cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Wrote 12 samples to {tmp_path / 'launched'}" in proc.stdout
  x4, y4, _ = _read_export(tmp_path / "launched")
  np.testing.assert_array_equal(y, y4)
  assert np.abs(x4.astype(int) - x).max() <= 1  # one device instead of four: at most a rounding


def test_missing_feature_networks_are_reported_not_fatal(tmp_path):
  c = gan_config()
  c.metrics.classifier_workdir = str(tmp_path / "nothing_here")
  c.metrics.inception_weights = str(tmp_path / "no_weights.npz")
  c.metrics.inception_num_samples = 10
  c.train.steps = 2
  r = train.run(c, str(tmp_path / "run"))
  assert "test/classifier/fd" not in r["metrics"]
  assert "no trained classifier" in r["metrics"]["test/classifier/skipped"]
  assert "Inception-v3 weights not found" in r["metrics"]["test/inception/skipped"]


def test_feature_network_with_zero_samples_is_left_out(tmp_path):
  from genimg_jax.evaluators import sample_quality
  c = gan_config()
  c.metrics.classifier_workdir = str(tmp_path / "nothing_here")
  c.metrics.inception_weights = str(tmp_path / "no_weights.npz")  # set, but N = 0
  c.metrics.inception_num_samples = 0
  names = [name for name, *_ in sample_quality.feature_networks(c)]
  assert names == ["classifier"]


def test_sngan_cifar10_runlocal_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds
  c = gan_config("sngan_cifar10")
  with tfds.testing.mock_data(num_examples=64):
    r = train.run(c, str(tmp_path))
  assert r["steps"] == 4 and np.isfinite(r["train_metrics"]["d_loss"])


def test_a_classifier_trained_on_other_data_is_refused_before_training(classifier_workdir, tmp_path):
  from genimg_jax import configs, evaluators, metrics
  from genimg_jax.evaluators import sample_quality
  c = configs.on_dataset(gan_config(), "fashion_mnist")
  c.metrics.classifier_workdir = classifier_workdir  # trained on MNIST
  c.metrics.cache_dir = str(tmp_path / "cache")
  with pytest.raises(ValueError, match="trained on 'mnist', but this run's data is 'fashion_mnist'"):
    train.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  # computed anyway when allowed, and marked so beside the numbers
  c.metrics.allow_mismatched = True
  evaluators.from_config(c, tasks.build_task(c))  # now accepted
  out = sample_quality.evaluate(c, lambda rng, n: metrics.real_images(c, "test", n),
                                jax.random.PRNGKey(0), {"sampler": "real test images"})
  protocol = out["classifier/protocol"]
  assert "trained on 'mnist'" in protocol["mismatched"] and protocol["trained_on"] == "mnist"
  assert np.isfinite(out["classifier/fd"])
