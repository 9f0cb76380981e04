"""MLP VAE on dynamically binarized MNIST (the Burda et al. 2016 setup).

  python launch.py --experiment=vae_mnist

Model: 784-256-256-(2x50) encoder and 50-256-256-784 decoder (tanh), Bernoulli
likelihood, dynamic binarization, ELBO, Adam. The final evaluation is the IWAE
bound with k=5000 on the 10,000 test images, as in the literature.
Measured (2026-11-22, 2 CPU cores, jax 0.10.2, this config): test NLL 87.74 nats
(IWAE k=5000), ELBO -91.74 nats, 0.161 bits/dim; 9.9 min training + 3.3 min
evaluation, 13.6 min wall-clock for the whole command (docs/runs/vae_mnist_results.json).
The run of 2026-11-21 (float32 binarization noise, 1 step per call): 87.65 nats,
ELBO -91.56, 16.5 min.
"""
from genimg_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.model.name = "mlp_vae"
  c.model.hidden = 256
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
  # 10 steps per compiled call (lax.scan; same batches and updates as 10 single steps,
  # tests/test_train.py): for this ~4 ms step on 2 CPU cores, launch.py's loop for 20,000
  # steps took 103.9 s instead of 142.4 s (2026-11-22, benchmarks/README.md).
  c.train.steps_per_call = 10
  c.optim.lr = 1e-3
  c.optim.schedule = "cosine"
  c.eval.batch_size = 100
  c.eval.iwae_k = 5000
  c.eval.iwae_chunk = 100
  if arg == "runlocal":             # tiny and fast: what the tests run
    c.model.hidden = 64
    c.train.steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.eval_every = 0
    c.train.steps_per_call = 1
    c.eval.iwae_k = 10
    c.eval.iwae_chunk = 5
    c.eval.periodic_iwae_k = 2
    c.eval.num_examples = 200
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of vae_mnist; allowed: runlocal")
  return c
