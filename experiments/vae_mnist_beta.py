"""beta-VAE study on MNIST: beta in {0.25, 0.5, 1, 2, 4} x 3 seeds, the rate-distortion trade-off.

  python launch.py --experiment=vae_mnist_beta --sweep
  python launch.py --experiment=vae_mnist_beta --sweep --trial=I   # one trial (job arrays)
  python launch.py --experiment=vae_mnist_beta --report            # tables and plot only

Each trial is vae_mnist with objective.beta and seed overridden, at a shortened
budget (20,000 steps, ~33 epochs; IWAE k=1000) so the 15 trials fit about an hour on
2 CPU cores. Reports test ELBO, IWAE NLL, KL (rate) and reconstruction (distortion),
and plots rate against distortion.

Expected: best test NLL 93.55 nats at beta = 1 (IWAE, k = 1000); 73 min (15 trials).
"""
from experiments import vae_mnist
from genimg_jax import sweep

REPORT = {"metrics": ["test/elbo", "test/nll", "test/kl", "test/rec"], "main": "test/nll",
          "xy": ("test/kl", "test/rec"),
          "caption": "beta-VAE (MLP 2x256 tanh, 50-d latent, Bernoulli, dynamically binarized "
                     "MNIST), 20,000 steps of batch 100 per trial (shortened from vae_mnist's "
                     "130,000), NLL by IWAE k=1000 on the 10,000 test images; nats per image."}


def get_config(arg=None):
  c = vae_mnist.get_config(arg)  # rejects unknown variants
  if arg != "runlocal":
    c.train.steps = 20_000
    c.train.eval_every = 0
    c.train.checkpoint_every = 5_000
    c.eval.iwae_k = 1000
    c.metrics.num_samples = 0      # a likelihood study: no sample metrics
    c.metrics.inception_num_samples = 0
  return c


def get_sweep(arg=None):
  if arg == "runlocal":  # two tiny trials: what the tests run
    return sweep.product(**{"objective.beta": [0.5, 2.0]})
  return sweep.seeds(sweep.product(**{"objective.beta": [0.25, 0.5, 1.0, 2.0, 4.0]}), 3)
