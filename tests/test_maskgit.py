"""MaskGIT: the masking schedule, the masked-token loss, iterative decoding, the
transformer, and the prior end to end (with its bitwise resume) on a runlocal FSQ
autoencoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genimg_jax.models import maskgit as maskgit_models
from genimg_jax.objectives import maskgit as mg


def test_the_cosine_schedule_masks_at_least_one_token_at_uniform_positions():
  L, B = 49, 8192
  np.testing.assert_allclose(mg.mask_ratio(jnp.array([0.0, 0.5, 1.0])),
                             [1.0, np.cos(np.pi / 4), 0.0], atol=1e-6)
  mask = np.asarray(mg.random_mask(jax.random.PRNGKey(0), B, L))
  counts = mask.sum(1)
  assert counts.min() >= 1 and counts.max() <= L
  # E[ceil(L cos(pi u / 2))] / L for u ~ U(0, 1), by quadrature
  u = (np.arange(200_000) + 0.5) / 200_000
  want = np.mean(np.ceil(L * np.cos(np.pi / 2 * u))) / L
  assert abs(counts.mean() / L - want) < 0.01, (counts.mean() / L, want)
  # which positions: uniform
  per_position = mask.mean(0)
  assert np.abs(per_position - want).max() < 0.04


def test_the_loss_is_the_cross_entropy_of_the_masked_codes_only():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
  logits = jax.random.normal(k1, (2, 5, 7))
  tokens = jax.random.randint(k2, (2, 5), 0, 7)
  mask = jnp.array([[True, False, True, False, False], [False, False, False, True, True]])
  loss, accuracy = mg.masked_token_loss(logits, tokens, mask)
  logp = np.asarray(jax.nn.log_softmax(logits))
  rows, cols = np.nonzero(np.asarray(mask))
  want = -np.mean(logp[rows, cols, np.asarray(tokens)[rows, cols]])
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  hits = np.argmax(logp, -1)[rows, cols] == np.asarray(tokens)[rows, cols]
  np.testing.assert_allclose(accuracy, hits.mean())
  # the unmasked positions' logits do not count
  changed = logits.at[0, 1].set(100.0).at[1, 0].set(-100.0)
  np.testing.assert_allclose(mg.masked_token_loss(changed, tokens, mask)[0], loss, rtol=1e-6)


def test_decoding_fixes_every_token_in_the_configured_steps_most_confident_first():
  """What the network sees at each step (recorded by a callback): a fully masked sequence,
  then floor(L cos(pi/2 t / steps)) masks; a fixed token never changes; the output has no
  mask; with no choice noise the first step keeps the most confident positions."""
  L, K, steps, B = 12, 5, 4, 3
  rng = np.random.default_rng(0)
  # per position, a peaked distribution whose peak height differs by position
  peak = rng.permutation(L).astype(np.float32) + 1.0
  base = np.zeros((L, K), np.float32)
  base[np.arange(L), np.arange(L) % K] = peak
  seen = []

  def logits_fn(tokens):
    jax.debug.callback(lambda t: seen.append(np.asarray(t)), tokens, ordered=True)
    logits = jnp.broadcast_to(jnp.asarray(base), (tokens.shape[0], L, K))
    # a fixed token's own code now looks unlikely: decoding must keep it all the same
    return logits - 50.0 * jax.nn.one_hot(tokens, K)  # (a mask, index K, is all zeros)

  out = np.asarray(jax.jit(lambda r: mg.decode(logits_fn, r, B, L, K, steps, temperature=1e-3,
                                               choice_temperature=0.0))(jax.random.PRNGKey(2)))
  assert len(seen) == steps
  masked = [int((s[0] == K).sum()) for s in seen]
  assert masked == [L] + [int(np.floor(L * np.cos(np.pi / 2 * t / steps))) for t in range(1, steps)]
  assert all(((s == K).sum(1) == m).all() for s, m in zip(seen, masked))
  assert not (out == K).any() and out.shape == (B, L)
  for before, after in zip(seen + [out], seen[1:] + [out]):
    fixed = before != K
    np.testing.assert_array_equal(after[fixed], before[fixed])
  np.testing.assert_array_equal(out, np.broadcast_to(np.arange(L) % K, (B, L)))  # the peaks
  kept_first = set(np.nonzero(seen[1][0] != K)[0])
  assert kept_first == set(np.argsort(-peak)[:L - masked[1]])


def test_the_transformer_gives_logits_per_token_and_sees_both_directions():
  model = maskgit_models.MaskGITTransformer(num_codes=6, length=9, dim=16, depth=1, num_heads=2,
                                            num_classes=3)
  tokens = jnp.full((2, 9), 6, jnp.int32)
  y = jnp.array([0, 3])  # a class and the null class
  params = model.init(jax.random.PRNGKey(0), tokens, y)
  logits = model.apply(params, tokens, y)
  assert logits.shape == (2, 9, 6)
  later = model.apply(params, tokens.at[:, 8].set(2), y)
  assert float(jnp.abs(later[:, 0] - logits[:, 0]).max()) > 0  # no causal mask
  other = model.apply(params, tokens, jnp.array([1, 3]))
  assert float(jnp.abs(other[0] - logits[0]).max()) > 0
  np.testing.assert_array_equal(other[1], logits[1])


@pytest.mark.parametrize("name", ["fsq_mnist"])
def test_maskgit_on_a_runlocal_fsq_autoencoder_end_to_end(name, tmp_path, classifier_workdir,
                                                           monkeypatch):
  """fsq_mnist:runlocal (reconstructions, the codebook's use), then maskgit_mnist:runlocal
  on its workdir: trains on its codes, decodes its samples through it, scores them, and
  records the autoencoder's weights; stopped by SIGTERM between checkpoints, it resumes to
  the uninterrupted run's weights and training metrics bitwise (masks and label dropout
  are drawn inside the step from its key)."""
  import importlib
  from test_fault_tolerance import assert_resumes_bitwise
  from genimg_jax import tasks, train
  c = importlib.import_module(f"experiments.{name}").get_config("runlocal")
  c.experiment, c.experiment_arg = name, "runlocal"
  c.metrics.classifier_workdir = ""
  ae_dir = str(tmp_path / "fsq")
  r = train.run(c, ae_dir)
  m = r["metrics"]
  assert 5.0 < m["test/psnr"] < 60.0 and 0.0 < m["test/ssim"] <= 1.0
  assert 0.0 < m["test/usage"] <= 1.0 and 1.0 <= m["test/perplexity"] <= 12
  assert np.isfinite(r["train_metrics"]["reconstruction"])
  assert (tmp_path / "fsq" / "reconstructions.png").exists()

  from experiments import maskgit_mnist
  p = maskgit_mnist.get_config("runlocal")
  p.experiment, p.experiment_arg = "maskgit_mnist", "runlocal"
  p.latent.autoencoder_workdir = ae_dir
  p.metrics.classifier_workdir = classifier_workdir
  p.train.steps, p.train.log_every, p.train.checkpoint_every = 12, 6, 6
  r = train.run(p, str(tmp_path / "maskgit"))
  task = tasks.build_task(p)
  assert task.num_codes == 12 and task.token_shape == (7, 7)
  used = r["used_runs"]["autoencoder"]
  assert used["workdir"] == ae_dir and used["step"] == c.train.steps
  t = r["train_metrics"]
  assert np.isfinite(t["loss"]) and 0.0 < t["mask_ratio"] <= 1.0
  assert 0.0 <= t["masked_accuracy"] <= 1.0
  m = r["metrics"]
  assert m["test/classifier/fd"] > 0 and m["test/nfe"] == p.eval.sample_steps
  assert m["test/classifier/protocol"]["sampler"] == "maskgit 4 steps"
  assert (tmp_path / "maskgit" / "samples.png").exists()
  assert_resumes_bitwise(p, str(tmp_path / "maskgit"), r, str(tmp_path / "interrupted"),
                         monkeypatch)
