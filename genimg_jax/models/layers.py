"""Small building blocks shared by the models."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")

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
    return _with_params(self, x_BHWC, 4, lambda x, k: conv_transpose_4x4s2(x, k, self.method))


def _with_params(layer, x_BHWC, k, fn):
  """fn(x, kernel) with nn.Conv's parameters: "kernel" [k, k, cin, layer.features]
  (lecun_normal) and, if layer.use_bias, "bias" (zeros); computed in layer.dtype if set."""
  kernel = layer.param("kernel", nn.initializers.lecun_normal(),
                       (k, k, x_BHWC.shape[-1], layer.features))
  if layer.dtype is not None:
    x_BHWC, kernel = x_BHWC.astype(layer.dtype), kernel.astype(layer.dtype)
  y = fn(x_BHWC, kernel)
  if layer.use_bias:
    y = y + layer.param("bias", nn.initializers.zeros, (layer.features,)).astype(y.dtype)
  return y


def conv_transpose_4x4s2(x_BHWC, kernel, method=None):
  """ConvTranspose4x4s2 without its bias: x [B, H, W, cin], kernel [4, 4, cin, F] ->
  [B, 2H, 2W, F]. method: phases | scatter | conv | None (auto_method)."""
  cin, F = kernel.shape[2:]
  k = kernel
  method = method or auto_method(cin, F)
  B, H, W, _ = x_BHWC.shape
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
                                     ((1, 1), (1, 1)), dimension_numbers=_NHWC)
    y = y.reshape(B, H, W, 2, 2, F).transpose(0, 1, 3, 2, 4, 5)
  elif method == "phases":
    # Each output phase (row parity a, column parity b) is a 2x2 correlation of the
    # input: taps of phase 0 sit at offsets -1, 0 (padding 1 before), of phase 1 at 0, +1.
    pad = {0: (1, 0), 1: (0, 1)}
    def phase(a, b):
      kab = jnp.stack([jnp.stack([k[kr, kc] for kc, _ in taps[b]]) for kr, _ in taps[a]])
      return jax.lax.conv_general_dilated(x_BHWC, kab, (1, 1), (pad[a], pad[b]),
                                          dimension_numbers=_NHWC)
  elif method == "scatter":
    z = _tap_products(x_BHWC, k, (1, 1))
    phase = lambda a, b: sum(z[:, 1 + r:1 + r + H, 1 + c:1 + c + W, kr, kc]
                             for kr, r in taps[a] for kc, c in taps[b])
  else:
    raise ValueError(f"Unknown ConvTranspose4x4s2 method {method!r}; allowed: phases, scatter, conv")
  if method != "conv":  # interleave the 4 phases [B, H, W, F] -> [B, H, 2, W, 2, F]
    y = jnp.stack([jnp.stack([phase(a, b) for b in (0, 1)], axis=3) for a in (0, 1)], axis=2)
  return y.reshape(B, 2 * H, 2 * W, F)  # [B, H, 2 (row phase), W, 2 (column phase), F]


def _tap_products(x_BHWC, kernel, pads):
  """The input times every tap of `kernel` [kh, kw, cin, F] as one matrix multiply
  ([B*H*W, cin] x [cin, kh*kw*F]), padded: z [B, pads[0]+H+pads[1], ..., kh, kw, F] with
  z[b, pads[0] + p, pads[0] + q, i, j] = x[b, p, q] . kernel[i, j], zeros in the padding.
  The scatter forms of Conv and ConvTranspose4x4s2 add its slices at their output places."""
  B, H, W, cin = x_BHWC.shape
  kh, kw, _, F = kernel.shape
  z = x_BHWC.reshape(B * H * W, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * F)
  return jnp.pad(z.reshape(B, H, W, kh, kw, F), ((0, 0), pads, pads, (0, 0), (0, 0), (0, 0)))


def auto_method(in_features, features):
  """ConvTranspose4x4s2's form when none is given (see its docstring)."""
  return "scatter" if 16 * features <= in_features else "phases"


class Conv(nn.Module):
  """A k x k, stride-1, SAME convolution; for few output features in a form XLA:CPU runs fast.

  Same parameters ("kernel" [k, k, cin, features], "bias"), outputs and auto-name
  ("Conv_i") as nn.Conv(features, (k, k), padding="SAME") (tests/test_models.py checks
  values and gradients). Forms (`conv2d`):

  * "conv": XLA's convolution (lax.conv_general_dilated), as nn.Conv.
  * "scatter": the input times the kernel of all k*k taps as one matrix multiply
    ([B*H*W, cin] x [cin, k*k*features]), then each tap's product added at its output
    place (col2im, as ConvTranspose4x4s2's scatter form); its gradients are a matmul
    contracting over the k*k*features columns, one contracting over the pixels, and
    shifted slices.

  method None (default) picks "scatter" when k*k*features <= 2*cin (`conv_method`), else
  "conv": XLA:CPU runs a convolution with few output features slowly (16 -> 1 channels at
  28x28, batch 256: 11.5 ms forward, ~5 GFLOP/s), and the scatter form's forward slowly
  once features reach ~3 (its gradients stay fast). `python -m benchmarks.conv_ab layer`
  (2 CPU cores, 2026-11-28; batch 256, ms per call, forward / both gradients, conv vs
  scatter): 16 -> 1 at 28x28 11.5 / 18.5 vs 2.7 / 5.2; 16 -> 2 13.4 / 23.0 vs 6.0 / 8.3;
  16 -> 3 11.4 / 23.0 vs 20.9 / 7.9; 16 -> 6 10.2 / 30.1 vs 40.8 / 11.2 (conv picked);
  32 -> 1 at 32x32 16.0 / 41.1 vs 5.1 / 15.2; 32 -> 6 31.1 / 55.2 vs 58.0 / 39.3 (about
  even, scatter picked; in an earlier run 32.2 / 64.6 vs 68.1 / 36.2); 16 -> 16 at 28x28
  12.4 / 37.4 vs 113 / 107 (conv picked).
  vae_mnist_conv's decoder output layer (16 -> 1) as scatter, whole train steps
  (`python -m benchmarks.conv_ab step vae_mnist_conv B`, 6 alternating rounds, median
  per-round ratio to conv everywhere): batch 64 1.14x (1.08-1.34), 256 1.14x
  (1.02-1.27), 1024 1.16x (1.02-1.19).
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Any = None  # compute dtype (None: that of the input)
  method: Any = None  # conv | scatter | None (conv_method decides)

  @nn.compact
  def __call__(self, x_BHWC):
    return _with_params(self, x_BHWC, self.kernel_size, lambda x, k: conv2d(x, k, self.method))


def conv_method(in_features, features, kernel_size):
  """Conv's form when none is given (see its docstring)."""
  return "scatter" if kernel_size**2 * features <= 2 * in_features else "conv"


def conv2d(x_BHWC, kernel, method=None):
  """Conv without its bias: x [B, H, W, cin], kernel [k, k, cin, F] -> [B, H, W, F],
  stride 1, SAME padding as lax's. method: conv | scatter | None (conv_method)."""
  k, _, cin, F = kernel.shape
  method = method or conv_method(cin, F, k)
  pads = ((k - 1) // 2, k // 2)
  if method == "conv":
    return jax.lax.conv_general_dilated(x_BHWC, kernel, (1, 1), (pads, pads),
                                        dimension_numbers=_NHWC)
  if method != "scatter":
    raise ValueError(f"Unknown Conv method {method!r}; allowed: conv, scatter")
  B, H, W, _ = x_BHWC.shape
  # output (h, w) takes tap (i, j) from the input pixel (h + i - pads[0], w + j - pads[0])
  z = _tap_products(x_BHWC, kernel, pads)
  return sum(z[:, i:i + H, j:j + W, i, j] for i in range(k) for j in range(k))


class StridedConv(nn.Module):
  """A k x k, stride-2, SAME convolution whose gradients XLA:CPU computes fast.

  Same parameters ("kernel" [k, k, cin, features], "bias") and outputs as
  nn.Conv(features, (k, k), strides=2, padding="SAME") (tests/test_models.py checks
  values and gradients); the computation is `strided_conv`: see there for the forms and
  why.
  """
  features: int
  kernel_size: int
  use_bias: bool = True
  dtype: Any = None  # compute dtype (None: that of the input)

  @nn.compact
  def __call__(self, x_BHWC):
    return _with_params(self, x_BHWC, self.kernel_size, strided_conv)


def _same_pads(n, k):
  """SAME padding (before, after) of a length-n axis for a k-tap, stride-2 window, as lax."""
  total = max((-(-n // 2) - 1) * 2 + k - n, 0)
  return total // 2, total - total // 2


def _conv_s2(x_BHWC, kernel):
  k = kernel.shape[0]
  pads = (_same_pads(x_BHWC.shape[1], k), _same_pads(x_BHWC.shape[2], k))
  return jax.lax.conv_general_dilated(x_BHWC, kernel, (2, 2), pads, dimension_numbers=_NHWC)


def _patches(x_BHWC, k):
  """The k*k strided slices of the SAME-padded input, stacked: [B, H/2, W/2, k*k*cin]."""
  B, H, W, C = x_BHWC.shape
  x = jnp.pad(x_BHWC, ((0, 0), _same_pads(H, k), _same_pads(W, k), (0, 0)))
  oh, ow = -(-H // 2), -(-W // 2)
  return jnp.concatenate([x[:, dy:dy + 2 * oh - 1:2, dx:dx + 2 * ow - 1:2, :]
                          for dy in range(k) for dx in range(k)], axis=-1)


@jax.custom_vjp
def strided_conv(x_BHWC, kernel):
  """k x k, stride-2, SAME convolution (no bias): x [B, H, W, cin], kernel [k, k, cin, F].

  The value is XLA's own strided convolution; the gradients are written out (a custom
  VJP) because XLA:CPU's autodiff forms of them are slow inside a train step:
  * kernel gradient: XLA's transpose is a convolution with the batch as features and
    the output map as (dilated) window, which inside the gan_mnist step it leaves in a
    non-canonical layout and runs in a naive loop (whole steps with plain lax
    convolutions in D: 102-112 vs 836-1,006 img/s at batch 256). Here the
    same convolution is written with its operands transposed to the canonical
    NHWC / HWIO layouts (the input's channels as batch, its batch as features).
  * input gradient: for k = 4 on even sizes it is the 4x4 stride-2 transposed
    convolution with the flipped, transposed kernel, computed as conv_transpose_4x4s2
    (phase convolutions, or scatter for few output channels); otherwise the transpose of
    the patches form (dy times the kernel as a matrix, added back at the patch places).
  History: until 2026-11-27 the layer was patches x matrix in all three (forward,
  gradients by autodiff). On 2 CPU cores (one process, alternating rounds, real MNIST
  batches), gan_mnist train steps, patches -> this: batch 256 median per-round ratio
  1.24x (min 1.11x, 8 rounds), batch 1024 1.15x, batch 64 1.09x (6 rounds each). One D
  layer alone (32 -> 64 channels, 14x14, batch 256): forward 23-28 -> 4-5 ms; the patches
  form's kernel-gradient matmul (contracting over the 12,544 rows) alone took 14 ms.
  """
  return _conv_s2(x_BHWC, kernel)


def _strided_conv_fwd(x_BHWC, kernel):
  return _conv_s2(x_BHWC, kernel), (x_BHWC, kernel)


def _strided_conv_bwd(residuals, dy_BHWF):
  x, kernel = residuals
  k, cin, F = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  H, W = x.shape[1:3]
  # Kernel gradient: dk[i, j, c, f] = sum_{b, p, q} xpad[b, 2p + i, 2q + j, c] dy[b, p, q, f],
  # a stride-1 convolution of xpad (as [cin, Hp, Wp, B]) with dy (as [oh, ow, B, F]) dilated
  # by 2; its output is exactly [cin, k, k, F].
  xpad = jnp.pad(x, ((0, 0), _same_pads(H, k), _same_pads(W, k), (0, 0)))
  dk = jax.lax.conv_general_dilated(xpad.transpose(3, 1, 2, 0), dy_BHWF.transpose(1, 2, 0, 3),
                                    (1, 1), "VALID", rhs_dilation=(2, 2), dimension_numbers=_NHWC)
  dk = dk.transpose(1, 2, 0, 3).astype(kernel.dtype)
  if k == 4 and H % 2 == 0 and W % 2 == 0:  # SAME pads (1, 1): input 2p <- dy[p] k[1] + dy[p-1] k[3]
    dx = conv_transpose_4x4s2(dy_BHWF, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  else:
    g = dy_BHWF @ kernel.reshape(k * k * cin, F).T
    dx = jax.vjp(lambda v: _patches(v, k), x)[1](g)[0]
  return dx.astype(x.dtype), dk


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)
