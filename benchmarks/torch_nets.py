"""The benchmarked networks and train steps written in PyTorch (benchmark only).

Each mirrors its genimg_jax counterpart layer for layer (same widths, kernels,
strides, activations, losses and optimizer) so that images/second compare the
frameworks, not the models:
  vae_mnist       experiments/vae_mnist.py       MLP 784-256-256-(2x50), tanh, Bernoulli ELBO, Adam
  vae_mnist_conv  experiments/vae_mnist_conv.py  conv encoder/decoder (16, 32 channels), Bernoulli ELBO, Adam
  gan_mnist       experiments/gan_mnist.py       DCGAN G (BatchNorm) and D without labels (the
                  (:unconditional variant)       :unconditional variant), non-saturating loss,
                                                 Adam(2e-4, b1=0.5) for each, EMA of G
Layouts follow PyTorch (NCHW); inputs are the same real MNIST batches.
"""
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


def build(name):
  """(step(x_NCHW) -> loss, modules) for one of the benchmarked networks."""
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
