"""Which GAN loss and regularizer (after Kurach et al. 2019) on MNIST, 3 seeds each.

  python launch.py --experiment=classifier_mnist         # once: the feature network
  python launch.py --experiment=gan_mnist_study --sweep

Losses {non-saturating, hinge, least-squares} x regularizers {none, spectral norm,
R1 (gamma 10)}, plus Wasserstein with gradient penalty (WGAN-GP only with GP): 10
settings x 3 seeds = 30 trials of the gan_mnist DCGAN, shortened to 400 steps each
(~0.4 epoch) so the study runs in about an hour on 2 CPU cores: it ranks the settings
early in training, not at convergence (say so when quoting it).
Metrics: classifier FD, KID, precision, recall and IS on 2,000 samples.

Expected: lowest mean classifier FD 737 (non-saturating, no regularizer, N = 2,000); 72
min of training (30 trials).
"""
from experiments import gan_mnist
from genimg_jax import configs, sweep

REPORT = {"metrics": ["test/classifier/fd", "test/classifier/kid", "test/classifier/precision",
                      "test/classifier/recall", "test/classifier/is"],
          "main": "test/classifier/fd",
          "caption": "DCGAN (gan_mnist, 32 base channels) on MNIST, 400 steps of batch 64 per "
                     "trial (~0.4 epoch: a shortened budget that ranks settings early in training), metrics from the project's MNIST classifier on "
                     "2,000 EMA-generator samples vs the test split."}

LOSSES = ["non_saturating", "hinge", "least_squares"]
REGULARIZERS = [  # every setting names the same fields, so the table has one column each
    {"model.d_norm": "none", "gan.penalty": "none", "gan.penalty_weight": 0.0},
    {"model.d_norm": "spectral", "gan.penalty": "none", "gan.penalty_weight": 0.0},
    {"model.d_norm": "none", "gan.penalty": "r1", "gan.penalty_weight": 5.0},  # gamma/2, gamma=10
]


def get_config(arg=None):
  c = gan_mnist.unconditional()
  if "runlocal" in configs.variants(arg, ("runlocal",), "gan_mnist_study"):
    c = gan_mnist.runlocal(c)
  else:
    c.train.steps = 400
    c.train.eval_every = 0
    c.train.checkpoint_every = 200
    c.metrics.num_samples = 2000
    c.metrics.inception_num_samples = 0
    c.metrics.inception_weights = ""
    c.gan.ema_decay = 0.99
  return c


def get_sweep(arg=None):
  settings = [{"gan.loss": loss, **reg} for loss in LOSSES for reg in REGULARIZERS]
  settings.append({"gan.loss": "wasserstein", "model.d_norm": "layer", "gan.penalty": "wgan_gp",
                   "gan.penalty_weight": 10.0})
  if arg == "runlocal":
    return settings[:2]
  return sweep.seeds(settings, 3)
