"""ShapesWorld generator: determinism, masks, correlations, captions, data source."""

import numpy as np
import pytest

from conceptjax.data import _shapes_draw as draw
from conceptjax.data import shapesworld as sw
from conceptjax.errors import InputError


@pytest.fixture(scope="module")
def samples():
  return sw.generate(sw.WorldConfig(), 600, seed=3, split="train")


def test_determinism_and_random_access(samples):
  again = sw.generate(sw.WorldConfig(), 600, seed=3, split="train")
  for name in sw.Samples._fields:
    a, b = getattr(samples, name), getattr(again, name)
    assert (a == b) if name == "captions" else np.array_equal(a, b), name
  other = sw.generate(sw.WorldConfig(), 600, seed=4, split="train")
  assert not np.array_equal(other.images, samples.images)
  assert not np.array_equal(sw.generate(sw.WorldConfig(), 600, seed=3, split="test").images, samples.images)
  # Any window of the stream equals the same rows of a longer draw (crosses a block boundary).
  window = sw.generate(sw.WorldConfig(), 50, seed=3, start=240)
  assert np.array_equal(window.images, samples.images[240:290])
  assert window.captions == samples.captions[240:290]
  # A jax key works as a seed and is deterministic too.
  import jax

  k1 = sw.generate(sw.WorldConfig(), 4, seed=jax.random.key(7))
  k2 = sw.generate(sw.WorldConfig(), 4, seed=jax.random.key(7))
  assert np.array_equal(k1.images, k2.images)


def test_shapes_and_types(samples):
  n, k, h = 600, 2, 64
  assert samples.images.shape == (n, h, h, 3) and samples.images.dtype == np.uint8
  assert samples.object_masks.shape == (n, k, h, h) and samples.object_masks.dtype == bool
  assert samples.background_mask.shape == (n, h, h)
  for a in sw.OBJECT_ATTRIBUTES:
    assert getattr(samples, a).shape == (n, k)
  assert len(samples.captions) == n
  assert set(np.unique(samples.num_objects)) == {1, 2}
  # Every value of every attribute occurs.
  for a in ("shape", "color", "size", "position"):
    assert set(np.unique(getattr(samples, a))) == set(range(-1, len(sw.ATTRIBUTES[a]))), a
  assert set(np.unique(samples.background)) == set(range(len(sw.ATTRIBUTES["background"])))
  np.testing.assert_array_equal(samples.label, samples.shape[:, 0])
  # The main object's attributes: the first object's, and the image's background.
  np.testing.assert_array_equal(samples.main("shape"), samples.label)
  np.testing.assert_array_equal(samples.main("color"), samples.color[:, 0])
  np.testing.assert_array_equal(samples.main("background"), samples.background)
  assert (samples.main("size") >= 0).all()  # every image has a main object
  with pytest.raises(InputError, match="unknown attribute 'colour'"):
    samples.main("colour")


def test_masks(samples):
  s = samples
  for i in range(len(s)):
    for j in range(2):
      m = s.object_masks[i, j]
      if j >= s.num_objects[i]:
        assert not m.any() and s.shape[i, j] == -1 and s.color[i, j] == -1
        continue
      assert m.sum() > 30, (i, j)
      # Every object pixel has exactly the object's colour.
      assert (s.images[i][m] == draw.COLOR_RGB[s.color[i, j]]).all(), (i, j)
      assert not (m & s.background_mask[i]).any()
    # Objects are disjoint and, with the background, cover the image.
    assert not (s.object_masks[i, 0] & s.object_masks[i, 1]).any()
    assert (s.object_masks[i].any(0) | s.background_mask[i]).all()
  # Two objects sit in distinct quadrants; a single object may be centred.
  two = s.num_objects == 2
  assert (s.position[two, 0] != s.position[two, 1]).all() and (s.position[two] > 0).all()
  # Large objects are larger than small ones (mean pixel area).
  area = s.object_masks.sum((2, 3))
  present = s.size >= 0
  assert area[present & (s.size == 1)].mean() > 2 * area[present & (s.size == 0)].mean()


@pytest.mark.parametrize(
  "shape,area",
  [
    ("circle", np.pi),
    ("square", (2 * 0.78) ** 2),
    ("diamond", 2.0),
    ("triangle", 0.5 * 1.96 * 1.7),
    ("cross", 2 * 0.6 * 1.9 - 0.36),
    ("star", 5 * 0.42 * np.sin(np.pi / 5)),
  ],
)
def test_shape_area_matches_closed_form(shape, area):
  r = 100.0
  m = draw.shape_masks(
    np.array([draw.SHAPES.index(shape)]), np.array([128.0]), np.array([128.0]), np.array([r]), 256
  )
  assert m.sum() / r**2 == pytest.approx(area, rel=0.02)


def test_correlation_spec_honoured():
  world = sw.WorldConfig(correlations=(sw.Correlation("shape", "star", "background", "water", 0.9),))
  s = sw.generate(world, 3000, seed=1)
  water = s.background == sw.ATTRIBUTES["background"].index("water")
  star = s.shape[:, 0] == sw.ATTRIBUTES["shape"].index("star")
  assert water[star].mean() == pytest.approx(0.9, abs=0.05)
  assert water[~star].mean() == pytest.approx(1 / 7, abs=0.03)

  wb = sw.generate(sw.waterbirds_like(p=0.95), 3000, seed=2)
  assert set(np.unique(wb.shape[wb.shape >= 0])) == {0, 3}
  g = {sw.group_name(x): (wb.group == x).mean() for x in np.unique(wb.group)}
  assert set(g) == {"star on water", "star on grass", "circle on water", "circle on grass"}
  assert g["star on grass"] + g["circle on water"] == pytest.approx(0.05, abs=0.015)


def test_captions_parse_back(samples):
  s = samples
  mentioned = {"background": 0, "shape": 0, "color": 0}
  for i, text in enumerate(s.captions):
    p = sw.parse_caption(text)
    assert len(p["objects"]) <= s.num_objects[i], text
    if p["background"] >= 0:
      mentioned["background"] += 1
      assert p["background"] == s.background[i], text
    for j, obj in enumerate(p["objects"]):
      for a in sw.OBJECT_ATTRIBUTES:
        if obj[a] >= 0:
          mentioned[a] = mentioned.get(a, 0) + 1
          assert obj[a] == getattr(s, a)[i, j], (text, a)
  # Most captions name the background, the shape and the colour; some are short.
  assert mentioned["background"] > 0.7 * len(s) and mentioned["shape"] > 0.8 * len(s)
  assert mentioned["color"] > 0.7 * len(s)
  lengths = [len(c.split()) for c in s.captions]
  assert min(lengths) == 1 and max(lengths) > 12
  assert len(set(s.captions)) > 0.8 * len(s)


def test_parse_caption_examples():
  p = sw.parse_caption("On the sea, a tiny violet rhombus at the upper left beside a big star in orange")
  assert p["background"] == 4
  assert p["objects"] == [
    {"shape": 5, "color": 4, "size": 0, "position": 1},
    {"shape": 3, "color": 5, "size": 1, "position": -1},
  ]
  assert sw.parse_caption("grass") == {"background": 3, "objects": []}


def test_attribute_words_and_prompts(samples):
  i = int(np.argmax(samples.num_objects == 1))
  words = sw.attribute_words(samples, i)
  s = samples
  expected = {
    sw.ATTRIBUTES["shape"][s.shape[i, 0]],
    sw.ATTRIBUTES["color"][s.color[i, 0]],
    sw.ATTRIBUTES["size"][s.size[i, 0]],
    sw.ATTRIBUTES["background"][s.background[i]],
  }
  assert words == sorted(expected)
  prompts = sw.zeroshot_prompts("background")
  assert len(prompts) == 7 and prompts[4] == "a photo of an object on water"
  # Prompts parse back to the value they name.
  for attr in ("shape", "color", "background"):
    for v, text in enumerate(sw.zeroshot_prompts(attr)):
      p = sw.parse_caption(text)
      got = p["background"] if attr == "background" else p["objects"][0][attr]
      assert got == v, text


def test_data_source_and_grain(samples):
  import grain

  src = sw.ShapesWorldSource(sw.WorldConfig(), 600, seed=3)
  assert len(src) == 600
  rec = src[300]
  np.testing.assert_array_equal(rec["image"], samples.images[300])
  assert rec["caption"] == samples.captions[300] and rec["background"] == samples.background[300]
  np.testing.assert_array_equal(rec["object_masks"], samples.object_masks[300])
  ds = grain.MapDataset.source(src).batch(8)
  batch = ds[2]
  np.testing.assert_array_equal(batch["image"], samples.images[16:24])
  with pytest.raises(IndexError):
    src[600]


def test_bad_config_is_one_line_error():
  with pytest.raises(InputError, match="unknown shape"):
    sw.generate(sw.WorldConfig(shapes=("blob",)), 2)
  with pytest.raises(InputError, match="max_objects"):
    sw.generate(sw.WorldConfig(max_objects=3), 2)
  with pytest.raises(InputError, match="split"):
    sw.generate(sw.WorldConfig(), 2, split="dev")
