"""Clustering of the latent and the three standard clustering scores (ACC, NMI, ARI).

References:
  Cui et al., "CEIR", 2023, Sec. 4 (k-means with k = number of classes on the latent; ACC, NMI, ARI).
  Kuhn, "The Hungarian method for the assignment problem", 1955 (ACC's best cluster-to-class matching).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from conceptjax.errors import check


class ClusterScores(NamedTuple):
  acc: float  # best one-to-one matching accuracy
  nmi: float  # normalised mutual information (arithmetic mean normalisation)
  ari: float  # adjusted Rand index


def _check_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
  y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
  check(
    y_true.shape == y_pred.shape, f"label length mismatch: {y_true.shape[0]} true vs {y_pred.shape[0]} pred"
  )
  check(y_true.size > 0, "no labels to score")
  return y_true, y_pred


def cluster_accuracy(y_true, y_pred) -> float:
  """Clustering accuracy: the best one-to-one map of clusters to classes (Hungarian), as a share of rows.

  Args:
    y_true: [N] class ids (any integers); y_pred: [N] cluster ids (any integers).
  """
  y_true, y_pred = _check_labels(y_true, y_pred)
  classes, t = np.unique(y_true, return_inverse=True)
  clusters, p = np.unique(y_pred, return_inverse=True)
  counts = np.zeros((clusters.size, classes.size), np.int64)
  np.add.at(counts, (p, t), 1)
  rows, cols = linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / y_true.size)


def cluster_scores(y_true, y_pred) -> ClusterScores:
  """ACC (Hungarian), NMI (arithmetic) and ARI of a clustering against the true classes."""
  y_true, y_pred = _check_labels(y_true, y_pred)
  return ClusterScores(
    acc=cluster_accuracy(y_true, y_pred),
    nmi=float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic")),
    ari=float(adjusted_rand_score(y_true, y_pred)),
  )


def kmeans(x, k: int, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
  """k-means (scikit-learn, k-means++ with ``n_init`` restarts) on rows of ``x`` [N, d]; returns [N] ids."""
  x = np.asarray(x, np.float64)
  check(x.ndim == 2 and x.shape[0] >= k, f"k-means needs [N >= k={k}, d] rows, got shape {x.shape}")
  return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
