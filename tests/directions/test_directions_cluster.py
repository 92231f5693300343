"""Spherical k-means in JAX against scikit-learn KMeans on normalised data; restarts; no recompiles."""

import jax
import numpy as np
import pytest
from sklearn.cluster import KMeans

from conceptjax import cluster
from conceptjax.errors import InputError


def _data(seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(4, 8)) * 3
  x = np.concatenate([c + rng.normal(size=(80, 8)) for c in centres]).astype(np.float32)
  return x, x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_objective_matches_sklearn_on_normalised_points(seed):
  x, xn = _data(seed)
  res = cluster.spherical_kmeans(jax.random.key(seed), x, 4, restarts=8)
  sk = KMeans(4, n_init=8, random_state=seed).fit(xn)
  np.testing.assert_allclose(float(res.objective), sk.inertia_, rtol=1e-3)
  # our objective is the sum of squared distances of its own assignment, recomputed in numpy
  cent = np.asarray(res.centroids)
  a = np.asarray(res.assignment)
  np.testing.assert_allclose(float(res.objective), ((xn - cent[a]) ** 2).sum(), rtol=1e-4)
  assert bool(res.converged)
  assert float(res.objective) == pytest.approx(float(np.min(res.restart_objectives)))


def test_unit_centroids_and_no_recompile():
  x, _ = _data(2)
  r1 = cluster.spherical_kmeans(jax.random.key(0), x, 3, unit_centroids=True)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(r1.centroids), axis=1), 1.0, rtol=1e-5)
  size = cluster._kmeans._cache_size()
  cluster.spherical_kmeans(jax.random.key(1), x, 3, unit_centroids=True)
  assert cluster._kmeans._cache_size() == size


def test_bad_input_is_named():
  x, _ = _data()
  x[5] = 0
  with pytest.raises(InputError, match="row 5 has zero norm"):
    cluster.spherical_kmeans(jax.random.key(0), x, 3)
