"""Small building blocks shared by the models."""
from typing import Any

import flax.linen as nn

ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
    "softplus": nn.softplus,
    "swish": nn.swish,
}


def get_activation(name):
  if name not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


# ConvTranspose4x4s2 without a method: "matmul" for layers of at least this many output
# features, "conv" for the others; None (default): "conv" everywhere. See its docstring.
MATMUL_MIN_FEATURES = None


class ConvTranspose4x4s2(nn.Module):
  """A 4x4, stride-2, SAME transposed convolution, computed as one 3x3 convolution.

  Same parameters and outputs as nn.ConvTranspose(features, (4, 4), (2, 2), "SAME")
  (tests/test_models.py checks), but XLA:CPU runs the gradient of a transposed
  convolution ~70x slower than that of an ordinary one (measured: 158 ms vs 2 ms for
  the DCGAN layer at batch 64). Each of the 4 output phases (row and column parity)
  is a 2x2 correlation of the input; the 4 phase kernels are placed in one 3x3
  kernel with 4*features outputs, and depth-to-space interleaves them.

  method: how the 3x3 convolution runs (None: see MATMUL_MIN_FEATURES). "conv":
  lax.conv_general_dilated. "matmul": the 9 shifted copies of the input stacked as
  patches [B, H, W, 9*cin] times the kernel as a matrix, so that the kernel gradient
  is a matrix multiply too. Both give the same function (tests/test_models.py).
  Whole train steps on 2 CPU cores, img/s with "conv" vs "matmul" for the layers of
  >= 16 features (`python -m benchmarks.conv_transpose_ab NETWORK BATCH`, 2026-11-22,
  rounds alternating): vae_mnist_conv batch 256: conv 654, 721, 805, 804 vs matmul 840,
  849, 793, 958; batch 64: conv 1,261, 1,173 vs matmul 885, 837; gan_mnist batch 256:
  conv 501, 573 vs matmul 493, 540; batch 64: conv 634, 542 vs matmul 580, 550. A gain
  only for the large-batch decoder and a loss at batch 64, so "conv" stays the default.
  Those numbers predate parallel.compiler_options (2026-11-22), which keeps XLA:CPU's
  convolutions out of YNNPACK and made vae_mnist_conv's steps 1.2-2.6x faster. With it,
  same command, "matmul" is slower everywhere measured: vae_mnist_conv batch 256 1,066 /
  961 vs conv 1,157 / 1,308; batch 64 945 / 926 vs 1,513 / 1,588; gan_mnist batch 256
  561 / 576 vs 687 / 670. It stays as a tested option for other machines.
  """
  features: int
  use_bias: bool = True
  dtype: Any = None  # compute dtype (None: that of the input)
  method: Any = None  # conv | matmul | None (MATMUL_MIN_FEATURES decides; default conv)

  @nn.compact
  def __call__(self, x_BHWC):
    import jax.numpy as jnp
    import jax
    cin = x_BHWC.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, self.features))
    # Along one axis: output 2p uses x[p-1]*k[0] + x[p]*k[2]; output 2p+1 uses
    # x[p]*k[1] + x[p+1]*k[3]. Offsets -1, 0, +1 are rows 0, 1, 2 of the 3x3 kernel.
    taps = {0: ((0, 0), (1, 2)), 1: ((1, 1), (2, 3))}  # phase -> ((row, k index), ...)
    k3 = jnp.zeros((3, 3, cin, 2, 2, self.features), k.dtype)
    for a in (0, 1):
      for b in (0, 1):
        for r, kr in taps[a]:
          for c, kc in taps[b]:
            k3 = k3.at[r, c, :, a, b, :].set(k[kr, kc])
    if self.dtype is not None:
      x_BHWC, k3 = x_BHWC.astype(self.dtype), k3.astype(self.dtype)
    method = self.method or ("matmul" if MATMUL_MIN_FEATURES is not None
                             and self.features >= MATMUL_MIN_FEATURES else "conv")
    B, H, W, _ = x_BHWC.shape
    if method == "conv":
      y = jax.lax.conv_general_dilated(x_BHWC, k3.reshape(3, 3, cin, 4 * self.features), (1, 1),
                                       ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif method == "matmul":
      xp = jnp.pad(x_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0)))
      patches = jnp.concatenate([xp[:, r:r + H, c:c + W, :] for r in range(3) for c in range(3)], -1)
      y = patches @ k3.reshape(9 * cin, 4 * self.features)
    else:
      raise ValueError(f"Unknown ConvTranspose4x4s2 method {method!r}; allowed: conv, matmul")
    y = y.reshape(B, H, W, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(B, 2 * H, 2 * W, self.features)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y


class StridedConv(nn.Module):
  """A k x k, stride-2, SAME convolution, computed as patches times a matrix.

  Same parameters ("kernel" [k, k, cin, features], "bias") and outputs as
  nn.Conv(features, (k, k), strides=2, padding="SAME") (tests/test_models.py checks),
  but XLA:CPU computes the kernel gradient of a strided convolution as a convolution
  with the batch as features and the whole output map as window, which is very slow:
  measured 1.25 s of a 4.4 s gan_mnist step at batch 256 for D's second layer
  (benchmarks/profile.py). Here the k*k strided slices of the padded input are stacked
  into patches [B, H/2, W/2, k*k*cin] and multiplied by the kernel as a matrix, so the
  forward pass and both gradients are matrix multiplies.
  """
  features: int
  kernel_size: int
  use_bias: bool = True
  dtype: Any = None  # compute dtype (None: that of the input)

  @nn.compact
  def __call__(self, x_BHWC):
    import jax.numpy as jnp
    k = self.kernel_size
    B, H, W, C = x_BHWC.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, C, self.features))

    def pads(n):  # SAME for stride 2, as lax computes it
      total = max((-(-n // 2) - 1) * 2 + k - n, 0)
      return total // 2, total - total // 2

    x = jnp.pad(x_BHWC, ((0, 0), pads(H), pads(W), (0, 0)))
    oh, ow = -(-H // 2), -(-W // 2)
    patches = jnp.concatenate([x[:, dy:dy + 2 * oh - 1:2, dx:dx + 2 * ow - 1:2, :]
                               for dy in range(k) for dx in range(k)], axis=-1)
    kernel = kernel.reshape(k * k * C, self.features)
    if self.dtype is not None:
      patches, kernel = patches.astype(self.dtype), kernel.astype(self.dtype)
    y = patches @ kernel
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y
