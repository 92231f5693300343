"""Concept dictionary and means: numpy re-derivation, on-disk cache, width mismatch, bad embeddings."""

import numpy as np
import pytest

from conceptjax import splice
from conceptjax.errors import InputError


def _numpy_dictionary(raw):
  """docs/splice.md, re-derived in float64 numpy: normalise, subtract the mean concept, renormalise."""
  raw = np.asarray(raw, np.float64)
  unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
  centred = unit - unit.mean(axis=0)
  return centred / np.linalg.norm(centred, axis=1, keepdims=True), unit.mean(axis=0)


def test_dictionary_matches_numpy():
  raw = np.random.default_rng(0).normal(size=(50, 12)) * np.linspace(0.5, 3, 50)[:, None] + 0.7
  d = splice.dictionary_from_embeddings(raw, [f"c{i}" for i in range(50)], "m")
  want, mean = _numpy_dictionary(raw)
  np.testing.assert_allclose(d.matrix, want, atol=2e-6)
  np.testing.assert_allclose(d.text_mean, mean, atol=2e-6)
  np.testing.assert_allclose(np.linalg.norm(d.matrix, axis=1), 1.0, atol=1e-6)
  assert d.index(["c3", "c0"]) == [3, 0]
  with pytest.raises(InputError, match="'zz'"):
    d.index(["zz"])


def test_cached_dictionary_built_once_per_model_and_vocabulary(tiny_clip, tmp_path):
  calls = []

  class Counting:
    name, dim = tiny_clip.name, tiny_clip.dim

    def encode_texts(self, texts, batch_size=256):
      calls.append(len(texts))
      return tiny_clip.encode_texts(texts, batch_size)

  concepts = ["dog", "cat", "red", "water", "grass", "a star"]
  d1 = splice.cached_dictionary(Counting(), concepts, tmp_path)
  d2 = splice.cached_dictionary(Counting(), concepts, tmp_path)
  assert calls == [6]  # the second call read the cache
  np.testing.assert_array_equal(d1.matrix, d2.matrix)
  assert d2.concepts == tuple(concepts)
  want, _ = _numpy_dictionary(tiny_clip.encode_texts(concepts))
  np.testing.assert_allclose(d2.matrix, want, atol=1e-5)
  splice.cached_dictionary(Counting(), concepts[1:], tmp_path)  # another vocabulary: another entry
  assert calls == [6, 5] and len(list(tmp_path.glob("dictionary-*.npz"))) == 2
  assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_model_retrained_into_the_same_directory_gets_a_new_cache_entry(tiny_clip, tmp_path):
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  (model_dir / "model.safetensors").write_bytes(b"old weights")

  class Local:
    name, dim = str(model_dir), tiny_clip.dim

    def encode_texts(self, texts, batch_size=256):
      return tiny_clip.encode_texts(texts, batch_size)

  splice.cached_dictionary(Local(), ["dog", "cat"], tmp_path / "cache")
  splice.cached_dictionary(Local(), ["dog", "cat"], tmp_path / "cache")
  assert len(list((tmp_path / "cache").glob("dictionary-*.npz"))) == 1
  (model_dir / "model.safetensors").write_bytes(b"retrained weights")  # e.g. `cp` of a new checkpoint
  splice.cached_dictionary(Local(), ["dog", "cat"], tmp_path / "cache")
  assert len(list((tmp_path / "cache").glob("dictionary-*.npz"))) == 2


def test_width_mismatch_between_model_and_cached_dictionary(tiny_clip, tmp_path):
  splice.cached_dictionary(tiny_clip, ["dog", "cat"], tmp_path)

  class Overwritten:  # the model directory now holds another model, of width 8
    name, dim = tiny_clip.name, 8

    def encode_texts(self, texts, batch_size=256):
      raise AssertionError("the cache entry exists: nothing is encoded")

  with pytest.raises(InputError, match="width 16 but the model embeds into width 8") as e:
    splice.cached_dictionary(Overwritten(), ["dog", "cat"], tmp_path)
  assert "dictionary-" in str(e.value) and "\n" not in str(e.value)
  d = splice.load_dictionary(next(tmp_path.glob("dictionary-*.npz")))
  with pytest.raises(InputError, match="width 8 but the dictionary has width 16"):
    splice.decompose(d, np.ones(16), np.ones((2, 8)))


def test_image_mean_and_store_cache(tmp_path):
  from conceptjax.data import store

  emb = np.random.default_rng(1).normal(size=(30, 6)) + 2.0
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  np.testing.assert_allclose(splice.embedding_mean(emb), unit.mean(0), atol=1e-6)
  st = store.Store.open(tmp_path / "s", num_rows=30, chunk_rows=7)
  store.fill(st, lambda a, b: {"embeddings": emb[a:b].astype(np.float32)}, progress=False)
  m = splice.cached_store_mean(tmp_path / "s", "model", tmp_path / "cache")
  np.testing.assert_allclose(m, unit.mean(0), atol=1e-6)
  assert 0 < np.linalg.norm(m) < 1
  (path,) = (tmp_path / "cache").glob("image-mean-*.npz")
  np.testing.assert_array_equal(splice.load_mean(path, 6), m)
  with pytest.raises(InputError, match="width 6"):
    splice.load_mean(path, 5)


@pytest.mark.parametrize(
  "bad, match",
  [
    (np.array([[1.0, 2.0, np.nan]]), "row 0 holds NaN"),
    (np.array([[1.0, 2.0, 3.0], [0.0, np.inf, 1.0]]), "row 1 holds NaN or Inf"),
    (np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), "row 1 has zero norm"),
    (np.ones((2, 4)), "width 4 but the dictionary has width 3"),
    (np.ones(3), "shape"),
  ],
)
def test_bad_embeddings(bad, match):
  with pytest.raises(InputError, match=match):
    splice.check_embeddings(bad, 3)
