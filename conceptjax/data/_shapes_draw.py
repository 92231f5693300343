"""ShapesWorld drawing: background textures and object masks, vectorised over a block of images (numpy).

Everything here is a pure function of its inputs and an explicit ``np.random.Generator``.
"""

from __future__ import annotations

import numpy as np

# Canonical vocabularies (global ids index these tuples). Order is part of the public API: never reorder,
# only append.
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
BACKGROUNDS = ("plain", "stripes", "dots", "grass", "water", "sand", "sky")

# Object colours are saturated and drawn flat (every object pixel has exactly this RGB value).
COLOR_RGB = np.array(
  [
    [220, 30, 30],  # red
    [40, 220, 60],  # green
    [25, 45, 250],  # blue
    [245, 225, 20],  # yellow
    [150, 40, 200],  # purple
    [255, 140, 0],  # orange
  ],
  dtype=np.uint8,
)

# Position centres as fractions of the image side (x, y); y grows downwards.
POSITION_XY = np.array([[0.5, 0.5], [0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]], np.float32)
# Object radius as a fraction of the image side: (low, high) for small and large.
SIZE_RADIUS = np.array([[0.095, 0.125], [0.175, 0.2]], np.float32)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  return yy + 0.5, xx + 0.5


def textures(background: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Draws a background texture for each image.

  Args:
    background: int [B] background ids (indices into ``BACKGROUNDS``).
    size: image side in pixels.
    rng: numpy generator (consumed in a fixed order, whatever the ids).

  Returns:
    float32 [B, size, size, 3] in 0..255.
  """
  b = background.shape[0]
  yy, xx = _grid(size, size)
  s = size / 64.0  # texture scales are designed for 64x64 and scale with the image.
  # Random draws in a fixed order for every image so that the stream does not depend on the ids.
  u = rng.random((b, 8)).astype(np.float32)
  noise = rng.random((b, size, size)).astype(np.float32)
  img = np.empty((b, size, size, 3), np.float32)

  def put(kind: int, rgb):
    sel = background == kind
    if sel.any():
      img[sel] = rgb(sel)

  def plain(sel):
    level = 165 + 40 * u[sel, 0]
    return (level[:, None, None, None] + 6 * (noise[sel, :, :, None] - 0.5)) * np.ones(3, np.float32)

  def stripes(sel):
    angle = np.deg2rad(45.0 * np.floor(4 * u[sel, 0]) + 10 * (u[sel, 1] - 0.5))
    period = (7 + 3 * u[sel, 2]) * s
    t = xx * np.cos(angle)[:, None, None] + yy * np.sin(angle)[:, None, None]
    on = np.sin(2 * np.pi * t / period[:, None, None] + 2 * np.pi * u[sel, 3][:, None, None]) > 0
    return np.where(on[..., None], 235.0, 115.0) * np.ones(3, np.float32)

  def dots(sel):
    spacing = (7 + 2 * u[sel, 0]) * s
    ox, oy = u[sel, 1] * spacing, u[sel, 2] * spacing
    fx = np.mod(xx - ox[:, None, None], spacing[:, None, None]) - spacing[:, None, None] / 2
    fy = np.mod(yy - oy[:, None, None], spacing[:, None, None]) - spacing[:, None, None] / 2
    on = fx**2 + fy**2 <= (1.9 * s) ** 2
    return np.where(on[..., None], np.float32([95, 95, 105]), np.float32([238, 236, 230]))

  def grass(sel):
    n = noise[sel]
    blades = n[:, :: max(int(4 * s), 1), :]  # vertical streaks: rows repeated.
    blades = np.repeat(blades, -(-size // blades.shape[1]), axis=1)[:, :size]
    v = 0.6 * blades + 0.4 * n - 0.5
    base = np.float32([55, 135, 45])
    return base + v[..., None] * np.float32([30, 90, 25])

  def water(sel):
    p1, p2 = 2 * np.pi * u[sel, 0], 2 * np.pi * u[sel, 1]
    wave = np.sin(
      2 * np.pi * yy / (6 * s)
      + 1.5 * np.sin(2 * np.pi * xx / (16 * s) + p1[:, None, None])
      + p2[:, None, None]
    )
    crest = np.clip((wave - 0.5) * 2, 0, 1)
    base, light = np.float32([30, 85, 170]), np.float32([110, 165, 225])
    out = base + crest[..., None] * (light - base)
    return out + 8 * (noise[sel, :, :, None] - 0.5)

  def sand(sel):
    speck = (noise[sel] - 0.5)[..., None]
    return np.float32([218, 192, 140]) + speck * np.float32([50, 45, 35])

  def sky(sel):
    top, bottom = np.float32([85, 155, 235]), np.float32([185, 218, 250])
    t = (yy / size)[None, ..., None]
    out = top + t * (bottom - top) + np.zeros((int(sel.sum()), 1, 1, 1), np.float32)
    cloud = np.zeros(out.shape[:3], bool)
    for k in range(2):  # two elliptic clouds per image.
      cx, cy = (
        (u[sel, 2 + 2 * k] * size)[:, None, None],
        ((0.1 + 0.8 * u[sel, 3 + 2 * k]) * size)[:, None, None],
      )
      rx, ry = (5 + 4 * u[sel, 6 + k]) * s, 3 * s
      cloud |= ((xx - cx) / rx[:, None, None]) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    return np.where(cloud[..., None], np.float32([246, 246, 250]), out)

  for kind, fn in enumerate((plain, stripes, dots, grass, water, sand, sky)):
    put(kind, fn)
  return img


def shape_masks(
  shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, size: int
) -> np.ndarray:
  """Inside-tests of one object per image on the pixel grid (pixel centres).

  Args:
    shape: int [B] shape ids (indices into ``SHAPES``).
    cx, cy, radius: float [B] centre and circumradius in pixels.
    size: image side.

  Returns:
    bool [B, size, size].
  """
  yy, xx = _grid(size, size)
  u = (xx[None] - cx[:, None, None]) / radius[:, None, None]
  v = (yy[None] - cy[:, None, None]) / radius[:, None, None]
  out = np.zeros(u.shape, bool)
  for kind in np.unique(shape):
    sel = shape == kind
    out[sel] = _inside(SHAPES[int(kind)], u[sel], v[sel])
  return out


def _inside(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  au, av = np.abs(u), np.abs(v)
  if name == "circle":
    return u**2 + v**2 <= 1.0
  if name == "square":
    return np.maximum(au, av) <= 0.78
  if name == "diamond":
    return au + av <= 1.0
  if name == "triangle":  # apex up at (0, -1), base at v = 0.7.
    return (v <= 0.7) & (au <= 0.98 * (v + 1.0) / 1.7)
  if name == "cross":
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
  if name == "star":  # five points, one up; inner radius 0.42.
    theta = np.arctan2(v, u) + np.pi / 2
    sector = 2 * np.pi / 5
    t = np.mod(theta, sector)
    phi = np.minimum(t, sector - t)  # angle from the nearest outer vertex, in [0, pi/5].
    rho = np.sqrt(u**2 + v**2)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    ax, ay = 1.0, 0.0
    bx, by = 0.42 * np.cos(np.pi / 5), 0.42 * np.sin(np.pi / 5)
    # Inside when on the origin's side of the edge A-B: cross(B - A, P - A) >= 0 (origin gives > 0).
    cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    return cross >= 0
  raise ValueError(f"unknown shape {name!r}")
