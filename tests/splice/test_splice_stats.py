"""Per-class concept histograms and the permutation separation test, against numpy re-computations."""

import jax
import numpy as np
import pytest

from conceptjax import splice
from conceptjax.errors import InputError


def _codes(n=60, c=12, k=4, seed=0):
  """Random sparse codes, class 1 with concept 5 planted strongly, -1 padding in some slots."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n)
  others = np.array([j for j in range(c) if j != 5])
  idx = np.stack([rng.choice(others, k, replace=False) for _ in range(n)]).astype(np.int32)
  val = rng.uniform(0.05, 0.3, (n, k)).astype(np.float32)
  planted = labels == 1
  idx[planted, 0], val[planted, 0] = 5, 1.0
  idx[::5, -1], val[::5, -1] = -1, 0.0
  return idx, val, labels, c


def _dense(idx, val, c):
  w = np.zeros((idx.shape[0], c))
  for r in range(idx.shape[0]):
    for j, v in zip(idx[r], val[r], strict=True):
      if j >= 0:
        w[r, j] += v
  return w


def test_histograms_match_numpy():
  idx, val, labels, c = _codes()
  h = splice.class_histograms(idx, val, labels, 3, c)
  w = _dense(idx, val, c)
  for k in range(3):
    np.testing.assert_allclose(h.mean_weight[k], w[labels == k].mean(0), atol=1e-6)
    np.testing.assert_allclose(h.frequency[k], (w[labels == k] > 0).mean(0), atol=1e-6)
    assert h.counts[k] == (labels == k).sum()
  assert splice.top_concepts(h.mean_weight, [f"c{i}" for i in range(c)], 1)[1][0][0] == "c5"


def test_separation_matches_numpy_with_the_same_permutations():
  idx, val, labels, c = _codes()
  key = jax.random.key(3)
  sep = splice.class_separation(key, idx, val, labels, 3, c, num_permutations=50)
  w = _dense(idx, val, c)

  def diff(y):
    return np.stack([w[y == k].mean(0) - w[y != k].mean(0) for k in range(3)])

  observed = diff(labels)
  np.testing.assert_allclose(sep.difference, observed, atol=1e-5)
  exceed = sum(
    (diff(splice.permuted_labels(key, labels, p)) >= observed - 1e-7).astype(int) for p in range(50)
  )
  np.testing.assert_allclose(sep.p_value, (1 + exceed) / 51, atol=1e-6)
  assert sep.p_value[1, 5] == pytest.approx(1 / 51)  # the planted concept separates class 1
  assert sep.difference[1, 5] > 0.5
  assert sep.p_value[0, 5] > 0.5 and sep.p_value[2, 5] > 0.5
  # eager == jit
  with jax.disable_jit():
    eager = splice.class_separation(key, idx[:12], val[:12], labels[:12], 3, c, num_permutations=2)
  jitted = splice.class_separation(key, idx[:12], val[:12], labels[:12], 3, c, num_permutations=2)
  np.testing.assert_allclose(eager.difference, jitted.difference, atol=1e-6)
  np.testing.assert_array_equal(eager.p_value, jitted.p_value)


def test_bad_statistics_inputs():
  idx, val, labels, c = _codes(n=10)
  with pytest.raises(InputError, match="labels"):
    splice.class_histograms(idx, val, labels + 5, 3, c)
  with pytest.raises(InputError, match="num_concepts"):
    splice.class_histograms(idx, val, labels, 3, 4)
  with pytest.raises(InputError, match="indices"):
    splice.class_histograms(idx[:, :2], val, labels, 3, c)
