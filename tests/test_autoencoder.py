"""The autoencoder task: its bottlenecks (VQ, FSQ, KL) and its runs end to end.

Exact resume of a VQ run (the EMA codebook and its restarts in the state) is
tests/test_fault_tolerance.py's vqvae_mnist case; fsq_mnist:runlocal end to end is the
first half of tests/test_maskgit.py's end-to-end test (the prior over its codes).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax.models import bottlenecks


def test_the_straight_through_estimator_passes_the_gradient_to_the_encoder_unchanged():
  vq = bottlenecks.VectorQuantizer(num_codes=8, code_dim=3, codebook_ema=0.0)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  v = vq.init(jax.random.PRNGKey(1), z)
  c = jax.random.normal(jax.random.PRNGKey(2), z.shape)
  out, _, _ = vq.apply(v, z)
  # the forward pass is the nearest code, not z ...
  book = v["params"]["codebook"]
  nearest = book[jnp.argmin(((z[..., None, :] - book)**2).sum(-1), -1)]
  np.testing.assert_allclose(out, nearest, atol=1e-6)
  assert float(jnp.abs(out - z).max()) > 0.1
  # ... and a loss on the decoder's side sends its gradient to z as if the VQ were not there
  g = jax.grad(lambda z: jnp.sum(c * vq.apply(v, z)[0]))(z)
  np.testing.assert_array_equal(g, c)


def test_the_ema_codebook_update_equals_its_closed_form_on_a_toy_batch():
  """Two codes, four vectors: code 0 takes three of them, code 1 one."""
  decay, eps = 0.9, 1e-5
  vq = bottlenecks.VectorQuantizer(num_codes=2, code_dim=2, codebook_ema=decay)
  book = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
  size0 = np.array([2.0, 3.0], np.float32)
  sums0 = np.array([[1.0, -1.0], [30.0, 30.0]], np.float32)
  v = {"batch_stats": {"codebook": book, "cluster_size": size0, "embed_sum": sums0}}
  z = np.array([[0.5, 0.0], [0.0, 1.0], [-1.0, -0.5], [9.0, 11.0]], np.float32)
  _, upd = vq.apply(v, z.reshape(1, 2, 2, 2), train=True, mutable=["batch_stats"],
                    rngs={"restart": jax.random.PRNGKey(0)})
  n = np.array([3.0, 1.0])
  size = decay * size0 + (1 - decay) * n
  sums = decay * sums0 + (1 - decay) * np.stack([z[:3].sum(0), z[3]])
  smoothed = (size + eps) / (size.sum() + 2 * eps) * size.sum()
  s = upd["batch_stats"]
  np.testing.assert_allclose(s["cluster_size"], size, rtol=1e-6)
  np.testing.assert_allclose(s["embed_sum"], sums, rtol=1e-6)
  np.testing.assert_allclose(s["codebook"], sums / smoothed[:, None], rtol=1e-5)
  # not in evaluation: the forward pass alone changes nothing
  _, same = vq.apply(v, z.reshape(1, 2, 2, 2), mutable=["batch_stats"])
  np.testing.assert_array_equal(same["batch_stats"]["codebook"], book)


def test_a_dead_code_is_restarted_onto_an_encoder_output():
  vq = bottlenecks.VectorQuantizer(num_codes=3, code_dim=2, codebook_ema=0.99, restart_below=0.5)
  book = np.array([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]], np.float32)  # code 2: far, unused
  v = {"batch_stats": {"codebook": book, "cluster_size": np.array([5.0, 5.0, 0.4], np.float32),
                       "embed_sum": book * 5.0}}
  z = jax.random.uniform(jax.random.PRNGKey(3), (1, 4, 4, 2))
  _, upd = vq.apply(v, z, train=True, mutable=["batch_stats"],
                    rngs={"restart": jax.random.PRNGKey(4)})
  s = upd["batch_stats"]
  new = np.asarray(s["codebook"][2])
  assert any(np.array_equal(new, row) for row in np.asarray(z).reshape(-1, 2))
  assert float(s["cluster_size"][2]) == 1.0
  # the live codes were not moved onto batch vectors: they follow the EMA
  assert float(jnp.abs(s["codebook"][0]).max()) < 0.1


def test_fsq_has_its_levels_per_channel_and_the_implied_codebook():
  levels = (8, 5, 5, 5)
  fsq = bottlenecks.FSQ(levels)
  assert fsq.size == 1000
  z = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (4096, 4))
  q = fsq.apply({}, z, method="quantize")
  for i, l in enumerate(levels):
    values = np.unique(np.asarray(q[:, i]))
    assert len(values) == l, (i, values)
    assert values.min() >= -1.0 and values.max() <= 1.0
  idx = fsq.apply({}, z, method="indices")
  assert idx.min() >= 0 and idx.max() < 1000
  np.testing.assert_allclose(fsq.apply({}, idx, method="codes"), q, atol=1e-6)
  # every index is one code, and back
  every = jnp.arange(1000)
  np.testing.assert_array_equal(fsq.apply({}, fsq.apply({}, every, method="codes"),
                                          method="indices_of_codes"), every)
  # the rounding is straight-through
  g = jax.grad(lambda z: jnp.sum(fsq.apply({}, z, method="quantize")))(z[:3])
  assert float(jnp.abs(g).min()) > 0


def test_the_kl_latent_samples_in_training_and_is_zero_kl_at_the_prior():
  lat = bottlenecks.GaussianLatent(2)
  z = jnp.zeros((3, 2, 2, 4))  # mean 0, log-variance 0: N(0, I) itself
  out, terms, _ = lat.apply({}, z)
  np.testing.assert_array_equal(out, 0.0)
  assert float(terms["kl"]) == 0.0
  sample, _, _ = lat.apply({}, z, train=True, rngs={"latent": jax.random.PRNGKey(0)})
  assert sample.shape == (3, 2, 2, 2) and float(jnp.std(sample)) > 0.5
  _, terms, _ = lat.apply({}, z.at[..., :2].set(1.0))
  np.testing.assert_allclose(terms["kl"], 0.5)  # a unit mean: 0.5 * 1^2 per element
  _, terms, _ = lat.apply({}, z.at[..., 2:].set(np.log(4.0)))  # variance 4: 0.5 (4 - 1 - ln 4)
  np.testing.assert_allclose(terms["kl"], 0.5 * (3.0 - np.log(4.0)), rtol=1e-6)


def _runlocal(name):
  import importlib
  c = importlib.import_module(f"experiments.{name}").get_config("runlocal")
  c.experiment, c.experiment_arg = name, "runlocal"
  return c


def test_klae_then_latent_diffusion_on_it_end_to_end(tmp_path, classifier_workdir):
  """klae_mnist:runlocal: reconstructions, their PSNR / SSIM and rFID (the classifier's FD
  of test reconstructions); ldm_mnist:runlocal on its workdir: trains on the scaled
  latents, decodes its samples, records the autoencoder's weights; once the autoencoder's
  workdir is retrained in place, the latent run is refused. A MaskGIT run on it is refused
  (no codebook; images read in another range than the autoencoder's)."""
  from genimg_jax import evaluators, tasks, train
  c = _runlocal("klae_mnist")
  c.metrics.classifier_workdir = classifier_workdir
  ae_dir = str(tmp_path / "klae")
  r = train.run(c, ae_dir)
  m = r["metrics"]
  assert 5.0 < m["test/psnr"] < 60.0 and 0.0 < m["test/ssim"] <= 1.0
  assert np.isfinite(r["train_metrics"]["kl"]) and np.isfinite(r["train_metrics"]["reconstruction"])
  assert m["test/classifier/fd"] > 0
  assert "reconstructions" in m["test/classifier/protocol"]["sampler"]
  assert (tmp_path / "klae" / "reconstructions.png").exists()
  with c.unlocked():
    c.evals.codebook = {"type": "codebook"}  # a continuous latent has no codebook
  with pytest.raises(ValueError, match="no codebook"):
    evaluators.from_config(c, tasks.build_task(c))
  from experiments import maskgit_mnist  # MaskGIT models codes: refused before training
  g = maskgit_mnist.get_config("runlocal")
  g.latent.autoencoder_workdir = ae_dir
  with pytest.raises(ValueError, match="has no codebook"):
    tasks.build_task(g)
  g.data.preprocess = "unit"  # it encodes its images: their range must be the autoencoder's
  with pytest.raises(ValueError, match="trained on data.preprocess='symmetric'"):
    tasks.build_task(g)

  l = _runlocal("ldm_mnist")
  l.latent.autoencoder_workdir = ae_dir
  ldm_dir = str(tmp_path / "ldm")
  r = train.run(l, ldm_dir)
  task = tasks.build_task(l)
  assert task.image_shape == (7, 7, 4)
  used = r["used_runs"]["autoencoder"]
  assert used["workdir"] == ae_dir and used["step"] == c.train.steps
  assert len(used["params_sha256"]) == 64 and used["scale"] > 0
  assert np.isfinite(r["train_metrics"]["loss"])
  assert (tmp_path / "ldm" / "samples.png").exists()
  with l.unlocked():
    l.evals.bound = {"type": "bound"}
  with pytest.raises(ValueError, match="pixel models only"):  # no bound for latents
    tasks.build_task(l)
  with l.unlocked():
    del l.evals["bound"]
  # the autoencoder's workdir retrained in place: same workdir and step, other weights
  with c.unlocked():
    del c.evals["codebook"]
  c.seed = 1
  for name in c.evals:  # its weights are what counts here, not their evaluation
    c.evals[name].type = "none"
  train.run(c, ae_dir, fresh=True)
  with pytest.raises(ValueError, match="now holds other weights"):
    train.run(l, ldm_dir)


def test_the_feature_term_is_the_classifiers_feature_distance_with_its_weight(
    classifier_workdir, tmp_path):
  """objective.features_weight > 0: loss = the loss without it + weight x the mean squared
  distance of the classifier's features (restored on its own here) of the images and of
  their reconstructions, logged as "features"; the classifier's weights are what
  used_runs records; a missing run or one of other data is refused before training."""
  from experiments import vqvae_mnist
  from genimg_jax import data, runs, tasks
  c = vqvae_mnist.get_config("runlocal")
  c.experiment = "vqvae_mnist"
  c.objective.features_workdir = classifier_workdir
  plain = tasks.build_task(c)
  assert plain.used_runs() == {}
  c.objective.features_weight = 3.0
  task = tasks.build_task(c)
  # compiled (jax.jit): eagerly, each op of these would compile on its own
  state = jax.jit(plain.init_state)(jax.random.PRNGKey(0))
  x = jnp.asarray(next(data.eval_batches(c, num_examples_limit=16))["image"][:16])
  rngs = {"latent": jax.random.PRNGKey(1), "restart": jax.random.PRNGKey(2)}
  base, (base_parts, _, _) = jax.jit(plain.loss_fn)(state.params, state.batch_stats, x, rngs)
  loss, (parts, _, _) = jax.jit(task.loss_fn)(state.params, state.batch_stats, x, rngs)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  (xr, _, _), _ = jax.jit(lambda v, x: plain.model.apply(v, x, train=True, rngs=rngs,
                                                         mutable=["batch_stats"]))(variables, x)
  restored = runs.restore(classifier_workdir)
  phi = restored.task.feature_network(restored)
  want = np.mean((np.asarray(phi(xr)[0]) - np.asarray(phi(x)[0]))**2)
  assert "features" not in base_parts and want > 0
  np.testing.assert_allclose(parts["features"], want, rtol=1e-4)
  np.testing.assert_allclose(loss, base + 3.0 * want, rtol=1e-4)
  assert task.used_runs() == {"feature_network": restored.record()}
  c.objective.features_workdir = str(tmp_path / "nothing")
  with pytest.raises(runs.RunUnavailable, match="objective.features_workdir"):
    tasks.build_task(c)
  c.objective.features_workdir = classifier_workdir
  c.data.name = "fashion_mnist"
  with pytest.raises(ValueError, match="trained on 'mnist'"):
    tasks.build_task(c)


def test_the_adversarial_term_and_its_discriminator_start_after_the_warm_up():
  """objective.adversarial_weight > 0, adversarial_start = 1. Step 0: the autoencoder's
  step is the plain task's, the generator's hinge loss is logged but weighted 0, and the
  discriminator and its optimizer do not move. Step 1: the loss adds weight x that loss,
  the discriminator takes a step on its hinge loss of the images against the
  reconstructions, and the autoencoder's step is no longer the plain one."""
  from experiments import vqvae_mnist
  from genimg_jax import data, tasks
  from genimg_jax.objectives import gan as gan_obj
  c = vqvae_mnist.get_config("runlocal")
  c.metrics.classifier_workdir = ""
  plain = tasks.build_task(c)
  c.objective.adversarial_weight, c.objective.adversarial_start = 0.5, 1
  task = tasks.build_task(c)
  key = jax.random.PRNGKey(0)
  s0 = jax.jit(task.init_state)(key)  # compiled: eagerly, each op compiles on its own
  p0 = jax.jit(plain.init_state)(key)
  assert _same(s0.params["autoencoder"], p0.params)  # the term changes no initial weight
  batch = {"image": jnp.asarray(next(data.eval_batches(c, num_examples_limit=16))["image"][:16])}
  step, plain_step = jax.jit(task.train_step), jax.jit(plain.train_step)
  rest = lambda m: m["reconstruction"] + 0.25 * m["commitment"]

  s1, m1 = step(s0, batch, key)
  q1, _ = plain_step(p0, batch, key)
  _close(s1.params["autoencoder"], q1.params)
  assert _same(s1.params["discriminator"], s0.params["discriminator"])
  assert _same(s1.opt_state["discriminator"], s0.opt_state["discriminator"])
  assert np.isfinite(m1["adversarial"]) and float(m1["adversarial"]) != 0.0
  np.testing.assert_allclose(m1["loss"], rest(m1), rtol=1e-6)

  s2, m2 = step(s1, batch, key)
  np.testing.assert_allclose(m2["loss"], rest(m2) + 0.5 * m2["adversarial"], rtol=1e-6)
  latent, restart = jax.random.split(jax.random.fold_in(key, 1))
  (xr, _, _), _ = jax.jit(lambda v, x: task.model.apply(
      v, x, train=True, rngs={"latent": latent, "restart": restart}, mutable=["batch_stats"]))(
          task.eval_params(s1), batch["image"])
  apply_d = jax.jit(task.discriminator.apply)
  d = lambda s, images: apply_d({"params": s.params["discriminator"]}, images)
  assert d(s1, xr).shape == (16, 14, 14)  # a logit per patch
  np.testing.assert_allclose(m2["adversarial"], gan_obj.hinge_g_loss(d(s1, xr)), rtol=1e-5)
  np.testing.assert_allclose(m2["d_loss"], gan_obj.hinge_d_loss(d(s1, batch["image"]), d(s1, xr)),
                             rtol=1e-5)
  assert gan_obj.hinge_d_loss(d(s2, batch["image"]), d(s2, xr)) < m2["d_loss"]
  q2, _ = plain_step(s1.replace(params=s1.params["autoencoder"],
                                opt_state=s1.opt_state["autoencoder"]), batch, key)
  assert not _same(s2.params["autoencoder"], q2.params)


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
