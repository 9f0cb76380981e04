"""DDPM on CIFAR-10 with Ho et al. 2020's settings, for a GPU or TPU.

  python launch.py --experiment=ddpm_cifar10
  python launch.py --experiment=ddpm_cifar10:runlocal --mock_data=64   # checks the code here

The 35.7M-parameter U-Net: channels 128 x (1, 2, 2, 2), 2 residual blocks per resolution,
self-attention at 16x16, dropout 0.1; the linear beta schedule (1e-4 to 0.02 over 1000
steps, as its continuous-time VP form), eps prediction with L_simple, Adam 2e-4 with
5,000 warm-up steps and gradient clipping at 1, batch 128, 800,000 steps, EMA 0.9999,
random horizontal flips omitted. Paper: FID 3.17, IS 9.46 (50,000 samples, 1000 ancestral
steps). The final evaluation here: Inception FID of 10,000 samples against the test set
with DDIM at 100 steps (eval.*), and the test bound in bits/dim (paper: <= 3.75).
CIFAR-10 is not on this machine's disk: the runlocal variant runs on --mock_data.

Expected: for a GPU or TPU: not measured here.
"""
from genimg_jax import configs


def get_config(arg=None):
  variants = configs.variants(arg, ("runlocal",), "ddpm_cifar10")
  c = configs.diffusion_config()
  configs.on_dataset(c, "cifar10")
  c.data.shuffle_buffer = 50_000
  c.model.channels = 128
  c.model.channel_mults = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attention_resolutions = (16,)
  c.model.dropout = 0.1
  c.model.norm_groups = 32
  c.diffusion.schedule = "linear"
  c.diffusion.target = "eps"
  c.diffusion.loss_weighting = "eps_mse"
  c.diffusion.ema_decay = 0.9999
  c.optim.lr = 2e-4
  c.optim.schedule = "warmup_constant"
  c.optim.warmup_steps = 5000
  c.optim.grad_clip = 1.0
  c.train.batch_size = 128
  c.train.steps = 800_000
  c.train.log_every = 1000
  c.train.checkpoint_every = 10_000
  c.train.eval_every = 100_000
  c.eval.sampler = "ddim"
  c.eval.sample_steps = 100
  c.eval.batch_size = 500
  c.metrics.num_samples = 0           # no CIFAR-10 classifier: Inception FID only
  c.metrics.inception_num_samples = 10_000
  c.metrics.periodic_num_samples = 1000
  c.metrics.batch_size = 500
  if "runlocal" in variants:
    c.model.channels = 8
    c.model.channel_mults = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attention_resolutions = (16,)
    c.model.norm_groups = 4
    c.train.batch_size = 8
    c.train.steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.eval_every = 0
    c.optim.warmup_steps = 2
    c.eval.sample_steps = 2
    c.eval.batch_size = 8
    c.eval.grid_size = 2
    c.data.shuffle_buffer = 100
    c.metrics.inception_num_samples = 0
    c.metrics.inception_weights = ""
    c.metrics.periodic_num_samples = 0
  return c
