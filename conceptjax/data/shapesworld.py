"""ShapesWorld: a seeded procedural image world whose every concept is known.

Each image (default 64x64 RGB) shows one or two flat-coloured objects on a textured background. Every
attribute is recorded, with a pixel mask for each object and for the background, and a caption from a small
grammar with synonyms and varied word order. A correlation spec plants dependences between attributes
(``P(background = water | shape = star) = 0.95``), and group labels (main shape, background) give
Waterbirds-like groups for worst-group evaluation.

Vocabularies (``ATTRIBUTES``; ids index these lists, order is stable):

- shape: circle, square, triangle, star, cross, diamond
- color: red, green, blue, yellow, purple, orange
- size: small, large
- position: center, top left, top right, bottom left, bottom right (two objects never share a position and
  never use "center", so objects never overlap)
- background: plain, stripes, dots, grass, water, sand, sky

Usage::

  from conceptjax.data import shapesworld as sw

  world = sw.WorldConfig()              # uniform, independent attributes
  s = sw.generate(world, 1000, seed=0, split="train")  # Samples of numpy arrays
  s.images.shape, s.captions[0]         # (1000, 64, 64, 3), 'a small red star on water'
  sw.parse_caption(s.captions[0])       # {'background': 4, 'objects': [{'shape': 3, ...}]}
  sw.attribute_words(s, 0)              # ['red', 'small', 'star', 'water']

  biased = sw.waterbirds_like(p=0.95)   # star/circle x water/grass, 95% aligned
  src = sw.ShapesWorldSource(biased, 10_000, split="train")  # grain random-access source
  ds = grain.MapDataset.source(src).shuffle(seed=0).batch(64)

Determinism: image ``i`` of ``(config, seed, split)`` is the same whatever ``num`` or ``start`` asked for it
(images are drawn in blocks of ``BLOCK`` with a generator seeded by (config.seed, seed, split, block)). So
``generate(c, 10, start=5)`` equals rows 5..14 of ``generate(c, 20)``, and the data source is random access.
The generator's seed does not include the world's other settings: two worlds drawn with the same
``(config.seed, seed, split)`` consume the same random stream (their images share positions, noise and
texture phases where the settings allow), so sets meant to be independent should differ in ``seed`` or
``split``. About 10k images take 5-10 s on one core.

Zero-shot prompts that fit the grammar (used for the shipped CLIP's evaluation): ``ZEROSHOT_TEMPLATES``:
shape "a photo of a {shape}", colour "a photo of a {color} object", background "a photo of an object on
{background}" where background is the canonical phrase (``BACKGROUND_PHRASE``: "water", "grass", "the
sky", "a plain background", ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any, NamedTuple

import numpy as np

from conceptjax.data import _shapes_draw as draw
from conceptjax.data._shapes_text import (
  BACKGROUND_WORDS,
  COLOR_WORDS,
  SHAPE_WORDS,
  SIZE_WORDS,
  caption,
  parse_caption,
)
from conceptjax.errors import InputError, check

__all__ = [
  "ATTRIBUTES",
  "BACKGROUND_PHRASE",
  "BLOCK",
  "OBJECT_ATTRIBUTES",
  "SPLITS",
  "SYNONYMS",
  "ZEROSHOT_TEMPLATES",
  "Correlation",
  "Samples",
  "ShapesWorldSource",
  "WorldConfig",
  "attribute_words",
  "generate",
  "group_name",
  "num_groups",
  "parse_caption",
  "waterbirds_like",
  "zeroshot_prompts",
]

ATTRIBUTES: dict[str, list[str]] = {
  "shape": list(draw.SHAPES),
  "color": list(draw.COLORS),
  "size": list(draw.SIZES),
  "position": list(draw.POSITIONS),
  "background": list(draw.BACKGROUNDS),
}
OBJECT_ATTRIBUTES = ("shape", "color", "size", "position")
# Surface forms of every value (first = canonical word): SYNONYMS["shape"]["circle"] = ("circle", "disk").
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
  "shape": SHAPE_WORDS,
  "color": COLOR_WORDS,
  "size": SIZE_WORDS,
  "background": BACKGROUND_WORDS,
}
BACKGROUND_PHRASE = {k: v[0] for k, v in BACKGROUND_WORDS.items()}
ZEROSHOT_TEMPLATES = {
  "shape": "a photo of a {}",
  "color": "a photo of a {} object",
  "background": "a photo of an object on {}",
}
SPLITS = ("train", "validation", "test")
BLOCK = 256


@dataclasses.dataclass(frozen=True)
class Correlation:
  """``P(attr = value | given_attr = given_value) = prob`` for the main object (object 0) and background.

  Attributes are "shape", "color", "size", "position" (of the main object) or "background". Where the
  condition holds, the target is set to ``value`` with probability ``prob`` and otherwise to one of the other
  allowed values uniformly; elsewhere it stays uniform. Rules apply in order.
  """

  given_attr: str
  given_value: str
  attr: str
  value: str
  prob: float


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Static description of a world (hashable).

  Attributes:
    image_size: side of the square RGB images in pixels.
    max_objects: 1 or 2 objects per image.
    two_object_prob: probability of a second object when ``max_objects == 2``.
    shapes, colors, sizes, backgrounds: the allowed values (subsets of ``ATTRIBUTES``; ids stay global).
    correlations: planted dependences, applied in order.
    seed: the world's seed (mixed with the seed given to ``generate``).
  """

  image_size: int = 64
  max_objects: int = 2
  two_object_prob: float = 0.35
  shapes: tuple[str, ...] = draw.SHAPES
  colors: tuple[str, ...] = draw.COLORS
  sizes: tuple[str, ...] = draw.SIZES
  backgrounds: tuple[str, ...] = draw.BACKGROUNDS
  correlations: tuple[Correlation, ...] = ()
  seed: int = 0

  def validate(self) -> WorldConfig:
    check(self.image_size >= 16, f"WorldConfig.image_size must be >= 16, got {self.image_size}")
    check(self.max_objects in (1, 2), f"WorldConfig.max_objects must be 1 or 2, got {self.max_objects}")
    check(0 <= self.two_object_prob <= 1, f"WorldConfig.two_object_prob {self.two_object_prob} not in [0, 1]")
    for name, vals in (
      ("shape", self.shapes),
      ("color", self.colors),
      ("size", self.sizes),
      ("background", self.backgrounds),
    ):
      check(len(vals) > 0, f"WorldConfig: no allowed {name} values")
      bad = [v for v in vals if v not in ATTRIBUTES[name]]
      check(not bad, f"WorldConfig: unknown {name} value(s) {bad}; known: {ATTRIBUTES[name]}")
    for c in self.correlations:
      for a, v in ((c.given_attr, c.given_value), (c.attr, c.value)):
        check(a in ATTRIBUTES, f"Correlation: unknown attribute {a!r}; known: {list(ATTRIBUTES)}")
        check(v in ATTRIBUTES[a], f"Correlation: unknown {a} value {v!r}; known: {ATTRIBUTES[a]}")
      check(0 <= c.prob <= 1, f"Correlation: prob {c.prob} not in [0, 1]")
      check(c.attr != "position", "Correlation: position cannot be a target (it is tied to the object count)")
    return self

  def allowed(self, attr: str) -> np.ndarray:
    """Global ids of the allowed values of ``attr``."""
    vals = {
      "shape": self.shapes,
      "color": self.colors,
      "size": self.sizes,
      "background": self.backgrounds,
      "position": draw.POSITIONS,
    }[attr]
    return np.array([ATTRIBUTES[attr].index(v) for v in vals], np.int32)


def waterbirds_like(p: float = 0.95, **kw: Any) -> WorldConfig:
  """A Waterbirds-like world: class = star vs circle, place = water vs grass, aligned with probability ``p``.

  Groups (``Samples.group``) are the four (shape, background) pairs; the minority groups are star-on-grass
  and circle-on-water.
  """
  defaults = dict(
    shapes=("star", "circle"),
    backgrounds=("water", "grass"),
    correlations=(
      Correlation("shape", "star", "background", "water", p),
      Correlation("shape", "circle", "background", "grass", p),
    ),
  )
  return WorldConfig(**(defaults | kw))


class Samples(NamedTuple):
  """A batch of ShapesWorld images with ground truth (numpy arrays; K = ``max_objects``).

  Object attribute arrays hold -1 for absent objects (``k >= num_objects``).
  """

  images: np.ndarray  # uint8 [N, H, W, 3]
  object_masks: np.ndarray  # bool [N, K, H, W]
  background_mask: np.ndarray  # bool [N, H, W]
  shape: np.ndarray  # int32 [N, K]
  color: np.ndarray  # int32 [N, K]
  size: np.ndarray  # int32 [N, K]
  position: np.ndarray  # int32 [N, K]
  num_objects: np.ndarray  # int32 [N]
  background: np.ndarray  # int32 [N]
  label: np.ndarray  # int32 [N]: shape of the main object (the class for classification tasks)
  group: np.ndarray  # int32 [N]: label * len(ATTRIBUTES["background"]) + background
  captions: list[str]  # N captions

  def __len__(self) -> int:
    return int(self.images.shape[0])

  def main(self, attr: str) -> np.ndarray:
    """int32 [N] value of ``attr`` for each image's main (first) object; ``"background"`` is per image."""
    check(attr in ATTRIBUTES, f"unknown attribute {attr!r}; known: {sorted(ATTRIBUTES)}")
    return self.background if attr == "background" else getattr(self, attr)[:, 0]


def num_groups() -> int:
  """Number of possible group ids (shape x background)."""
  return len(ATTRIBUTES["shape"]) * len(ATTRIBUTES["background"])


def group_name(group: int) -> str:
  """``"star on water"`` for a group id."""
  nb = len(ATTRIBUTES["background"])
  return f"{ATTRIBUTES['shape'][group // nb]} on {ATTRIBUTES['background'][group % nb]}"


def zeroshot_prompts(attr: str) -> list[str]:
  """The zero-shot prompt of every value of ``attr`` ("shape", "color" or "background"), in id order."""
  check(attr in ZEROSHOT_TEMPLATES, f"no zero-shot prompts for {attr!r}; known: {list(ZEROSHOT_TEMPLATES)}")
  words = BACKGROUND_PHRASE if attr == "background" else {v: v for v in ATTRIBUTES[attr]}
  return [ZEROSHOT_TEMPLATES[attr].format(words[v]) for v in ATTRIBUTES[attr]]


def attribute_words(
  samples: Samples, i: int, kinds: tuple[str, ...] = ("shape", "color", "size", "background")
) -> list[str]:
  """The canonical words of image ``i``'s true attributes (sorted, unique), e.g. ['red', 'star', 'water']."""
  words = set()
  n = int(samples.num_objects[i])
  for kind in kinds:
    if kind == "background":
      words.add(ATTRIBUTES["background"][int(samples.background[i])])
    else:
      ids = getattr(samples, kind)[i, :n]
      words.update(ATTRIBUTES[kind][int(j)] for j in ids)
  return sorted(words)


def _block_rng(config: WorldConfig, seed: int, split: str, block: int) -> np.random.Generator:
  h = hashlib.sha256(f"shapesworld/{config.seed}/{seed}/{split}/{block}".encode()).digest()
  return np.random.default_rng(int.from_bytes(h[:16], "little"))


def _seed_from(seed: Any) -> int:
  """An int seed, or a jax PRNG key turned into one."""
  if isinstance(seed, int | np.integer):
    return int(seed)
  import jax

  data = np.asarray(
    jax.random.key_data(seed) if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed
  )
  return int.from_bytes(data.astype(np.uint32).tobytes(), "little")


def _sample_block(config: WorldConfig, rng: np.random.Generator) -> Samples:
  """Draws ``BLOCK`` images (all randomness from ``rng``, in a fixed order)."""
  b, k, size = BLOCK, config.max_objects, config.image_size
  num_obj = np.ones(b, np.int32)
  if k == 2:
    num_obj += (rng.random(b) < config.two_object_prob).astype(np.int32)
  attrs = {
    a: config.allowed(a)[rng.integers(len(config.allowed(a)), size=(b, k))] for a in ("shape", "color")
  }
  attrs["size"] = config.allowed("size")[rng.integers(len(config.sizes), size=(b, k))]
  attrs["background"] = config.allowed("background")[rng.integers(len(config.backgrounds), size=b)]
  # Positions: one object -> any of the 5; two objects -> two distinct quadrants (ids 1..4).
  quad = np.argsort(rng.random((b, 4)), axis=1)[:, :k] + 1
  single = rng.integers(5, size=b)
  pos = quad.astype(np.int32)
  pos[:, 0] = np.where(num_obj == 1, single, quad[:, 0])
  attrs["position"] = pos
  # Correlations on the main object / background.
  for c in config.correlations:
    given = attrs[c.given_attr]
    given = given[:, 0] if given.ndim == 2 else given
    target = attrs[c.attr]
    tgt = target[:, 0] if target.ndim == 2 else target
    cond = given == ATTRIBUTES[c.given_attr].index(c.given_value)
    want = ATTRIBUTES[c.attr].index(c.value)
    others = np.array([v for v in config.allowed(c.attr) if v != want] or [want], np.int32)
    hit = rng.random(b) < c.prob
    alt = others[rng.integers(len(others), size=b)]
    tgt[:] = np.where(cond, np.where(hit, want, alt), tgt)
  absent = np.arange(k)[None, :] >= num_obj[:, None]
  for a in OBJECT_ATTRIBUTES:
    attrs[a] = np.where(absent, -1, attrs[a]).astype(np.int32)

  # Pixels.
  img = draw.textures(attrs["background"], size, rng)
  jitter = rng.uniform(-0.03, 0.03, size=(b, k, 2)).astype(np.float32)
  rfrac = rng.random((b, k)).astype(np.float32)
  masks = np.zeros((b, k, size, size), bool)
  for j in range(k):
    present = ~absent[:, j]
    if not present.any():
      continue
    sz = attrs["size"][present, j]
    lo, hi = draw.SIZE_RADIUS[sz, 0], draw.SIZE_RADIUS[sz, 1]
    radius = (lo + (hi - lo) * rfrac[present, j]) * size
    xy = (draw.POSITION_XY[attrs["position"][present, j]] + jitter[present, j]) * size
    masks[present, j] = draw.shape_masks(attrs["shape"][present, j], xy[:, 0], xy[:, 1], radius, size)
  images = np.clip(img, 0, 255).astype(np.uint8)
  for j in range(k):
    n_idx, y_idx, x_idx = np.nonzero(masks[:, j])
    images[n_idx, y_idx, x_idx] = draw.COLOR_RGB[attrs["color"][n_idx, j]]
  text_rng = random.Random(int(rng.integers(2**63)))
  captions = [
    caption(
      text_rng,
      [tuple(int(attrs[a][i, j]) for a in OBJECT_ATTRIBUTES) for j in range(int(num_obj[i]))],
      int(attrs["background"][i]),
    )
    for i in range(b)
  ]
  label = attrs["shape"][:, 0]
  return Samples(
    images=images,
    object_masks=masks,
    background_mask=~masks.any(axis=1),
    shape=attrs["shape"],
    color=attrs["color"],
    size=attrs["size"],
    position=attrs["position"],
    num_objects=num_obj,
    background=attrs["background"].astype(np.int32),
    label=label,
    group=(label * len(ATTRIBUTES["background"]) + attrs["background"]).astype(np.int32),
    captions=captions,
  )


def _concat(parts: list[Samples], lo: int, hi: int) -> Samples:
  fields = {}
  for name in Samples._fields:
    if name == "captions":
      fields[name] = [c for p in parts for c in p.captions][lo:hi]
    else:
      fields[name] = np.concatenate([getattr(p, name) for p in parts])[lo:hi]
  return Samples(**fields)


def generate(
  config: WorldConfig, num: int, *, seed: Any = 0, split: str = "train", start: int = 0
) -> Samples:
  """Generates images ``start .. start + num - 1`` of the stream ``(config, seed, split)``.

  Args:
    config: the world.
    num: number of images.
    seed: an int or a jax PRNG key (mixed with ``config.seed``).
    split: "train", "validation" or "test" (independent streams).
    start: index of the first image in the stream.

  Returns:
    ``Samples`` of numpy arrays with leading axis ``num``.
  """
  config.validate()
  check(num >= 0 and start >= 0, f"generate: num ({num}) and start ({start}) must be >= 0")
  if split not in SPLITS:
    raise InputError(f"generate: unknown split {split!r}; known: {list(SPLITS)}")
  seed = _seed_from(seed)
  first, last = start // BLOCK, (start + num + BLOCK - 1) // BLOCK
  parts = [
    _sample_block(config, _block_rng(config, seed, split, blk)) for blk in range(first, max(last, first + 1))
  ]
  lo = start - first * BLOCK
  return _concat(parts, lo, lo + num)


class ShapesWorldSource:
  """A grain/tfds-style random-access data source of ``num`` ShapesWorld images.

  ``len(src)`` and ``src[i]`` -> dict of numpy values (``image`` uint8 [H, W, 3], ``caption`` str,
  ``label``, ``group``, ``background``, ``shape``/``color``/``size``/``position`` [K], ``num_objects``,
  ``object_masks`` [K, H, W], ``background_mask`` [H, W]). Works with ``grain.MapDataset.source(src)``.
  Records are generated on demand one block at a time (the last few blocks are cached).
  """

  def __init__(self, config: WorldConfig, num: int, *, seed: Any = 0, split: str = "train"):
    config.validate()
    check(num >= 0, f"ShapesWorldSource: num must be >= 0, got {num}")
    check(split in SPLITS, f"ShapesWorldSource: unknown split {split!r}; known: {list(SPLITS)}")
    self.config, self.num, self.seed, self.split = config, num, _seed_from(seed), split
    self._cache: dict[int, Samples] = {}

  def __len__(self) -> int:
    return self.num

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if index < 0:
      index += self.num
    if not 0 <= index < self.num:
      raise IndexError(f"ShapesWorldSource index {index} out of range [0, {self.num})")
    blk = index // BLOCK
    if blk not in self._cache:
      if len(self._cache) >= 4:
        self._cache.pop(next(iter(self._cache)))
      self._cache[blk] = _sample_block(self.config, _block_rng(self.config, self.seed, self.split, blk))
    s, r = self._cache[blk], index % BLOCK
    out = {name: getattr(s, name)[r] for name in Samples._fields if name not in ("images", "captions")}
    out["image"] = s.images[r]
    out["caption"] = s.captions[r]
    return out

  def __repr__(self) -> str:
    return f"ShapesWorldSource(num={self.num}, split={self.split!r}, seed={self.seed}, config={self.config})"
