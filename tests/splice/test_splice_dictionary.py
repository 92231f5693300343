"""Concept dictionary and means: numpy re-derivation, on-disk cache, width mismatch, bad embeddings."""

import shutil

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
    name, dim, params = tiny_clip.name, tiny_clip.dim, tiny_clip.params

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


def _fake_model(tiny_clip, name, weight):
  class Fake:
    dim = tiny_clip.dim
    params = {"w": np.full(3, weight, np.float32)}

    def encode_texts(self, texts, batch_size=256):
      return tiny_clip.encode_texts(texts, batch_size)

  Fake.name = name
  return Fake()


def test_cache_key_is_the_model_content_not_its_name(tiny_clip, tmp_path):
  cache = tmp_path / "cache"
  splice.cached_dictionary(_fake_model(tiny_clip, "dir", 1.0), ["dog", "cat"], cache)
  splice.cached_dictionary(_fake_model(tiny_clip, "copy/b", 1.0), ["dog", "cat"], cache)  # same content
  assert len(list(cache.glob("dictionary-*.npz"))) == 1
  splice.cached_dictionary(_fake_model(tiny_clip, "dir", 2.0), ["dog", "cat"], cache)  # retrained in place
  assert len(list(cache.glob("dictionary-*.npz"))) == 2


def test_damaged_or_foreign_cache_file_is_rebuilt_with_a_warning(tiny_clip, tmp_path):
  good = splice.cached_dictionary(tiny_clip, ["dog", "cat"], tmp_path)
  (path,) = tmp_path.glob("dictionary-*.npz")
  data = path.read_bytes()
  for damaged in (data[: len(data) // 2], b""):  # truncated, zero bytes
    path.write_bytes(damaged)
    with pytest.warns(UserWarning, match=f"{path.name} is (truncated or corrupt|empty).*rebuilding it"):
      d = splice.cached_dictionary(tiny_clip, ["dog", "cat"], tmp_path)
    np.testing.assert_array_equal(d.matrix, good.matrix)
  # a file of another width under this key (copied by hand): rebuilt, never used
  splice.save_dictionary(path, splice.dictionary_from_embeddings(np.eye(8)[:2] + 0.1, ["dog", "cat"]))
  with pytest.warns(UserWarning, match="width 8 but the model embeds into width 16"):
    d = splice.cached_dictionary(tiny_clip, ["dog", "cat"], tmp_path)
  np.testing.assert_array_equal(d.matrix, good.matrix)
  with pytest.raises(InputError, match="width 8 but the dictionary has width 16"):
    splice.decompose(d, np.ones(16), np.ones((2, 8)))


def test_image_mean_cache_follows_the_rows_not_the_manifest(tmp_path):
  from conceptjax.data import store

  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(10, 4)) + 2.0, rng.normal(size=(10, 4)) - 2.0
  for emb in (a, b):  # the folder made again: same path, chunk names and row count, other images
    shutil.rmtree(tmp_path / "s", ignore_errors=True)
    st = store.Store.open(tmp_path / "s", num_rows=10, chunk_rows=5)
    store.fill(st, lambda s, e, x=emb: {"embeddings": x[s:e].astype(np.float32)}, progress=False)
    m = splice.cached_store_mean(tmp_path / "s", "model", tmp_path / "cache")
    np.testing.assert_allclose(m, splice.embedding_mean(emb), atol=1e-6)
  assert len(list((tmp_path / "cache").glob("image-mean-*.npz"))) == 2


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
