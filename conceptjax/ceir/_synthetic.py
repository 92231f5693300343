"""Synthetic concept data with planted ground truth (for tests, the benchmark and the offline experiment).

Backbone features come from ``num_clusters`` Gaussian clusters; teacher similarities have three kinds of
concept: *true* ones (a linear function of the features plus small noise: the projection can learn them),
*dead* ones (similarities that never reach filter A's cutoff) and *noise* ones (high similarities unrelated
to the features: they pass filter A and must fail filter B).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PlantedConcepts(NamedTuple):
  features: np.ndarray  # [N, d] float32 backbone features
  teacher: np.ndarray  # [N, c] float32 teacher similarities P
  labels: np.ndarray  # [N] int cluster ids
  kind: np.ndarray  # [c] int: 0 true, 1 dead, 2 noise


def planted_concepts(
  n: int,
  *,
  feature_dim: int = 32,
  num_true: int = 20,
  num_dead: int = 5,
  num_noise: int = 5,
  num_clusters: int = 4,
  cluster_scale: float = 3.0,
  seed: int = 0,
) -> PlantedConcepts:
  """Draws a planted data set; concept columns are shuffled (``kind`` says which is which).

  Args:
    n: rows.
    feature_dim: backbone feature width d.
    num_true, num_dead, num_noise: concepts of each kind.
    num_clusters: Gaussian clusters in feature space (the ground-truth classes).
    cluster_scale: distance scale between cluster centres (unit within-cluster spread).
    seed: numpy seed.
  """
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_clusters, feature_dim)) * cluster_scale
  labels = rng.integers(0, num_clusters, n)
  x = centres[labels] + rng.normal(size=(n, feature_dim))
  a = rng.normal(size=(feature_dim, num_true)) / np.sqrt(feature_dim)
  s = x @ a
  s = (s - s.mean(0)) / s.std(0)
  true = 0.25 + 0.03 * s + 0.002 * rng.normal(size=s.shape)
  dead = 0.1 + 0.01 * rng.normal(size=(n, num_dead))
  noise = 0.28 + 0.02 * rng.normal(size=(n, num_noise))
  p = np.concatenate([true, dead, noise], axis=1)
  kind = np.repeat([0, 1, 2], [num_true, num_dead, num_noise])
  order = rng.permutation(p.shape[1])
  return PlantedConcepts(x.astype(np.float32), p[:, order].astype(np.float32), labels, kind[order])


class PlantedAttributes(NamedTuple):
  features: np.ndarray  # [N, d] float32 backbone features
  teacher: np.ndarray  # [N, c] float32 teacher similarities P
  labels: np.ndarray  # [N] int class ids
  present: np.ndarray  # [N, c] bool: concept j is a true attribute of image i (False for dead/noise)
  kind: np.ndarray  # [c] int: 0 class concept, 1 nuisance attribute, 2 dead, 3 noise


def planted_attributes(
  n: int,
  *,
  num_classes: int = 6,
  per_class: int = 2,
  num_nuisance: int = 13,
  num_dead: int = 5,
  num_noise: int = 10,
  feature_dim: int = 64,
  nuisance_prob: float = 0.3,
  feature_noise: float = 0.3,
  seed: int = 0,
) -> PlantedAttributes:
  """A ShapesWorld-like planted set: each image has one class (``per_class`` concepts name it) and
  independent nuisance attributes (like colour or background), each present with ``nuisance_prob``.

  Features are a random linear image of the attribute vector plus Gaussian noise; teacher similarities are
  0.22 + 0.06 * present plus small noise for class and nuisance concepts, and dead / noise concepts as in
  :func:`planted_concepts`. Columns keep the order class, nuisance, dead, noise.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n)
  cls = np.zeros((n, num_classes * per_class), bool)
  for j in range(per_class):
    cls[np.arange(n), labels * per_class + j] = True
  nuis = rng.random((n, num_nuisance)) < nuisance_prob
  attrs = np.concatenate([cls, nuis], axis=1)
  m = attrs.shape[1]
  mix = rng.normal(size=(m, feature_dim))
  x = attrs @ mix + feature_noise * rng.normal(size=(n, feature_dim))
  true = 0.22 + 0.06 * attrs + 0.005 * rng.normal(size=(n, m))
  dead = 0.1 + 0.01 * rng.normal(size=(n, num_dead))
  noise = 0.28 + 0.02 * rng.normal(size=(n, num_noise))
  p = np.concatenate([true, dead, noise], axis=1)
  present = np.concatenate([attrs, np.zeros((n, num_dead + num_noise), bool)], axis=1)
  kind = np.repeat([0, 1, 2, 3], [num_classes * per_class, num_nuisance, num_dead, num_noise])
  return PlantedAttributes(x.astype(np.float32), p.astype(np.float32), labels, present, kind)
