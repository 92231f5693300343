"""Scoring against planted ground truth: Hungarian matching, |cos|, detector IoU, signal-value RMSE.

Matching uses ``scipy.optimize.linear_sum_assignment`` (maximising total similarity), so each true concept is
paired with at most one estimate. Runs on host numpy (evaluation only).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment


class Match(NamedTuple):
  """A one-to-one matching of true items (rows) to estimates (columns)."""

  true_index: np.ndarray  # [m]
  est_index: np.ndarray  # [m]
  score: np.ndarray  # [m] similarity of each matched pair

  @property
  def mean(self) -> float:
    return float(np.mean(self.score))


def hungarian(similarity: np.ndarray) -> Match:
  """Maximum-total-similarity matching of a [n_true, n_est] similarity matrix."""
  sim = np.asarray(similarity, np.float64)
  r, c = linear_sum_assignment(sim, maximize=True)
  return Match(true_index=r, est_index=c, score=sim[r, c])


def abs_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[n, m] |cos| between rows of a [n, D] and b [m, D]."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-300)
  b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-300)
  return np.abs(a @ b.T)


def match_directions(true: np.ndarray, est: np.ndarray) -> Match:
  """Hungarian matching of true directions [C, D] to estimates [I, D] by |cos|."""
  return hungarian(abs_cos(true, est))


def iou_matrix(true_masks: np.ndarray, est_masks: np.ndarray) -> np.ndarray:
  """[C, I] IoU between boolean masks true [N, C] and est [N, I] (columns are sets of samples)."""
  t = np.asarray(true_masks, np.float64)
  e = np.asarray(est_masks, np.float64)
  inter = t.T @ e
  union = t.sum(0)[:, None] + e.sum(0)[None, :] - inter
  return inter / np.maximum(union, 1e-12)


def match_detectors(labels: np.ndarray, positives: np.ndarray, num_concepts: int) -> Match:
  """Hungarian matching of concepts to detectors by IoU. labels: [N] ints; positives: [N, I] bool."""
  onehot = np.asarray(labels)[:, None] == np.arange(num_concepts)[None, :]
  return hungarian(iou_matrix(onehot, positives))


def signal_value_rmse(true_values: np.ndarray, est_values: np.ndarray, match: Match) -> float:
  """RMSE between centred true concept values [N, C] and estimated signal values [N, I] of matched pairs."""
  t = np.asarray(true_values, np.float64)[:, match.true_index]
  e = np.asarray(est_values, np.float64)[:, match.est_index]
  t = t - t.mean(0)
  return float(np.sqrt(np.mean((t - e) ** 2)))
