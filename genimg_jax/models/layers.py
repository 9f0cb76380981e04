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


class ConvTranspose4x4s2(nn.Module):
  """A 4x4, stride-2, SAME transposed convolution in a form XLA:CPU runs fast.

  Same parameters and outputs as nn.ConvTranspose(features, (4, 4), (2, 2), "SAME")
  (tests/test_models.py checks values and gradients), but XLA:CPU runs the gradient of
  a transposed convolution ~70x slower than that of an ordinary one (measured: 158 ms
  vs 2 ms for the DCGAN layer at batch 64). Along one axis, output 2p is
  x[p-1]*k[0] + x[p]*k[2] and output 2p+1 is x[p]*k[1] + x[p+1]*k[3]. Forms:

  * "phases": each of the 4 output phases (row and column parity) is a 2x2 correlation
    of the input (4 lax convolutions), interleaved by depth-to-space. Exactly the
    transposed convolution's FLOPs.
  * "scatter": the input times the kernel of all 16 taps as one matrix multiply
    ([B*H*W, cin] x [cin, 16*features]), then each tap's product added at its output
    place (col2im); its gradients are a matmul and slices. Cheap when 16*features is
    small: the image-output layer.
  * "conv": the 4 phase kernels placed in one 3x3 kernel with 4*features outputs, one
    convolution (2.25x the FLOPs: 5 of each phase's 9 taps are zero). The form used
    until 2026-11-22; kept for comparison.

  method None (default) picks "scatter" when 16 * features <= input channels, else
  "phases". One layer on 2 CPU cores, forward / value-and-gradient ms, conv vs phases vs
  scatter (2026-11-22, two rounds): DCGAN's first layer (128 -> 64 channels, 7x7) at
  batch 256: 38-43 / 149-163 vs 20-22 / 96-104 vs 70-72 / 173-192; at batch 1024:
  182-187 / 633-640 vs 113-120 / 395-417 vs 405-422 / 720-734; its output layer (64 -> 1,
  14x14), batch 256: 9.5-9.8 / 27 vs 7.5-8.5 / 41-44 vs 1.0-1.2 / 8.4-8.7; vae_mnist_conv's
  layers at batch 256 (32 -> 32 at 7x7; 32 -> 16 at 14x14): 4.8-5.4 / 26-27 vs 3.2-3.3 / 17-18
  vs 26-31 / 69; 12-15 / 74-76 vs 10-12 / 59-60 vs 56 / 145-167. Whole train steps
  (`python -m benchmarks.conv_transpose_ab NETWORK BATCH ROUNDS FORMS`, rounds alternating,
  img/s): gan_mnist batch 256, conv with scatter for the output layer 760 / 729 / 742 vs
  the default 950 / 1,010 / 884; batch 1024 710 / 685 vs 905 / 836; vae_mnist_conv batch
  256, conv vs default 1,182 / 1,145 / 1,196 vs 1,255 / 1,464 / 1,163; and scatter alone
  for gan_mnist's output layer, conv elsewhere, vs conv everywhere: batch 256 +6%, batch
  1024 +9-10% (means of 3-4 rounds). (A fourth form, the 3x3 convolution as patches x
  matrix, was slower everywhere once parallel.compiler_options() kept convolutions in
  XLA; removed 2026-11-22.)
  """
  features: int
  use_bias: bool = True
  dtype: Any = None  # compute dtype (None: that of the input)
  method: Any = None  # phases | scatter | conv | None (auto_method decides)

  @nn.compact
  def __call__(self, x_BHWC):
    import jax.numpy as jnp
    import jax
    cin = x_BHWC.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, self.features))
    method = self.method or auto_method(cin, self.features)
    if self.dtype is not None:
      x_BHWC, k = x_BHWC.astype(self.dtype), k.astype(self.dtype)
    B, H, W, _ = x_BHWC.shape
    F = self.features
    taps = {0: ((0, -1), (2, 0)), 1: ((1, 0), (3, 1))}  # phase -> ((k index, input offset), ...)
    if method == "conv":
      # Input offsets -1, 0, +1 are rows (columns) 0, 1, 2 of the 3x3 kernel.
      k3 = jnp.zeros((3, 3, cin, 2, 2, F), k.dtype)
      for a in (0, 1):
        for b in (0, 1):
          for kr, r in taps[a]:
            for kc, c in taps[b]:
              k3 = k3.at[r + 1, c + 1, :, a, b, :].set(k[kr, kc])
      y = jax.lax.conv_general_dilated(x_BHWC, k3.reshape(3, 3, cin, 4 * F), (1, 1),
                                       ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape(B, H, W, 2, 2, F).transpose(0, 1, 3, 2, 4, 5)
    elif method == "phases":
      # Each output phase (row parity a, column parity b) is a 2x2 correlation of the
      # input: taps of phase 0 sit at offsets -1, 0 (padding 1 before), of phase 1 at 0, +1.
      pad = {0: (1, 0), 1: (0, 1)}
      def phase(a, b):
        kab = jnp.stack([jnp.stack([k[kr, kc] for kc, _ in taps[b]]) for kr, _ in taps[a]])
        return jax.lax.conv_general_dilated(x_BHWC, kab, (1, 1), (pad[a], pad[b]),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif method == "scatter":
      z = x_BHWC.reshape(B * H * W, cin) @ k.transpose(2, 0, 1, 3).reshape(cin, 16 * F)
      z = jnp.pad(z.reshape(B, H, W, 4, 4, F), ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
      phase = lambda a, b: sum(z[:, 1 + r:1 + r + H, 1 + c:1 + c + W, kr, kc]
                               for kr, r in taps[a] for kc, c in taps[b])
    else:
      raise ValueError(f"Unknown ConvTranspose4x4s2 method {method!r}; allowed: phases, scatter, conv")
    if method != "conv":  # interleave the 4 phases [B, H, W, F] -> [B, H, 2, W, 2, F]
      y = jnp.stack([jnp.stack([phase(a, b) for b in (0, 1)], axis=3) for a in (0, 1)], axis=2)
    y = y.reshape(B, 2 * H, 2 * W, F)  # [B, H, 2 (row phase), W, 2 (column phase), F]
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (F,)).astype(y.dtype)
    return y


def auto_method(in_features, features):
  """ConvTranspose4x4s2's form when none is given (see its docstring)."""
  return "scatter" if 16 * features <= in_features else "phases"


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
