"""CEIR clustering scores against brute-force and closed-form oracles."""

import itertools

import numpy as np
import pytest
from scipy.special import comb

from conceptjax import ceir
from conceptjax.errors import InputError


def _acc_bruteforce(y, p):
  classes, clusters = np.unique(y), np.unique(p)
  best = 0
  # every injective map from clusters to classes (or classes to clusters when there are more classes)
  if clusters.size <= classes.size:
    for perm in itertools.permutations(classes, clusters.size):
      mapping = dict(zip(clusters, perm, strict=True))
      best = max(best, sum(mapping[a] == b for a, b in zip(p, y, strict=True)))
  else:
    for perm in itertools.permutations(clusters, classes.size):
      mapping = dict(zip(perm, classes, strict=True))
      best = max(best, sum(mapping.get(a) == b for a, b in zip(p, y, strict=True)))
  return best / len(y)


def _nmi_numpy(y, p):
  _, y = np.unique(y, return_inverse=True)
  _, p = np.unique(p, return_inverse=True)
  joint = np.zeros((y.max() + 1, p.max() + 1))
  np.add.at(joint, (y, p), 1)
  joint /= joint.sum()
  py, pp = joint.sum(1), joint.sum(0)
  nz = joint > 0
  mi = (joint[nz] * np.log(joint[nz] / np.outer(py, pp)[nz])).sum()
  h = lambda q: -(q[q > 0] * np.log(q[q > 0])).sum()
  return mi / ((h(py) + h(pp)) / 2)


def _ari_numpy(y, p):
  _, y = np.unique(y, return_inverse=True)
  _, p = np.unique(p, return_inverse=True)
  table = np.zeros((y.max() + 1, p.max() + 1))
  np.add.at(table, (y, p), 1)
  n = len(y)
  s_ij = comb(table, 2).sum()
  s_a, s_b = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum()
  expected = s_a * s_b / comb(n, 2)
  return (s_ij - expected) / ((s_a + s_b) / 2 - expected)


@pytest.mark.parametrize("k_true,k_pred,seed", [(3, 3, 0), (4, 4, 1), (3, 5, 2), (5, 3, 3), (2, 2, 4)])
def test_scores_match_oracles(k_true, k_pred, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k_true, 60) * 7 + 1  # arbitrary label values
  p = np.where(rng.random(60) < 0.6, (y * 3) % (k_pred + 11), rng.integers(0, k_pred, 60))
  p = np.unique(p, return_inverse=True)[1]
  s = ceir.cluster_scores(y, p)
  assert s.acc == pytest.approx(_acc_bruteforce(y, p), abs=1e-12)
  assert s.nmi == pytest.approx(_nmi_numpy(y, p), abs=1e-10)
  assert s.ari == pytest.approx(_ari_numpy(y, p), abs=1e-10)


def test_perfect_relabelled_clustering_scores_one_and_errors():
  y = np.repeat([0, 1, 2], 10)
  s = ceir.cluster_scores(y, (y + 1) % 3)
  assert s == pytest.approx((1.0, 1.0, 1.0))
  with pytest.raises(InputError, match="label length mismatch"):
    ceir.cluster_scores(y, y[:5])


def test_kmeans_recovers_separated_blobs():
  rng = np.random.default_rng(5)
  centres = np.eye(4) * 20
  y = rng.integers(0, 4, 200)
  x = centres[y] + rng.normal(size=(200, 4))
  assert ceir.cluster_accuracy(y, ceir.kmeans(x, 4, seed=0)) == 1.0
