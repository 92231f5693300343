"""conceptjax.report: well-formed HTML, images on disk, tables with the expected rows, PNG round trip."""

from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conceptjax.errors import InputError
from conceptjax.report import Bar, Report, png_bytes

VOID = {"meta", "img", "br", "hr", "input", "link"}


class _Checker(HTMLParser):
  """Checks tag nesting and collects img srcs and table rows."""

  def __init__(self):
    super().__init__()
    self.stack, self.errors, self.srcs, self.tables = [], [], [], []

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.srcs.append(dict(attrs)["src"])
    if tag == "table":
      self.tables.append([])
    if tag == "tr":
      self.tables[-1].append([])
    if tag not in VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag):
    if not self.stack or self.stack[-1] != tag:
      self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
    else:
      self.stack.pop()

  def handle_data(self, data):
    if self.stack and self.stack[-1] in ("td", "th") and self.tables:
      self.tables[-1][-1].append(data)


def test_png_bytes_decodes_to_the_same_pixels():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, size=(4, 9), dtype=np.uint8)
  import io

  for a in (rgb, grey):
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a)))), a)
  with pytest.raises(InputError, match="uint8"):
    png_bytes(rgb.astype(np.float32))


def test_report_is_well_formed_and_its_images_exist(tmp_path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  r = Report(tmp_path / "rep", "A <test> & report")
  r.heading("Tables")
  r.table(["metric", "value"], [["a", 0.5], ["b <x>", 2], ["c", np.float32(0.25)]], caption="three rows")
  img = np.zeros((8, 8, 3), np.uint8)
  cards = [
    r.card(img, f"thumb_{i}", f"image {i}", [Bar("star", 0.4, True), Bar("dog", 0.1)], ["true: star"])
    for i in range(3)
  ]
  r.cards(cards)
  r.image(img, "plain", "a plain image")
  fig, ax = plt.subplots()
  ax.plot([0, 1], [0, 1])
  r.figure(fig, "plot", "a line")
  path = r.write()

  assert path == tmp_path / "rep" / "index.html"
  checker = _Checker()
  checker.feed(path.read_text())
  checker.close()
  assert checker.errors == []
  assert checker.stack == []
  assert sorted(checker.srcs) == sorted(
    ["thumb_0.png", "thumb_1.png", "thumb_2.png", "plain.png", "plot.png"]
  )
  for src in checker.srcs:
    assert (path.parent / src).is_file()
    assert (path.parent / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  (table,) = checker.tables
  assert table == [["metric", "value"], ["a", "0.500"], ["b <x>", "2"], ["c", "0.250"]]
  assert "A &lt;test&gt; &amp; report" in path.read_text()


def test_report_rejects_bad_input(tmp_path):
  r = Report(tmp_path, "t")
  with pytest.raises(InputError, match="row 0 has 1 cells"):
    r.table(["a", "b"], [[1]])
  r.image(np.zeros((2, 2, 3), np.uint8), "x", "x")
  with pytest.raises(InputError, match="used twice"):
    r.image(np.zeros((2, 2, 3), np.uint8), "x", "x")
  with pytest.raises(InputError, match="file name"):
    r.image(np.zeros((2, 2, 3), np.uint8), "../evil", "x")


def test_report_command_reproduces_the_config():
  from experiments import run as runner
  from experiments.configs import shapesworld_splice as cfg_lib
  from experiments.tasks.shapesworld_splice import reproducing_spec

  for arg in ("", "seed=3,clip='/models/my clip',l1_penalty=0.5,correlation=0.9,runlocal=True"):
    config = cfg_lib.get_config(arg)
    assert runner.load_config(reproducing_spec(config)) == config, arg
