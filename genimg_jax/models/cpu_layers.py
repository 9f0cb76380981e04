"""Convolutions and GroupNorm in forms that XLA:CPU runs fast: what the models use on a
CPU only.

The models are plain Flax: they take their convolution and normalization modules as
fields that default to nn.Conv, nn.ConvTranspose and nn.GroupNorm. `layers.conv_modules`
injects the classes below instead when model.conv_impl is "cpu", or "auto" on a CPU
backend. Each takes the arguments of its Flax counterpart (the ones the models use),
creates the same parameters under the same auto-names (Conv_i, ConvTranspose_i,
GroupNorm_i), so checkpoints move between the two forms, and computes the same function
(tests/test_cpu_layers.py checks values and gradients). What differs is how, where
XLA:CPU is slow at the plain form:

* Conv, stride 1, SAME, few output features (k*k*features <= 2*cin, e.g. a decoder's
  image-output layer): the input times every tap as one matmul, each tap's product then
  added at its output place (`conv2d`'s "scatter" form). XLA:CPU runs a convolution with
  few output features at a few GFLOP/s.
* Conv, stride 1, SAME, odd kernel, with written_gradients=True: XLA's own convolution
  with hand-written gradients (`same_conv`, a custom VJP whose rules call it again, so
  that a second derivative, R1's, takes them too). Inside some train steps XLA:CPU lands
  the autodiff kernel gradient of a stride-1 convolution in the non-canonical layout of
  the strided case below (the StyleGAN discriminator's, 1.4 s for one 3x3 16 -> 16
  kernel gradient at 32x32, batch 64); in others (the U-Net's) it does not and the
  written form is slower, so a model opts in through layers.conv_modules.
* Conv, stride 2, SAME: XLA's own convolution with hand-written gradients
  (`strided_conv`, a custom VJP): XLA:CPU's autodiff kernel gradient of a strided
  convolution lands in a non-canonical layout and runs in a naive loop inside a train
  step. A custom VJP has no forward-mode rule, so jax.jvp cannot go through it (one
  reason it is not the default form): `Conv(..., custom_vjp=False)`
  (layers.conv_modules(forward_differentiable=True)) keeps lax's strided convolution
  and every other CPU form, all of which jax.jvp goes through.
* ConvTranspose 4x4, stride 2, SAME: the four output phases as 2x2 correlations of the
  input interleaved ("phases"), or for few output features the all-taps matmul
  ("scatter"): XLA:CPU runs the gradient of a transposed convolution far slower than that
  of an ordinary one.

* GroupNorm: the group statistics as sums over the image's rows and columns first (the
  channels stay the contiguous minor dimension), then over each group's channels, and the
  normalization as one per-channel scale and shift. nn.GroupNorm reduces over
  [B, H, W, groups, channels per group] with a minor dimension of a few channels, which
  XLA:CPU runs several times slower, forward and backward. Same statistics (the mean of x
  and of x^2, as nn.GroupNorm's fast variance), summed in another order: equal to float
  rounding, not bit for bit.

Any other convolution shape falls back to lax's convolution, as the Flax module computes it.
The measurements behind each choice: benchmarks/README.md, "Design notes".
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


def _params(module, x_BHWC, kernel_hw):
  """nn.Conv's parameters (kernel [kh, kw, cin, features], module.kernel_init; bias,
  zeros), created in its order, with x and the kernel cast to the module's compute dtype."""
  kernel = module.param("kernel", module.kernel_init,
                        (*kernel_hw, x_BHWC.shape[-1], module.features))
  bias = (module.param("bias", nn.initializers.zeros, (module.features,))
          if module.use_bias else None)
  if module.dtype is not None:
    x_BHWC, kernel = x_BHWC.astype(module.dtype), kernel.astype(module.dtype)
  return x_BHWC, kernel, bias


def _add_bias(y, bias):
  return y if bias is None else y + bias.astype(y.dtype)


class _Convolution(nn.Module):
  """The fields of nn.Conv / nn.ConvTranspose that the models use."""
  features: int
  kernel_size: Sequence[int]
  strides: Any = 1
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()


class Conv(_Convolution):
  """nn.Conv in XLA:CPU's fast forms (stride 1 or 2, SAME; else lax's convolution).
  custom_vjp=False: stride 2 as lax's convolution, so that jax.jvp goes through.
  written_gradients=True (with custom_vjp): stride 1, odd kernels as same_conv."""
  custom_vjp: bool = True
  written_gradients: bool = False

  @nn.compact
  def __call__(self, x_BHWC):
    k, s = _pair(self.kernel_size), _pair(self.strides)
    x, kernel, bias = _params(self, x_BHWC, k)
    square_same = self.padding == "SAME" and k[0] == k[1]
    if (square_same and s == (1, 1) and k[0] % 2 and self.custom_vjp and self.written_gradients
        and conv_method(x.shape[-1], self.features, k[0]) == "conv"):
      y = same_conv(x, kernel)
    elif square_same and s == (1, 1):
      y = conv2d(x, kernel)
    elif square_same and s == (2, 2) and self.custom_vjp:
      y = strided_conv(x, kernel)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, s, self.padding, dimension_numbers=_NHWC)
    return _add_bias(y, bias)


class ConvTranspose(_Convolution):
  """nn.ConvTranspose; the 4x4, stride-2, SAME case in XLA:CPU's fast forms."""

  @nn.compact
  def __call__(self, x_BHWC):
    k, s = _pair(self.kernel_size), _pair(self.strides)
    x, kernel, bias = _params(self, x_BHWC, k)
    if (k, s, self.padding) == ((4, 4), (2, 2), "SAME"):
      y = conv_transpose_4x4s2(x, kernel)
    else:
      y = jax.lax.conv_transpose(x, kernel, s, self.padding, dimension_numbers=_NHWC)
    return _add_bias(y, bias)


# --- stride 1: conv2d ---------------------------------------------------------------
def conv_method(in_features, features, kernel_size):
  """conv2d's form: "scatter" for few output features, else XLA's "conv"."""
  return "scatter" if kernel_size**2 * features <= 2 * in_features else "conv"


def conv2d(x_BHWC, kernel, method=None):
  """Stride-1, SAME convolution without bias: x [B, H, W, cin], kernel [k, k, cin, F] ->
  [B, H, W, F]. method: "conv" | "scatter" | None (conv_method decides)."""
  k, _, cin, F = kernel.shape
  method = method or conv_method(cin, F, k)
  pads = ((k - 1) // 2, k // 2)
  if method == "conv":
    return jax.lax.conv_general_dilated(x_BHWC, kernel, (1, 1), (pads, pads),
                                        dimension_numbers=_NHWC)
  if method != "scatter":
    raise ValueError(f"Unknown conv2d method {method!r}; allowed: conv, scatter")
  B, H, W, _ = x_BHWC.shape
  # output (h, w) takes tap (i, j) from the input pixel (h + i - pads[0], w + j - pads[0])
  z = _tap_products(x_BHWC, kernel, pads)
  return sum(z[:, i:i + H, j:j + W, i, j] for i in range(k) for j in range(k))


def _tap_products(x_BHWC, kernel, pads):
  """The input times every tap of `kernel` [kh, kw, cin, F] as one matrix multiply
  ([B*H*W, cin] x [cin, kh*kw*F]), padded: z [B, pads[0]+H+pads[1], ..., kh, kw, F] with
  z[b, pads[0] + p, pads[0] + q, i, j] = x[b, p, q] . kernel[i, j], zeros in the padding.
  The scatter forms add its slices at their output places."""
  B, H, W, cin = x_BHWC.shape
  kh, kw, _, F = kernel.shape
  z = x_BHWC.reshape(B * H * W, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * F)
  return jnp.pad(z.reshape(B, H, W, kh, kw, F), ((0, 0), pads, pads, (0, 0), (0, 0), (0, 0)))


def _kernel_gradient(xpad_BHWC, dy_BHWF, stride):
  """The kernel gradient [k, k, cin, F] of a convolution at `stride` of the padded input:
  dk[i, j, c, f] = sum_{b, p, q} xpad[b, stride p + i, stride q + j, c] dy[b, p, q, f], as
  a stride-1 convolution of xpad (as [cin, Hp, Wp, B]) with dy (as [oh, ow, B, F]) dilated
  by `stride`: both operands in the canonical NHWC / HWIO layouts, which XLA:CPU runs fast."""
  dk = jax.lax.conv_general_dilated(xpad_BHWC.transpose(3, 1, 2, 0), dy_BHWF.transpose(1, 2, 0, 3),
                                    (1, 1), "VALID", rhs_dilation=(stride, stride),
                                    dimension_numbers=_NHWC)
  return dk.transpose(1, 2, 0, 3)


def _conv_same(x_BHWC, kernel):
  p = (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(x_BHWC, kernel, (1, 1), ((p, p), (p, p)),
                                      dimension_numbers=_NHWC)


@jax.custom_vjp
def same_conv(x_BHWC, kernel):
  """Stride-1, SAME convolution without bias for an odd kernel [k, k, cin, F].

  The value is XLA's convolution; the gradients are written out:
  * kernel: the convolution with its operands transposed to the canonical NHWC / HWIO
    layouts (the input's channels as batch, its batch as features), as strided_conv's;
  * input: same_conv of the output gradient with the flipped, transposed kernel.
  The forward rule and the input gradient call same_conv itself, so that differentiating
  a gradient (R1's penalty, the gradient of a gradient) takes these rules again.
  """
  return _conv_same(x_BHWC, kernel)


def _same_conv_fwd(x_BHWC, kernel):
  return same_conv(x_BHWC, kernel), (x_BHWC, kernel)


def _same_conv_bwd(residuals, dy_BHWF):
  x, kernel = residuals
  p = (kernel.shape[0] - 1) // 2
  xpad = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  dk = _kernel_gradient(xpad, dy_BHWF, 1)
  dx = same_conv(dy_BHWF, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


same_conv.defvjp(_same_conv_fwd, _same_conv_bwd)


# --- 4x4 stride-2 transposed convolution ----------------------------------------------
def transpose_method(in_features, features):
  """conv_transpose_4x4s2's form: "scatter" for few output features, else "phases"."""
  return "scatter" if 16 * features <= in_features else "phases"


def conv_transpose_4x4s2(x_BHWC, kernel, method=None):
  """nn.ConvTranspose(F, (4, 4), (2, 2), "SAME") without bias: x [B, H, W, cin], kernel
  [4, 4, cin, F] -> [B, 2H, 2W, F]. method: "phases" | "scatter" | None (transpose_method).

  Along one axis, output 2p is x[p-1] k[0] + x[p] k[2] and output 2p+1 is
  x[p] k[1] + x[p+1] k[3]: each of the 4 output phases (row and column parity) is a 2x2
  correlation of the input.
  """
  cin, F = kernel.shape[2:]
  method = method or transpose_method(cin, F)
  B, H, W, _ = x_BHWC.shape
  taps = {0: ((0, -1), (2, 0)), 1: ((1, 0), (3, 1))}  # phase -> ((k index, input offset), ...)
  if method == "phases":
    # taps of phase 0 sit at offsets -1, 0 (padding 1 before), of phase 1 at 0, +1
    pad = {0: (1, 0), 1: (0, 1)}

    def phase(a, b):
      kab = jnp.stack([jnp.stack([kernel[kr, kc] for kc, _ in taps[b]]) for kr, _ in taps[a]])
      return jax.lax.conv_general_dilated(x_BHWC, kab, (1, 1), (pad[a], pad[b]),
                                          dimension_numbers=_NHWC)
  elif method == "scatter":
    z = _tap_products(x_BHWC, kernel, (1, 1))

    def phase(a, b):
      return sum(z[:, 1 + r:1 + r + H, 1 + c:1 + c + W, kr, kc]
                 for kr, r in taps[a] for kc, c in taps[b])
  else:
    raise ValueError(f"Unknown conv_transpose_4x4s2 method {method!r}; allowed: phases, scatter")
  # interleave the phases: [B, H, 2 (row phase), W, 2 (column phase), F]
  y = jnp.stack([jnp.stack([phase(a, b) for b in (0, 1)], axis=3) for a in (0, 1)], axis=2)
  return y.reshape(B, 2 * H, 2 * W, F)


# --- stride 2: strided_conv with written-out gradients -----------------------------------
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
  """k x k, stride-2, SAME convolution without bias: x [B, H, W, cin], kernel [k, k, cin, F].

  The value is XLA's strided convolution; the gradients are written out:
  * kernel: the same convolution with its operands transposed to the canonical NHWC /
    HWIO layouts (the input's channels as batch, its batch as features), the output
    gradient dilated by 2 as the window;
  * input: for k = 4 on even sizes the 4x4 stride-2 transposed convolution of the output
    gradient with the flipped, transposed kernel (conv_transpose_4x4s2); otherwise the
    transpose of the patches form.
  """
  return _conv_s2(x_BHWC, kernel)


def _strided_conv_fwd(x_BHWC, kernel):
  return _conv_s2(x_BHWC, kernel), (x_BHWC, kernel)


def _strided_conv_bwd(residuals, dy_BHWF):
  x, kernel = residuals
  k, cin, F = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  H, W = x.shape[1:3]
  xpad = jnp.pad(x, ((0, 0), _same_pads(H, k), _same_pads(W, k), (0, 0)))
  dk = _kernel_gradient(xpad, dy_BHWF, 2).astype(kernel.dtype)
  if k == 4 and H % 2 == 0 and W % 2 == 0:  # SAME pads (1, 1): input 2p <- dy[p] k[1] + dy[p-1] k[3]
    dx = conv_transpose_4x4s2(dy_BHWF, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  else:
    g = dy_BHWF @ kernel.reshape(k * k * cin, F).T
    dx = jax.vjp(lambda v: _patches(v, k), x)[1](g)[0]
  return dx.astype(x.dtype), dk


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


# --- GroupNorm ---------------------------------------------------------------------------
class GroupNorm(nn.Module):
  """nn.GroupNorm(num_groups) over NHWC inputs (its epsilon, scale and bias, and its fast
  variance E[x^2] - E[x]^2), with the statistics summed over H and W first."""
  num_groups: int = 32
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x_BHWC):
    B, H, W, C = x_BHWC.shape
    G = self.num_groups
    if C % G:
      raise ValueError(f"GroupNorm: {C} channels are not divisible into {G} groups.")
    scale = self.param("scale", nn.initializers.ones, (C,))
    bias = self.param("bias", nn.initializers.zeros, (C,))
    n = H * W * (C // G)

    def group_mean(v_BC):  # [B, C] sums over H, W -> the group's mean, per channel [B, C]
      return jnp.repeat(v_BC.reshape(B, G, C // G).sum(-1) / n, C // G, axis=1)

    mean = group_mean(jnp.sum(x_BHWC, axis=(1, 2)))
    var = jnp.maximum(group_mean(jnp.sum(x_BHWC * x_BHWC, axis=(1, 2))) - mean * mean, 0.0)
    a = jax.lax.rsqrt(var + self.epsilon) * scale  # x * a + b = (x - mean) / std * scale + bias
    b = bias - mean * a
    return x_BHWC * a[:, None, None, :] + b[:, None, None, :]
