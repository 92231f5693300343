"""Word statistics of generated explanations: counts and per-sentence frequencies without stop-words.

References:
  TExplain (docs/texplain.md): "drop stop-words, count words; the most frequent words explain the
  features".
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words(sentence: str, stop_words: Iterable[str] = ENGLISH_STOP_WORDS) -> list[str]:
  """Lower-cased alphabetic words of ``sentence`` minus ``stop_words``."""
  stop = stop_words if isinstance(stop_words, (set, frozenset)) else frozenset(stop_words)
  return [w for w in _WORD.findall(sentence.lower()) if w not in stop]


class WordStats(NamedTuple):
  """Word statistics of a set of sentences.

  Attributes:
    counts: word -> number of occurrences.
    sentence_freq: word -> fraction of sentences that contain it at least once.
    num_sentences: number of sentences counted.
  """

  counts: collections.Counter
  sentence_freq: dict[str, float]
  num_sentences: int

  def top(self, n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` most frequent words with their counts (ties by word)."""
    return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def word_stats(sentences: Iterable[str], stop_words: Iterable[str] = ENGLISH_STOP_WORDS) -> WordStats:
  """Counts words (stop-words removed) over ``sentences``."""
  stop = frozenset(stop_words)
  counts: collections.Counter = collections.Counter()
  present: collections.Counter = collections.Counter()
  n = 0
  for sentence in sentences:
    ws = words(sentence, stop)
    counts.update(ws)
    present.update(set(ws))
    n += 1
  return WordStats(counts, {w: c / max(n, 1) for w, c in present.items()}, n)


def presence(sentences: Sequence[Sequence[str]], word: str) -> np.ndarray:
  """[B, S] bool: whether sentence s of image b contains ``word`` (after lower-casing)."""
  return np.array([[word in _WORD.findall(s.lower()) for s in row] for row in sentences], dtype=bool).reshape(
    len(sentences), -1
  )


def plot_top_words(
  stats: WordStats, path, *, n: int = 15, title: str = "", highlight: Iterable[str] = ()
) -> None:
  """Writes a horizontal bar plot of the ``n`` most frequent words (per-sentence frequency) to ``path``.

  Words in ``highlight`` (e.g. a planted spurious word) are drawn in a second colour.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from conceptjax import io

  top = stats.top(n)[::-1]
  hl = set(highlight)
  fig, ax = plt.subplots(figsize=(5, 0.3 * max(len(top), 1) + 1.2))
  ax.barh(
    [w for w, _ in top],
    [stats.sentence_freq[w] for w, _ in top],
    color=["tab:red" if w in hl else "tab:blue" for w, _ in top],
  )
  ax.set_xlabel(f"fraction of {stats.num_sentences} sentences containing the word")
  ax.set_title(title)
  fig.tight_layout()
  with io.atomic_open(path, "wb") as f:
    fig.savefig(f, format=str(path).rsplit(".", 1)[-1] if "." in str(path) else "png", dpi=120)
  plt.close(fig)
