"""ShapesWorld captions: a small grammar with synonyms and varied word order, and its parser.

Every attribute value has a list of surface forms; the first is the canonical word. Surface forms of different
attributes never share a word, so a caption parses back by keyword search: the background is found anywhere,
then the text is split into one segment per object (" and ", " next to ", " beside ") and each segment's
shape, colour, size and position words are read off.
"""

from __future__ import annotations

import random
import re

from conceptjax.data._shapes_draw import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES

SHAPE_WORDS = {
  "circle": ("circle", "disk"),
  "square": ("square", "box"),
  "triangle": ("triangle",),
  "star": ("star",),
  "cross": ("cross", "plus sign"),
  "diamond": ("diamond", "rhombus"),
}
COLOR_WORDS = {c: (c,) for c in COLORS} | {"purple": ("purple", "violet")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_WORDS = {
  "center": ("in the center", "in the middle"),
  "top left": ("in the top left", "at the upper left"),
  "top right": ("in the top right", "at the upper right"),
  "bottom left": ("in the bottom left", "at the lower left"),
  "bottom right": ("in the bottom right", "at the lower right"),
}
# Background noun phrases; the canonical one (first) is what zero-shot prompts use.
BACKGROUND_WORDS = {
  "plain": ("a plain background", "a blank background"),
  "stripes": ("stripes", "a striped background"),
  "dots": ("dots", "a dotted background"),
  "grass": ("grass", "a lawn"),
  "water": ("water", "the sea"),
  "sand": ("sand", "a beach"),
  "sky": ("the sky", "clouds"),
}
GENERIC_NOUN = "object"  # used when a caption leaves the shape out.
BG_PREPOSITIONS = ("on", "over", "against")
PREFIXES = ("", "", "a photo of ", "an image of ", "there is ")
OBJECT_JOINERS = (" and ", " next to ", " beside ")

# Keyword patterns for parsing (attribute value -> regex on a lower-cased caption).
_BG_KEYS = {
  "plain": r"\bplain\b|\bblank\b",
  "stripes": r"\bstripes\b|\bstriped\b",
  "dots": r"\bdots\b|\bdotted\b",
  "grass": r"\bgrass\b|\blawn\b",
  "water": r"\bwater\b|\bsea\b",
  "sand": r"\bsand\b|\bbeach\b",
  "sky": r"\bsky\b|\bclouds\b",
}
_POS_KEYS = {
  "center": r"\b(center|middle)\b",
  "top left": r"\b(top|upper) left\b",
  "top right": r"\b(top|upper) right\b",
  "bottom left": r"\b(bottom|lower) left\b",
  "bottom right": r"\b(bottom|lower) right\b",
}


def _words_re(forms: dict[str, tuple[str, ...]]) -> dict[str, str]:
  return {k: "|".join(rf"\b{re.escape(f)}\b" for f in v) for k, v in forms.items()}


_SHAPE_KEYS = _words_re(SHAPE_WORDS)
_COLOR_KEYS = _words_re(COLOR_WORDS)
_SIZE_KEYS = _words_re(SIZE_WORDS)
_JOIN_RE = re.compile("|".join(re.escape(j.strip()) for j in OBJECT_JOINERS).join((r"\b(?:", r")\b")))


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def _pick(rng: random.Random, options):
  return options[int(rng.random() * len(options))]


def object_phrase(rng: random.Random, shape: int, color: int, size: int, position: int) -> str:
  """A noun phrase for one object: optional size, colour, position; the shape is rarely left out."""
  noun = _pick(rng, SHAPE_WORDS[SHAPES[shape]]) if rng.random() > 0.1 else GENERIC_NOUN
  adjs = []
  if rng.random() < 0.55:
    adjs.append(_pick(rng, SIZE_WORDS[SIZES[size]]))
  colour = _pick(rng, COLOR_WORDS[COLORS[color]]) if rng.random() < 0.85 else None
  if colour is not None and (noun == GENERIC_NOUN or rng.random() < 0.8):
    adjs.append(colour)
    colour = None
  words = " ".join([*adjs, noun])
  phrase = f"{_article(words)} {words}"
  if colour is not None:  # varied order: "a big star in red".
    phrase += f" in {colour}"
  if rng.random() < 0.35:
    phrase += " " + _pick(rng, POSITION_WORDS[POSITIONS[position]])
  return phrase


def caption(rng: random.Random, objects: list[tuple[int, int, int, int]], background: int) -> str:
  """One caption for an image with ``objects`` = [(shape, colour, size, position), ...] and a background."""
  r = rng.random()
  bg_noun = _pick(rng, BACKGROUND_WORDS[BACKGROUNDS[background]])
  if r < 0.06:  # short: just the main object's shape.
    return SHAPE_WORDS[SHAPES[objects[0][0]]][0]
  if r < 0.10:  # short: colour and shape.
    return f"{COLOR_WORDS[COLORS[objects[0][1]]][0]} {SHAPE_WORDS[SHAPES[objects[0][0]]][0]}"
  if r < 0.13:  # short: the background alone.
    return bg_noun
  phrases = [object_phrase(rng, *o) for o in objects]
  if len(phrases) > 1 and rng.random() < 0.15:  # sometimes only the main object is named.
    phrases = phrases[:1]
  things = phrases[0]
  for p in phrases[1:]:
    things += _pick(rng, OBJECT_JOINERS) + p
  form = rng.random()
  if form < 0.12:  # no background.
    return _pick(rng, PREFIXES) + things
  bg = f"{_pick(rng, BG_PREPOSITIONS)} {bg_noun}"
  if form < 0.62:
    return f"{_pick(rng, PREFIXES)}{things} {bg}"
  if form < 0.82:
    return f"{bg}, {things}"
  return f"{bg_noun} with {things}"


def parse_caption(text: str) -> dict:
  """Reads attributes back from a caption of the grammar.

  Args:
    text: a caption (case-insensitive).

  Returns:
    ``{"background": id, "objects": [{"shape": id, "color": id, "size": id, "position": id}, ...]}`` with ids
    indexing the canonical vocabularies and -1 for an attribute the caption does not mention. Objects are in
    caption order, which is the image's object order.
  """
  t = text.lower().strip()
  background = _find(_BG_KEYS, t, BACKGROUNDS)
  # Remove the background phrase before splitting into object segments.
  for pat in _BG_KEYS.values():
    t = re.sub(pat, " ", t)
  objects = []
  for seg in _JOIN_RE.split(t):
    shape = _find(_SHAPE_KEYS, seg, SHAPES)
    color = _find(_COLOR_KEYS, seg, COLORS)
    if shape < 0 and color < 0 and not re.search(rf"\b{GENERIC_NOUN}\b", seg):
      continue
    objects.append(
      {
        "shape": shape,
        "color": color,
        "size": _find(_SIZE_KEYS, seg, SIZES),
        "position": _find(_POS_KEYS, seg, POSITIONS),
      }
    )
  return {"background": background, "objects": objects}


def _find(keys: dict[str, str], text: str, vocab: tuple[str, ...]) -> int:
  for value, pat in keys.items():
    if re.search(pat, text):
      return vocab.index(value)
  return -1
