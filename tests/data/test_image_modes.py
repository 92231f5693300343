"""Image files of every common mode come out as the right uint8 RGB, checked against a conversion written
here in numpy from the pixels that were saved (not against PIL's own ``convert``)."""

import numpy as np
import pytest
from PIL import Image

from conceptjax.data import images

RNG = np.random.default_rng(0)
H, W = 5, 7


def _white_composite(colour, alpha):
  """a * colour + (1 - a) * 255, rounded: the documented choice for transparent pixels."""
  a = alpha.astype(np.float64)[..., None] / 255.0
  return np.rint(a * colour.astype(np.float64) + (1.0 - a) * 255.0).astype(np.uint8)


def _grey16():
  v = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
  v[0, :4] = [0, 257, 65535, 32896]  # exact multiples of 257 and the extremes
  return Image.fromarray(v), np.repeat(np.rint(v / 257.0).astype(np.uint8)[..., None], 3, axis=-1)


def _grey():
  g = RNG.integers(0, 256, (H, W), dtype=np.uint8)
  return Image.fromarray(g), np.repeat(g[..., None], 3, axis=-1)


def _grey_alpha():
  ga = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
  return Image.fromarray(ga, "LA"), _white_composite(np.repeat(ga[..., :1], 3, axis=-1), ga[..., 1])


def _rgba():
  x = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
  x[0, 0, 3], x[0, 1, 3] = 0, 255
  return Image.fromarray(x, "RGBA"), _white_composite(x[..., :3], x[..., 3])


def _palette(transparent):
  palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
  idx = RNG.integers(0, 16, (H, W)).astype(np.uint8)
  im = Image.fromarray(idx, "P")
  im.putpalette(palette.ravel().tolist())
  want = palette[idx]
  if transparent:
    im.info["transparency"] = 3
    want = np.where((idx == 3)[..., None], 255, want).astype(np.uint8)
  return im, want


def _cmyk():
  x = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
  k = x[..., 3:].astype(np.float64)
  return Image.fromarray(x, "CMYK"), np.rint((255 - x[..., :3]) * (255 - k) / 255).astype(np.uint8)


CASES = {
  "16-bit grey": (_grey16, ".png"),
  "grey": (_grey, ".png"),
  "grey + alpha": (_grey_alpha, ".png"),
  "RGBA": (_rgba, ".png"),
  "palette": (lambda: _palette(False), ".png"),
  "palette with transparency": (lambda: _palette(True), ".png"),
  "CMYK": (_cmyk, ".tif"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folder_images_convert_like_the_numpy_reference(case, tmp_path):
  make, suffix = CASES[case]
  im, want = make()
  im.save(tmp_path / f"x{suffix}")
  got = images.FolderSource(tmp_path)[0]["image"]
  assert got.dtype == np.uint8 and got.shape == (H, W, 3)
  np.testing.assert_allclose(got.astype(int), want.astype(int), atol=1 if case == "CMYK" else 0)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
  v = np.full((4, 4), 32896, np.uint16)  # mid grey in 16 bits
  Image.fromarray(v).save(tmp_path / "mid.png")
  assert (images.FolderSource(tmp_path)[0]["image"] == 128).all()  # PIL's convert("RGB") gives 255


def test_arrays_from_datasets_use_the_same_conversion():
  v = RNG.integers(0, 65536, (H, W, 3)).astype(np.uint16)
  np.testing.assert_array_equal(images.as_rgb(v), np.rint(v / 257.0).astype(np.uint8))
  x = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
  np.testing.assert_array_equal(images.as_rgb(x), _white_composite(x[..., :3], x[..., 3]))
  g = RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)
  np.testing.assert_array_equal(images.as_rgb(g), np.repeat(g, 3, axis=-1))
