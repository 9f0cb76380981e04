"""Image grids as PNG files."""
import io

import numpy as np
from PIL import Image


def to_uint8(images, value_range=(0.0, 1.0)):
  """Float images in value_range -> uint8."""
  lo, hi = value_range
  x = (np.asarray(images, np.float32) - lo) / (hi - lo)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def make_grid(images_NHWC, ncols, pad=1):
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
  n, h, w, c = images_NHWC.shape
  nrows = -(-n // ncols)
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
  for i, img in enumerate(images_NHWC):
    r, col = divmod(i, ncols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
  return grid


def png_bytes(grid_HWC):
  """A uint8 [H, W, C] image (C = 1 or 3) encoded as PNG."""
  img = grid_HWC[..., 0] if grid_HWC.shape[-1] == 1 else grid_HWC
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()
