"""Concept vocabularies: reading them as SpLiCE does, and building one from a caption corpus.

A vocabulary file holds one concept per line in ASCENDING frequency, so the last lines are the most frequent
concepts. ``vocabulary_size=k`` keeps the last ``k`` lines (SpLiCE's default is 10,000); ``k <= 0`` keeps all.

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024, Sec. 4;
  the authors' ``splice.get_vocabulary`` (github.com/AI4LIFE-GROUP/SpLiCE).
"""

from __future__ import annotations

import codecs
import collections
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from conceptjax import io
from conceptjax.errors import InputError, check

DEFAULT_VOCABULARY_SIZE = 10_000
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def read_vocabulary(path: str | os.PathLike, vocabulary_size: int = DEFAULT_VOCABULARY_SIZE) -> list[str]:
  """Reads a vocabulary file (ascending frequency) and keeps its last ``vocabulary_size`` concepts.

  Lines are stripped of surrounding whitespace; blank lines and a leading UTF-8 byte-order mark are
  skipped. A concept that appears again is dropped (its first kept occurrence stays, so the order is
  unchanged) with a warning naming how many and the first few, since a duplicate concept makes the
  dictionary degenerate.

  Args:
    path: UTF-8 text file, one concept per line, least frequent first.
    vocabulary_size: k; the last k lines are kept (``k <= 0``: all lines).

  Returns:
    The kept concepts in file order (the most frequent last).

  Raises:
    InputError: missing or unreadable file, non-UTF-8 bytes (with the line number), no concepts.
  """
  path = Path(path)
  check(path.is_file(), f"vocabulary file not found: {path}")
  raw = path.read_bytes()
  raw = raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark is not part of the first concept
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw[: e.start].count(b"\n") + 1
    raise InputError(f"vocabulary file {path} is not UTF-8 (line {line}, byte {e.start})") from None
  lines = [s.strip() for s in text.splitlines()]
  lines = [s for s in lines if s]
  check(len(lines) > 0, f"vocabulary file {path} holds no concepts (empty or blank lines only)")
  if vocabulary_size > 0:
    lines = lines[-vocabulary_size:]
  seen: set[str] = set()
  kept, dropped = [], []
  for s in lines:
    (dropped if s in seen else kept).append(s)
    seen.add(s)
  if dropped:
    warnings.warn(
      f"vocabulary {path}: dropped {len(dropped)} duplicate concept line(s), e.g. {dropped[:5]}", stacklevel=2
    )
  return kept


def count_words(captions: Iterable[str], lowercase: bool = True) -> collections.Counter:
  """Word counts over captions (words: runs of letters/digits, inner ``'`` and ``-`` kept)."""
  counts: collections.Counter = collections.Counter()
  for caption in captions:
    counts.update(_WORD.findall(caption.lower() if lowercase else caption))
  return counts


def build_vocabulary(
  captions: Iterable[str],
  *,
  min_count: int = 1,
  max_size: int = 0,
  lowercase: bool = True,
  stopwords: Iterable[str] = (),
) -> list[str]:
  """A vocabulary from a caption corpus, in ASCENDING frequency (the format ``read_vocabulary`` reads).

  Ties are broken alphabetically (reverse, so that among equally frequent words the alphabetically first
  one is last, i.e. kept first by ``vocabulary_size``), which makes the output deterministic.

  Args:
    captions: caption strings.
    min_count: drop words seen fewer times.
    max_size: keep only the ``max_size`` most frequent words (<= 0: all).
    lowercase: lowercase captions before counting.
    stopwords: words to leave out.

  Returns:
    Words, least frequent first.
  """
  check(min_count >= 1, f"min_count must be >= 1, got {min_count}")
  counts = count_words(captions, lowercase)
  stop = set(stopwords)
  items = [(w, n) for w, n in counts.items() if n >= min_count and w not in stop]
  items.sort(key=lambda wn: (-wn[1], wn[0]))  # most frequent first, then alphabetical
  if max_size > 0:
    items = items[:max_size]
  return [w for w, _ in reversed(items)]


def write_vocabulary(path: str | os.PathLike, concepts: Iterable[str]) -> None:
  """Writes one concept per line (atomically)."""
  io.write_text(path, "".join(f"{c}\n" for c in concepts))


def read_captions(paths: Iterable[str | os.PathLike]) -> Iterable[str]:
  """Yields the lines of UTF-8 caption files (one caption per line)."""
  for p in paths:
    p = Path(p)
    check(p.is_file(), f"caption file not found: {p}")
    try:
      with open(p, encoding="utf-8-sig") as f:  # -sig: a leading byte-order mark is dropped
        yield from f
    except UnicodeDecodeError as e:
      raise InputError(f"caption file {p} is not UTF-8 (byte {e.start} of a read block)") from None
