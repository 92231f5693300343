"""Vocabulary reading as SpLiCE does (last k lines), duplicates, bad files; building from captions."""

import collections
from pathlib import Path

import pytest

from conceptjax import splice
from conceptjax.errors import InputError

# SpLiCE's vocabulary files are not shipped; they sit beside the checkout in <repo>/../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LAION = SHARED_DATA / "splice_vocab" / "laion.txt"
BIGRAMS = SHARED_DATA / "splice_vocab" / "laion_bigrams.txt"


@pytest.mark.skipif(not LAION.is_file(), reason=f"SpLiCE's vocabulary files not found in {SHARED_DATA}")
def test_reads_the_splice_vocabularies_as_the_reference():
  lines = [s.strip() for s in LAION.read_text(encoding="utf-8").splitlines()]  # the reference's reading
  assert splice.read_vocabulary(LAION) == lines[-10_000:]
  assert splice.read_vocabulary(LAION, 10_000)[-3:] == ["the", "of", "-"]  # most frequent last
  assert splice.read_vocabulary(LAION, 0) == lines == splice.read_vocabulary(LAION, -5)
  bi = splice.read_vocabulary(BIGRAMS, 0)
  assert len(bi) == 15_000 and " " in bi[0]


def test_last_k_lines_and_duplicates(tmp_path):
  p = tmp_path / "v.txt"
  p.write_text("rare\n  dog \n\ncat\ndog\ncommon\n", encoding="utf-8")
  assert splice.read_vocabulary(p, 2) == ["dog", "common"]
  with pytest.warns(UserWarning, match="1 duplicate"):
    assert splice.read_vocabulary(p, 0) == ["rare", "dog", "cat", "common"]
  with pytest.warns(UserWarning, match="duplicate"):
    assert splice.read_vocabulary(p, 4) == ["dog", "cat", "common"]  # first of the kept lines stays
  assert splice.read_vocabulary(p, 3) == ["cat", "dog", "common"]


@pytest.mark.parametrize(
  "content, match",
  [
    (None, "not found"),
    (b"", "no concepts"),
    (b"\n  \n", "no concepts"),
    (b"dog\ncaf\xe9\n", "not UTF-8 \\(line 2"),
  ],
)
def test_bad_vocabulary_files(tmp_path, content, match):
  p = tmp_path / "v.txt"
  if content is not None:
    p.write_bytes(content)
  with pytest.raises(InputError, match=match):
    splice.read_vocabulary(p)


def test_build_vocabulary_matches_a_counter(tmp_path):
  captions = ["A red dog on the grass.", "the dog's ball", "Two dogs, one cat", "a cat on a mat", "a-b test"]
  oracle = collections.Counter(w.strip(".,") for c in captions for w in c.lower().split())
  words = splice.build_vocabulary(captions)
  assert sorted(words) == sorted(oracle)
  counts = [oracle[w] for w in words]
  assert counts == sorted(counts)  # ascending frequency
  assert words[-1] == "a"
  top = splice.build_vocabulary(captions, max_size=3, stopwords=["a"])
  assert top == splice.build_vocabulary(captions, stopwords=["a"])[-3:]
  assert all(oracle[w] >= 2 for w in splice.build_vocabulary(captions, min_count=2))
  p = tmp_path / "v.txt"
  splice.write_vocabulary(p, words)
  assert splice.read_vocabulary(p, 0) == words
