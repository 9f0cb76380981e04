"""MLP VAE on dynamically binarized MNIST (the Burda et al. 2016 setup).

  python launch.py --experiment=vae_mnist
  python launch.py --experiment=vae_mnist:fashion   # Fashion-MNIST, gray levels in [0, 1]

Model: 784-256-256-(2x50) encoder and 50-256-256-784 decoder (tanh), Bernoulli
likelihood, dynamic binarization, ELBO, Adam with cosine decay, 130,000 steps of batch
100 (~217 epochs), 10 steps per compiled call. The final evaluation: the IWAE bound with
k=5000 on the 10,000 test images (the test NLL, as in the literature), PSNR/SSIM of
test reconstructions, and the sample-quality metrics of 10,000 samples (the decoder's
mean at z ~ N(0, I)).

The Fashion-MNIST variant trains on gray levels in [0, 1] under the Bernoulli
cross-entropy (the "VAE (cross-entropy)" of Lucic et al. 2018): its "NLL" is then a bound
on that cross-entropy, not a likelihood of discrete data.

Expected: test NLL 87.74 nats (IWAE, k = 5000); 19 + 57 min.
"""
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("fashion", "runlocal"), "vae_mnist")
  c = configs.vae_config()
  c.model.name = "mlp_vae"
  c.model.mlp_units = 256
  c.model.depth = 2
  c.model.latent_dim = 50
  c.model.activation = "tanh"
  c.objective.likelihood = "bernoulli"
  c.data.preprocess = "binarize"
  c.train.batch_size = 100
  c.train.steps = 130_000           # ~217 epochs
  c.train.log_every = 1000
  c.train.checkpoint_every = 10_000
  c.train.eval_every = 26_000
  c.train.steps_per_call = 10       # one compiled call runs 10 steps (the same updates)
  c.optim.lr = 1e-3
  c.optim.schedule = "cosine"
  c.eval.batch_size = 100
  c.eval.iwae_k = 5000
  c.eval.iwae_chunk = 100
  if "fashion" in variants:
    configs.on_dataset(c, "fashion_mnist")
    c.data.preprocess = "unit"
  if "runlocal" in variants:        # tiny and fast: what the tests run
    runlocal(c)
  return c


def runlocal(c):
  """The tiny variant the tests run (every VAE experiment's)."""
  c.model.mlp_units = 64
  c.train.steps = 20
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.eval_every = 0
  c.train.steps_per_call = 1
  c.eval.iwae_k = 10
  c.eval.iwae_chunk = 5
  c.eval.periodic_iwae_k = 2
  c.eval.num_examples = 200
  c.metrics.num_samples = 0         # the sample metrics are tested with the GAN's runlocal
  c.metrics.inception_num_samples = 0
  return c
