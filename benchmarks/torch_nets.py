"""The benchmarked networks and train steps written in PyTorch (benchmark only).

Each mirrors its genimg_jax counterpart layer for layer (same widths, kernels,
strides, activations, losses and optimizer) so that images/second compare the
frameworks, not the models:
  vae_mnist       experiments/vae_mnist.py       MLP 784-256-256-(2x50), tanh, Bernoulli ELBO, Adam
  vae_mnist_conv  experiments/vae_mnist_conv.py  conv encoder/decoder (16, 32 channels), Bernoulli ELBO, Adam
  gan_mnist       experiments/gan_mnist.py       DCGAN G (BatchNorm) and D without labels (the
                  (:unconditional variant)       :unconditional variant), non-saturating loss,
                                                 Adam(2e-4, b1=0.5) for each, EMA of G
  ddpm_mnist      experiments/ddpm_mnist.py      the U-Net (GroupNorm, SiLU, sinusoidal log-SNR
                                                 embedding, no attention), eps-MSE at one
                                                 cosine-schedule noise level per image, Adam with
                                                 clipping, EMA; and its DDIM sampler (50 steps)
Layouts follow PyTorch (NCHW); inputs are the same real MNIST batches.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F


class MLPVAE(nn.Module):

  def __init__(self, hidden=256, latent=50, pixels=784):
    super().__init__()
    self.enc = nn.Sequential(nn.Linear(pixels, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
    self.mean, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
    self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                             nn.Linear(hidden, pixels))

  def forward(self, x):
    x = x.flatten(1)
    h = self.enc(x)
    return x, self.mean(h), self.logvar(h), lambda z: self.dec(z)


class ConvVAE(nn.Module):

  def __init__(self, ch=16, latent=50):
    super().__init__()
    c1, c2 = ch, 2 * ch
    self.enc = nn.Sequential(
        nn.Conv2d(1, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c1, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU(), nn.Conv2d(c2, c2, 3, 1, 1), nn.ReLU(), nn.Flatten())
    self.mean, self.logvar = nn.Linear(7 * 7 * c2, latent), nn.Linear(7 * 7 * c2, latent)
    self.fc = nn.Linear(latent, 7 * 7 * c2)
    self.dec = nn.Sequential(
        nn.ConvTranspose2d(c2, c2, 4, 2, 1), nn.ReLU(), nn.Conv2d(c2, c2, 3, 1, 1), nn.ReLU(),
        nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c1, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(c1, 1, 3, 1, 1))
    self.c2 = c2

  def forward(self, x):
    h = self.enc(x)
    decode = lambda z: self.dec(F.relu(self.fc(z)).view(-1, self.c2, 7, 7)).flatten(1)
    return x.flatten(1), self.mean(h), self.logvar(h), decode


def vae_step_fn(model, opt):
  """One ELBO step (Bernoulli likelihood, one z sample): what VAETask.train_step does."""

  def step(x):
    xf, mean, logvar, decode = model(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    logits = decode(z)
    rec = F.binary_cross_entropy_with_logits(logits, xf, reduction="none").sum(1)
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1)
    loss = (rec + kl).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

  return step


class DCGANGenerator(nn.Module):
  """z(64) -> 7x7x128 (BN, ReLU) -> 14x14x64 (BN, ReLU) -> 28x28x1 tanh, as gan_mnist."""

  def __init__(self, ch=32, latent=64):
    super().__init__()
    c = ch * 2  # genimg_jax: channels * 2**(n_up - 1) with n_up = 2
    self.fc, self.c = nn.Linear(latent, 7 * 7 * 2 * c), c
    self.bn0 = nn.BatchNorm2d(2 * c)
    self.up1, self.bn1 = nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c)
    self.up2 = nn.ConvTranspose2d(c, 1, 4, 2, 1)

  def forward(self, z):
    h = F.relu(self.bn0(self.fc(z).view(-1, 2 * self.c, 7, 7)))
    h = F.relu(self.bn1(self.up1(h)))
    return torch.tanh(self.up2(h))


class DCGANDiscriminator(nn.Module):

  def __init__(self, ch=32):
    super().__init__()
    self.c1 = nn.Conv2d(1, ch, 4, 2, 1)
    self.c2 = nn.Conv2d(ch, 2 * ch, 4, 2, 1)
    self.fc = nn.Linear(7 * 7 * 2 * ch, 1)

  def forward(self, x):
    h = F.leaky_relu(self.c1(x), 0.2)
    h = F.leaky_relu(self.c2(h), 0.2)
    return self.fc(h.flatten(1))[:, 0]


def gan_step_fn(g, d, g_opt, d_opt, ema, decay=0.999, latent=64):
  """One D update and one G update (non-saturating loss), then the EMA of G."""

  def step(real):
    b = real.shape[0]
    with torch.no_grad():
      fake = g(torch.randn(b, latent))
    d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    g_loss = F.softplus(-d(g(torch.randn(b, latent)))).mean()
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()  # (D's grads from this backward are discarded by the next zero_grad)
    g_opt.step()
    with torch.no_grad():
      for e, w in zip(ema, g.parameters()):
        e.mul_(decay).add_(w, alpha=1 - decay)
    return d_loss.detach() + g_loss.detach()

  return step


def _embedding(logsnr, dim):
  half = dim // 2
  freqs = torch.exp(-math.log(10_000.0) * torch.arange(half) / half)
  args = ((13.5 - logsnr) * (1000.0 / 25.5))[:, None] * freqs[None]
  return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResBlock(nn.Module):
  def __init__(self, cin, cout, emb, groups):
    super().__init__()
    self.n1, self.c1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, 1, 1)
    self.e = nn.Linear(emb, cout)
    self.n2, self.c2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, 1, 1)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

  def forward(self, x, emb):
    h = self.c1(F.silu(self.n1(x))) + self.e(F.silu(emb))[:, :, None, None]
    return self.skip(x) + self.c2(F.silu(self.n2(h)))


class UNet(nn.Module):
  """genimg_jax.models.unet.UNet without attention: the same blocks, widths and skips."""

  def __init__(self, ch=32, mults=(1, 2, 2), blocks=1, groups=8, channels_in=1):
    super().__init__()
    self.ch, emb = ch, 4 * ch
    self.t1, self.t2 = nn.Linear(ch, emb), nn.Linear(emb, emb)
    self.cin = nn.Conv2d(channels_in, ch, 3, 1, 1)
    self.down, skips, c = nn.ModuleList(), [ch], ch
    for level, m in enumerate(mults):
      for _ in range(blocks):
        self.down.append(ResBlock(c, ch * m, emb, groups))
        c = ch * m
        skips.append(c)
      if level < len(mults) - 1:
        self.down.append(nn.Conv2d(c, c, 3, 2, 1))
        skips.append(c)
    self.mid = nn.ModuleList([ResBlock(c, c, emb, groups), ResBlock(c, c, emb, groups)])
    self.up = nn.ModuleList()
    for level, m in reversed(list(enumerate(mults))):
      for _ in range(blocks + 1):
        self.up.append(ResBlock(c + skips.pop(), ch * m, emb, groups))
        c = ch * m
      if level > 0:
        self.up.append(nn.Conv2d(c, c, 3, 1, 1))
    self.nout, self.cout = nn.GroupNorm(groups, c), nn.Conv2d(c, channels_in, 3, 1, 1)

  def forward(self, z, logsnr):
    emb = self.t2(F.silu(self.t1(_embedding(logsnr, self.ch))))
    h = self.cin(z)
    hs = [h]
    for layer in self.down:
      h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
      hs.append(h)
    for layer in self.mid:
      h = layer(h, emb)
    for layer in self.up:
      if isinstance(layer, ResBlock):
        h = layer(torch.cat([h, hs.pop()], dim=1), emb)
      else:  # nearest x2 to the next skip's size, then a 3x3 convolution
        h = layer(F.interpolate(h, size=hs[-1].shape[2:], mode="nearest"))
    return self.cout(F.silu(self.nout(h)))


def _cosine_logsnr(t, lo=-12.0, hi=13.5):
  t_min, t_max = math.atan(math.exp(-0.5 * hi)) * 2 / math.pi, math.atan(math.exp(-0.5 * lo)) * 2 / math.pi
  return -2.0 * torch.log(torch.tan(math.pi / 2 * (t_min + t * (t_max - t_min))))


def diffusion_step_fn(model, opt, ema, decay=0.999):
  """One eps-MSE step at one cosine-schedule noise level per image, clipping, Adam, EMA."""

  def step(x):
    logsnr = _cosine_logsnr(torch.rand(x.shape[0]))
    alpha2 = torch.sigmoid(logsnr)[:, None, None, None]
    eps = torch.randn_like(x)
    z = alpha2.sqrt() * x + (1 - alpha2).sqrt() * eps
    loss = (model(z, logsnr) - eps).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
      for e, w in zip(ema, model.parameters()):
        e.mul_(decay).add_(w, alpha=1 - decay)
    return loss.detach()

  return step


def ddim_sampler_fn(model, steps=50):
  """DDIM (eta = 0) for `steps` steps from the batch's shape of noise; returns x0."""

  @torch.no_grad()
  def sample(x):
    z = torch.randn_like(x)
    for i in range(steps):
      t, s = 1.0 - i / steps, 1.0 - (i + 1) / steps
      lt, ls = (_cosine_logsnr(torch.full((x.shape[0],), v)) for v in (t, s))
      at, as_ = torch.sigmoid(lt).sqrt()[:, None, None, None], torch.sigmoid(ls).sqrt()[:, None, None, None]
      st, ss = torch.sigmoid(-lt).sqrt()[:, None, None, None], torch.sigmoid(-ls).sqrt()[:, None, None, None]
      eps = model(z, lt)
      x0 = ((z - st * eps) / at).clamp(-1, 1)
      z = as_ * x0 + ss * (z - at * x0) / st
    return x0.mean()

  return sample


def build(name):
  """(step(x_NCHW) -> loss, modules) for one of the benchmarked networks."""
  if name in ("ddpm_mnist", "ddpm_mnist_sampler"):
    from experiments import ddpm_mnist
    m = ddpm_mnist.get_config().model
    model = UNet(m.channels, tuple(m.channel_mults), m.num_res_blocks, m.norm_groups)
    if name == "ddpm_mnist_sampler":
      return ddim_sampler_fn(model.eval()), [model]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ema = [p.detach().clone() for p in model.parameters()]
    return diffusion_step_fn(model, opt, ema), [model]
  if name in ("vae_mnist", "vae_mnist_conv"):
    model = MLPVAE() if name == "vae_mnist" else ConvVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return vae_step_fn(model, opt), [model]
  if name == "gan_mnist":
    g, d = DCGANGenerator(), DCGANDiscriminator()
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ema = [p.detach().clone() for p in g.parameters()]
    return gan_step_fn(g, d, g_opt, d_opt, ema), [g, d]
  raise ValueError(f"Unknown network {name!r}")
