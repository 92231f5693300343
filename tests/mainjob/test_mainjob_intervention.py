"""Removing the background concepts (the SpLiCE intervention) leaves no background weight."""

import numpy as np

from conceptjax import splice
from experiments.tasks import shapesworld_splice as t


def _unit(x):
  """Unit rows; a zero row stays zero (an empty decomposition recomposes to mu / |mu|)."""
  n = np.linalg.norm(x, axis=-1, keepdims=True)
  return np.where(n > 0, x / np.where(n > 0, n, 1), 0)


def test_remove_background_zeroes_background_weights_and_recomposes_the_rest():
  rng = np.random.default_rng(0)
  concepts = ["star", "water", "sea", "grass", "red", "dog"]
  meaning = [("shape", "star"), ("background", "water"), ("background", "water"), ("background", "grass")]
  meaning += [("color", "red"), None]
  d = 16
  dictionary = splice.dictionary_from_embeddings(rng.normal(size=(6, d)), concepts)
  mean = 0.6 * _unit(rng.normal(size=d)).astype(np.float32)
  # Random codes (distinct indices per row, some slots unused) and hand-made ones.
  idx = np.stack([rng.permutation(6)[:4] for _ in range(20)]).astype(np.int32)
  val = rng.uniform(0.05, 1.0, size=idx.shape).astype(np.float32)
  unused = rng.random(idx.shape) < 0.2
  real = t.Codes(np.where(unused, -1, idx), np.where(unused, 0, val).astype(np.float32), None)
  hand = t.Codes(
    np.array([[1, 0, 3, -1], [2, 4, 5, 1]], np.int32),
    np.array([[0.5, 0.3, 0.2, 0], [0.4, 0.3, 0.2, 0.1]], np.float32),
    None,
  )
  for codes in (real, hand):
    after, emb = t.remove_background(dictionary, mean, codes, meaning)
    bg = np.isin(codes.indices, [1, 2, 3])
    assert np.all(after.values[bg] == 0)
    np.testing.assert_array_equal(after.values[~bg], codes.values[~bg])
    # Oracle: recompose by hand from the non-background concepts only.
    w = np.zeros((codes.indices.shape[0], 6))
    for i, j in zip(*np.nonzero((codes.indices >= 0) & ~bg), strict=True):
      w[i, codes.indices[i, j]] += codes.values[i, j]
    oracle = _unit(_unit(w @ dictionary.matrix) + mean)
    np.testing.assert_allclose(emb, oracle, atol=1e-5)
    np.testing.assert_array_equal(t.dense_weights(after, 6)[:, [1, 2, 3]], 0)
  assert np.any(np.isin(real.indices, [1, 2, 3]) & (real.values > 0)), "the random codes held no background"
