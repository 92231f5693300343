"""Baseline direction finders the EDDP table compares against.

Pattern-CAV (uses the true labels), PCA, FastICA and NMF (scikit-learn), spherical k-means
(conceptjax.cluster).
Each returns [n, D] direction rows; scoring matches them to the planted encoding directions by |cos|.
"""

from __future__ import annotations

import jax
import numpy as np

from conceptjax import cluster


def pattern_cav(x: np.ndarray, labels: np.ndarray, num_concepts: int) -> np.ndarray:
  """[C, D] mean(x | concept c) - mean(x | not c), an encoding-style CAV. x: [N, D]; labels: [N]."""
  x = np.asarray(x, np.float64)
  out = [x[labels == c].mean(0) - x[labels != c].mean(0) for c in range(num_concepts)]
  return np.stack(out).astype(np.float32)


def pca(x: np.ndarray, num: int) -> np.ndarray:
  """[num, D] leading principal directions (scikit-learn PCA)."""
  from sklearn.decomposition import PCA

  return PCA(n_components=num, random_state=0).fit(np.asarray(x, np.float64)).components_.astype(np.float32)


def fastica(x: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
  """[num, D] FastICA mixing columns (the directions sources are written along), scikit-learn."""
  from sklearn.decomposition import FastICA

  ica = FastICA(n_components=num, random_state=seed, whiten="unit-variance", max_iter=1000)
  ica.fit(np.asarray(x, np.float64))
  return ica.mixing_.T.astype(np.float32)


def nmf(x: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
  """[num, D] NMF components (scikit-learn) of x shifted to be non-negative."""
  from sklearn.decomposition import NMF

  x = np.asarray(x, np.float64)
  x = x - min(x.min(), 0.0)
  return (
    NMF(n_components=num, init="nndsvda", random_state=seed, max_iter=500)
    .fit(x)
    .components_.astype(np.float32)
  )


def kmeans_centroids(x: np.ndarray, num: int, seed: int = 0, restarts: int = 8) -> np.ndarray:
  """[num, D] spherical k-means centroids (conceptjax.cluster, cosine distance)."""
  res = cluster.spherical_kmeans(jax.random.key(seed), np.asarray(x, np.float32), num, restarts=restarts)
  return np.asarray(res.centroids)


def oracle_signals(x: np.ndarray, labels: np.ndarray, decoding: np.ndarray) -> np.ndarray:
  """[C, D] the signal-vector formula with the true decoding directions and true positives (calibration)."""
  from conceptjax.directions._signal import signal_vectors

  pos = np.asarray(labels)[:, None] == np.arange(decoding.shape[0])[None, :]
  return np.asarray(signal_vectors(decoding, np.asarray(x), pos))
