"""decompose / recompose / intervene / zero-shot against numpy and scikit-learn oracles."""

import jax
import numpy as np
import pytest

from conceptjax import parallel, splice
from conceptjax.errors import InputError

C, D = 48, 12


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(C, D)) + 0.5
  dictionary = splice.dictionary_from_embeddings(raw, [f"c{i}" for i in range(C)], "test")
  images = rng.normal(size=(10, D)) + 0.8
  mean = splice.embedding_mean(rng.normal(size=(50, D)) + 0.8)
  return dictionary, mean.astype(np.float32), images.astype(np.float32)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_recompose(matrix, mean, w):
  return _unit(_unit(w @ matrix) + mean)


def test_decompose_matches_sklearn_and_recomposes(problem):
  from sklearn.linear_model import Lasso

  dictionary, mean, images = problem
  lam = 0.05
  res = splice.decompose(dictionary, mean, images, lam)
  w = np.asarray(res.to_dense())
  zc = _unit(_unit(images.astype(np.float64)) - mean)
  for r in range(images.shape[0]):  # the reference solver: sklearn's objective is ours / (2 d)
    ref = Lasso(alpha=lam / (2 * D), positive=True, fit_intercept=False, tol=1e-12, max_iter=100_000)
    ref.fit(dictionary.matrix.T.astype(np.float64), zc[r])
    np.testing.assert_allclose(w[r], ref.coef_, atol=2e-3)
  assert (w >= 0).all() and (np.asarray(res.l0) == (w > 0).sum(1)).all()
  z_hat = np.asarray(splice.recompose(dictionary.matrix, mean, res.indices, res.values))
  np.testing.assert_allclose(z_hat, _numpy_recompose(dictionary.matrix, mean, w), atol=1e-5)
  np.testing.assert_allclose(splice.recompose_dense(dictionary.matrix, mean, w), z_hat, atol=1e-5)
  # round trip: a small penalty reproduces the centred embedding almost exactly, and more than a large one
  cos_small = np.asarray(splice.cosine(w @ dictionary.matrix, zc))
  loose = splice.decompose(dictionary, mean, images, 0.5)
  cos_large = np.asarray(splice.cosine(np.asarray(loose.to_dense()) @ dictionary.matrix, zc))
  assert cos_small.min() > 0.95 and (cos_small > cos_large).all()
  assert (np.asarray(loose.l0) < np.asarray(res.l0)).all()


def test_sharded_equals_single_device(problem):
  dictionary, mean, images = problem
  many = splice.decompose(dictionary, mean, images, 0.1)
  one = splice.decompose(dictionary, mean, images, 0.1, mesh=parallel.data_mesh(jax.devices()[:1]))
  np.testing.assert_allclose(np.asarray(many.to_dense()), np.asarray(one.to_dense()), atol=1e-5)


def test_recompose_edge_cases_and_eager(problem):
  dictionary, mean, _ = problem
  idx = np.array([[3, -1, 7], [-1, -1, -1]], np.int32)
  val = np.array([[0.5, 0.0, 0.25], [0.0, 0.0, 0.0]], np.float32)
  got = np.asarray(splice.recompose(dictionary.matrix, mean, idx, val))
  w = np.zeros((2, C))
  w[0, 3], w[0, 7] = 0.5, 0.25
  np.testing.assert_allclose(got[0], _numpy_recompose(dictionary.matrix, mean, w[:1])[0], atol=1e-6)
  np.testing.assert_allclose(got[1], mean / np.linalg.norm(mean), atol=1e-6)  # l0 = 0 gives mu / |mu|
  np.testing.assert_allclose(splice.recompose(dictionary.matrix, mean, idx, 10 * val), got, atol=1e-6)
  with jax.disable_jit():
    eager = np.asarray(splice.recompose(dictionary.matrix, mean, idx, val))
  np.testing.assert_allclose(eager, got, atol=1e-6)


def test_intervention_removes_exactly_the_named_concepts(problem):
  dictionary, mean, images = problem
  res = splice.decompose(dictionary, mean, images, 0.05)
  idx, val = np.asarray(res.indices), np.asarray(res.values)
  present = [int(j) for j in np.unique(idx[idx >= 0])]
  remove_ids = present[:3]
  names = [dictionary.concepts[j] for j in remove_ids]
  new_val, z_new = splice.intervene(dictionary, mean, idx, val, names)
  new_val = np.asarray(new_val)
  hit = np.isin(idx, remove_ids)
  assert hit.any()
  assert (new_val[hit] == 0).all()
  np.testing.assert_array_equal(new_val[~hit], val[~hit])  # nothing else changes
  w = np.array(res.to_dense())
  w[:, remove_ids] = 0
  np.testing.assert_allclose(z_new, _numpy_recompose(dictionary.matrix, mean, w), atol=1e-5)
  by_index, _ = splice.intervene(dictionary, mean, idx, val, remove_ids)
  np.testing.assert_array_equal(np.asarray(by_index), new_val)
  with pytest.raises(InputError, match="'no such concept'"):
    splice.intervene(dictionary, mean, idx, val, ["no such concept"])


def test_zero_shot_classify(problem):
  _, _, images = problem
  rng = np.random.default_rng(2)
  classes = rng.normal(size=(5, D)).astype(np.float32)
  want = np.argmax(_unit(images) @ _unit(classes).T, axis=1)
  np.testing.assert_array_equal(splice.classify(images, classes), want)
  one = splice.classify(images, classes, mesh=parallel.data_mesh(jax.devices()[:1]))
  np.testing.assert_array_equal(one, want)
  assert splice.class_prompts(["cat", "dog"]) == ["a photo of a cat", "a photo of a dog"]
  with pytest.raises(InputError, match="template"):
    splice.class_prompts(["cat"], "no placeholder")


@pytest.mark.parametrize(
  "images, match",
  [
    (np.array([[np.nan] * D]), "row 0 holds NaN"),
    (np.zeros((1, D)), "zero norm"),
    (np.ones((2, D + 1)), "width"),
  ],
)
def test_decompose_rejects_bad_embeddings(problem, images, match):
  dictionary, mean, _ = problem
  with pytest.raises(InputError, match=match):
    splice.decompose(dictionary, mean, images)
  with pytest.raises(InputError, match="l1_penalty"):
    splice.decompose(dictionary, mean, np.ones((1, D)), -1.0)


def test_second_call_does_not_recompile(problem):
  dictionary, mean, images = problem
  splice.recompose(dictionary.matrix, mean, np.zeros((4, 3), np.int32), np.ones((4, 3), np.float32))
  size = splice.recompose._cache_size()
  splice.recompose(dictionary.matrix, mean + 0.1, np.ones((4, 3), np.int32), np.zeros((4, 3), np.float32))
  assert splice.recompose._cache_size() == size
