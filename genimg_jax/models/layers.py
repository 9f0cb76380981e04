"""Small building blocks shared by the models: activations, the convolution and
normalization modules."""
import functools

import flax.linen as nn
import jax.numpy as jnp

from genimg_jax import xla

ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
    "softplus": nn.softplus,
    "swish": nn.swish,
}
CONV_IMPLS = ("auto", "flax", "cpu")


def upsample_nearest(x_BHWC):
  """x2 nearest-neighbour upsampling: each pixel repeated into a 2x2 block."""
  return jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)


def down_stages(h, conv, channels, depth, act):
  """Per stage a 3x3 stride-2 and a 3x3 convolution, channels * 2**i at stage i (the conv
  VAE's and the autoencoder's encoders). Call inside a compact module: the layers are its."""
  for i in range(depth):
    h = act(conv(channels * 2**i, kernel_size=(3, 3), strides=2)(h))
    h = act(conv(channels * 2**i, kernel_size=(3, 3))(h))
  return h


def up_stages(h, conv, conv_transpose, channels, depth, act):
  """down_stages mirrored: per stage a 4x4 stride-2 transposed and a 3x3 convolution,
  channels * 2**i at stage i, from the deepest (the conv VAE's and the autoencoder's
  decoders)."""
  for i in reversed(range(depth)):
    h = act(conv_transpose(channels * 2**i, kernel_size=(4, 4), strides=(2, 2))(h))
    h = act(conv(channels * 2**i, kernel_size=(3, 3))(h))
  return h


def get_activation(name):
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def conv_modules(impl="auto", forward_differentiable=False, written_gradients=False):
  """The convolution and normalization modules the models are built with, by
  model.conv_impl: {"conv": ..., "conv_transpose": ..., "group_norm": ...}.

  "flax": nn.Conv, nn.ConvTranspose and nn.GroupNorm. "cpu": the forms of
  models/cpu_layers.py (same parameters and function, faster on XLA:CPU). "auto": "cpu"
  when jax computes on the CPU, else "flax". The only place where the models' layers
  depend on the platform. forward_differentiable: forms that jax.jvp goes through (the
  CPU forms without the strided convolution's custom VJP), for a task that
  differentiates the network forward. written_gradients: on a CPU, stride-1
  convolutions with written-out gradients too (cpu_layers.same_conv), for a network whose
  autodiff gradients XLA:CPU runs in its slow layout (the StyleGAN discriminator's).
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"Unknown model.conv_impl {impl!r}; allowed: {CONV_IMPLS}")
  if impl == "cpu" or (impl == "auto" and xla.on_cpu()):
    from genimg_jax.models import cpu_layers
    conv = (functools.partial(cpu_layers.Conv, custom_vjp=False) if forward_differentiable
            else functools.partial(cpu_layers.Conv, written_gradients=True) if written_gradients
            else cpu_layers.Conv)
    return {"conv": conv, "conv_transpose": cpu_layers.ConvTranspose,
            "group_norm": cpu_layers.GroupNorm}
  return {"conv": nn.Conv, "conv_transpose": nn.ConvTranspose, "group_norm": nn.GroupNorm}
