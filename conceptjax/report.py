"""A small, dependency-free HTML report writer for experiments.

A ``Report`` collects sections (headings, text, tables, thumbnails with concept-weight bars, matplotlib
figures) and writes one ``index.html`` into a folder, with every image as a PNG file beside it (relative
``src``), so the folder can be copied or served as is. Only the standard library writes the HTML and the PNGs
(``png_bytes``: zlib + struct); matplotlib is needed only for ``Report.figure``. Every file is written
atomically (``conceptjax.io``).

Usage::

  from conceptjax.report import Report, Bar

  r = Report("workdirs/main/report", "SpLiCE on ShapesWorld")
  r.heading("Headline")
  r.table(["metric", "value"], [["precision@3", 0.91]])
  r.cards([r.card(image, "img0", "a red star on water", [Bar("star", 0.4, True), Bar("dog", 0.1)])])
  r.figure(fig, "accuracy_vs_l0", "zero-shot accuracy against l0")
  path = r.write()                         # workdirs/main/report/index.html
"""

from __future__ import annotations

import html
import io as _io
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from conceptjax import io
from conceptjax.errors import check

__all__ = ["Bar", "Card", "Report", "png_bytes"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 4px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #ccc; padding: 6px; width: 230px; font-size: 0.8em; }
.card img { image-rendering: pixelated; display: block; margin-bottom: 4px; }
.bar { display: flex; align-items: center; margin: 1px 0; }
.bar .label { width: 90px; overflow: hidden; white-space: nowrap; }
.bar .track { flex: 1; background: #eee; height: 10px; margin: 0 4px; }
.bar .fill { height: 10px; background: #999; }
.bar .fill.hit { background: #2a9d3a; }
.bar .value { width: 38px; text-align: right; }
.note { color: #555; }
figure { margin: 0 0 1.5em 0; }
"""


class Bar(NamedTuple):
  """One concept-weight bar: label, value (>= 0) and whether it is highlighted (e.g. a true attribute)."""

  label: str
  value: float
  highlight: bool = False


class Card(NamedTuple):
  """A thumbnail with a title, notes and bars (built with ``Report.card``; ``src`` is relative)."""

  src: str
  title: str
  notes: tuple[str, ...]
  bars: tuple[Bar, ...]
  size: int  # displayed width in pixels


def png_bytes(pixels: Any) -> bytes:
  """Encodes uint8 [H, W, 3] (RGB) or [H, W] (grey) pixels as a PNG file (standard library only)."""
  a = np.asarray(pixels)
  check(a.dtype == np.uint8, f"png_bytes: pixels must be uint8, got {a.dtype}")
  check(
    a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3),
    f"png_bytes: pixels must have shape [H, W] or [H, W, 3], got {a.shape}",
  )
  h, w = a.shape[:2]
  check(h > 0 and w > 0, f"png_bytes: empty image of shape {a.shape}")
  color_type = 0 if a.ndim == 2 else 2
  raw = b"".join(b"\x00" + row.tobytes() for row in a.reshape(h, -1))  # filter type 0 per scanline

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (
      struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )

  header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", header)
    + chunk(b"IDAT", zlib.compress(raw, 6))
    + chunk(b"IEND", b"")
  )


def _cell(value: Any, float_format: str) -> str:
  if isinstance(value, float | np.floating):
    return html.escape(float_format.format(float(value)))
  return html.escape(str(value))


class Report:
  """An HTML report assembled in order and written to ``directory/index.html``.

  Args:
    directory: output folder (created); images are written into it as ``NAME.png``.
    title: page title and first heading.
  """

  def __init__(self, directory: str | os.PathLike, title: str):
    self.directory = Path(directory)
    self.title = title
    self._parts: list[str] = []
    self._names: set[str] = set()

  def _file(self, name: str) -> str:
    check(
      re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None, f"report file name {name!r}: use [A-Za-z0-9_.-]"
    )
    check(name not in self._names, f"report file name {name!r} is used twice")
    self._names.add(name)
    return f"{name}.png"

  def heading(self, text: str, level: int = 2) -> None:
    check(1 <= level <= 6, f"heading level must be in 1..6, got {level}")
    self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

  def text(self, text: str, css_class: str | None = None) -> None:
    """A paragraph (escaped)."""
    cls = f' class="{css_class}"' if css_class else ""
    self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

  def code(self, text: str) -> None:
    """A preformatted block (escaped), e.g. the command that reproduces the report."""
    self._parts.append(f"<pre>{html.escape(text)}</pre>")

  def table(
    self,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str | None = None,
    float_format: str = "{:.3f}",
  ) -> None:
    """A table; floats are printed with ``float_format``, everything else with ``str``."""
    for i, row in enumerate(rows):
      check(len(row) == len(header), f"table row {i} has {len(row)} cells; the header has {len(header)}")
    out = ["<table>"]
    if caption:
      out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
      out.append("<tr>" + "".join(f"<td>{_cell(v, float_format)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    self._parts.append("\n".join(out))

  def image(self, pixels: Any, name: str, alt: str, *, width: int | None = None) -> str:
    """Writes ``pixels`` (uint8 [H, W, 3]) as ``name.png`` and shows it; returns the relative src."""
    src = self._file(name)
    io.write_bytes(self.directory / src, png_bytes(pixels))
    w = f' width="{int(width)}"' if width else ""
    self._parts.append(f'<img src="{src}" alt="{html.escape(alt, quote=True)}"{w}>')
    return src

  def card(
    self, pixels: Any, name: str, title: str, bars: Sequence[Bar], notes: Sequence[str] = (), size: int = 128
  ) -> Card:
    """Writes a thumbnail ``name.png`` and returns its card (show cards with ``cards``)."""
    src = self._file(name)
    io.write_bytes(self.directory / src, png_bytes(pixels))
    return Card(src, title, tuple(notes), tuple(bars), size)

  def cards(self, cards: Sequence[Card], *, max_value: float | None = None) -> None:
    """A grid of thumbnails, each with its concept bars scaled to ``max_value`` (default: the largest bar)."""
    top = max_value if max_value is not None else max((b.value for c in cards for b in c.bars), default=1.0)
    top = top if top > 0 else 1.0
    out = ['<div class="grid">']
    for c in cards:
      out.append('<div class="card">')
      out.append(f'<img src="{c.src}" alt="{html.escape(c.title, quote=True)}" width="{c.size}">')
      out.append(f"<div><b>{html.escape(c.title)}</b></div>")
      out.extend(f'<div class="note">{html.escape(n)}</div>' for n in c.notes)
      out.append(self.bars_html(c.bars, top))
      out.append("</div>")
    out.append("</div>")
    self._parts.append("\n".join(out))

  @staticmethod
  def bars_html(bars: Sequence[Bar], max_value: float) -> str:
    """Horizontal bars (CSS widths), highlighted ones in green."""
    rows = []
    for b in bars:
      pct = 100.0 * min(max(b.value / max_value, 0.0), 1.0)
      cls = "fill hit" if b.highlight else "fill"
      rows.append(
        f'<div class="bar"><span class="label">{html.escape(b.label)}</span>'
        f'<span class="track"><span class="{cls}" style="display:block;width:{pct:.1f}%"></span></span>'
        f'<span class="value">{b.value:.2f}</span></div>'
      )
    return "\n".join(rows)

  def figure(self, fig: Any, name: str, caption: str, *, dpi: int = 100) -> str:
    """Saves a matplotlib figure as ``name.png`` (then closes it) and shows it with a caption."""
    import matplotlib.pyplot as plt

    src = self._file(name)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    io.write_bytes(self.directory / src, buf.getvalue())
    self._parts.append(
      f'<figure><img src="{src}" alt="{html.escape(caption, quote=True)}">'
      f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
    return src

  def html(self) -> str:
    """The whole page."""
    title = html.escape(self.title)
    body = "\n".join(self._parts)
    return (
      f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
      f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )

  def write(self) -> Path:
    """Writes ``index.html`` (atomically) and returns its path."""
    path = self.directory / "index.html"
    io.write_text(path, self.html())
    return path
