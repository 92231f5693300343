"""Per-class concept statistics over sparse codes: the SpLiCE concept histograms and a separation test.

``class_histograms`` gives, per class, the mean weight of every concept over the class's images (the
paper's concept histograms, Sec. 5.2, which expose e.g. "water" in the landbird/waterbird classes) and the
fraction of images where the concept is active. ``class_separation`` measures how strongly each concept
separates a class from the rest: the difference of mean weights (class minus rest) with a one-sided
permutation p-value (labels shuffled, ``(1 + #{perm >= observed}) / (1 + P)``).

Everything works from the (indices, values) codes directly: no dense [N, c] matrix is formed.

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024, Sec. 5.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.errors import check


class ClassHistograms(NamedTuple):
  """Per-class concept statistics.

  Attributes:
    mean_weight: [K, c] mean weight of each concept over the class's images (0 where absent).
    frequency: [K, c] fraction of the class's images whose code contains the concept.
    counts: [K] images per class.
  """

  mean_weight: np.ndarray
  frequency: np.ndarray
  counts: np.ndarray


class Separation(NamedTuple):
  """How strongly each concept separates each class from the rest.

  Attributes:
    difference: [K, c] mean weight in the class minus mean weight in all other images.
    p_value: [K, c] one-sided permutation p-value of ``difference`` (small: the concept is specific to the
      class), in ``[1 / (P + 1), 1]``.
    num_permutations: P.
  """

  difference: np.ndarray
  p_value: np.ndarray
  num_permutations: int


def _class_sums(
  indices: jax.Array, values: jax.Array, labels: jax.Array, num_classes: int, c: int
) -> jax.Array:
  """[K, c] sum of weights per class, scattered from [N, k] codes (index -1 slots dropped)."""
  safe = jnp.where(indices < 0, c, indices)
  rows = jnp.broadcast_to(labels[:, None], indices.shape)
  return jnp.zeros((num_classes, c), values.dtype).at[rows, safe].add(values, mode="drop")


def _validate(indices, values, labels, num_classes: int, num_concepts: int):
  indices, values, labels = np.asarray(indices), np.asarray(values, np.float32), np.asarray(labels)
  check(
    indices.shape == values.shape and indices.ndim == 2,
    f"codes: indices {indices.shape} vs values {values.shape}",
  )
  check(
    labels.shape == (indices.shape[0],), f"labels have shape {labels.shape}; expected [{indices.shape[0]}]"
  )
  check(labels.size > 0, "no codes given")
  check(0 <= labels.min() and labels.max() < num_classes, f"labels must lie in [0, {num_classes})")
  check(indices.max(initial=-1) < num_concepts, f"a concept index is >= num_concepts={num_concepts}")
  return jnp.asarray(indices, jnp.int32), jnp.asarray(values), jnp.asarray(labels, jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_concepts"))
def _histograms(indices, values, labels, num_classes: int, num_concepts: int):
  sums = _class_sums(indices, values, labels, num_classes, num_concepts)
  active = _class_sums(indices, (values > 0).astype(values.dtype), labels, num_classes, num_concepts)
  counts = jnp.zeros((num_classes,), jnp.int32).at[labels].add(1)
  denom = jnp.maximum(counts, 1)[:, None].astype(values.dtype)
  return sums / denom, active / denom, counts


def class_histograms(indices, values, labels, num_classes: int, num_concepts: int) -> ClassHistograms:
  """Per-class mean concept weights and activation frequencies.

  Args:
    indices: [N, k] int concept indices (-1 = unused slot).
    values: [N, k] weights.
    labels: [N] int class labels in [0, K).
    num_classes: K.
    num_concepts: c.

  Returns:
    ClassHistograms with [K, c] arrays.
  """
  i, v, y = _validate(indices, values, labels, num_classes, num_concepts)
  mean, freq, counts = _histograms(i, v, y, num_classes, num_concepts)
  return ClassHistograms(np.asarray(mean), np.asarray(freq), np.asarray(counts))


def _difference(sums: jax.Array, total: jax.Array, counts: jax.Array, n: int) -> jax.Array:
  n_in = jnp.maximum(counts, 1)[:, None].astype(sums.dtype)
  n_out = jnp.maximum(n - counts, 1)[:, None].astype(sums.dtype)
  return sums / n_in - (total[None] - sums) / n_out


@functools.partial(jax.jit, static_argnames=("num_classes", "num_concepts", "num_permutations"))
def _separation(key, indices, values, labels, num_classes: int, num_concepts: int, num_permutations: int):
  n = labels.shape[0]
  counts = jnp.zeros((num_classes,), jnp.int32).at[labels].add(1)
  sums = _class_sums(indices, values, labels, num_classes, num_concepts)
  total = jnp.sum(sums, axis=0)
  observed = _difference(sums, total, counts, n)

  def body(p, exceed):
    perm = jax.random.permutation(jax.random.fold_in(key, p), labels)
    diff = _difference(_class_sums(indices, values, perm, num_classes, num_concepts), total, counts, n)
    return exceed + (diff >= observed - 1e-7).astype(jnp.int32)

  exceed = jax.lax.fori_loop(0, num_permutations, body, jnp.zeros(observed.shape, jnp.int32))
  return observed, (1.0 + exceed) / (1.0 + num_permutations)


def permuted_labels(key: jax.Array, labels, p: int) -> np.ndarray:
  """The labels of permutation ``p`` of ``class_separation`` (for checking it independently)."""
  return np.asarray(jax.random.permutation(jax.random.fold_in(key, p), jnp.asarray(labels, jnp.int32)))


def class_separation(
  key: jax.Array,
  indices,
  values,
  labels,
  num_classes: int,
  num_concepts: int,
  num_permutations: int = 1000,
) -> Separation:
  """Mean-weight difference (class minus rest) per concept with a one-sided permutation p-value.

  Args:
    key: PRNG key for the permutations (permutation ``p`` uses ``fold_in(key, p)``).
    indices, values: [N, k] sparse codes.
    labels: [N] int labels in [0, K).
    num_classes: K.
    num_concepts: c.
    num_permutations: P label shuffles (the p-value resolution is 1 / (P + 1)).

  Returns:
    Separation with [K, c] difference and p_value.
  """
  check(num_permutations >= 1, f"num_permutations must be >= 1, got {num_permutations}")
  i, v, y = _validate(indices, values, labels, num_classes, num_concepts)
  diff, p = _separation(key, i, v, y, num_classes, num_concepts, num_permutations)
  return Separation(np.asarray(diff), np.asarray(p), num_permutations)


def top_concepts(scores: np.ndarray, concepts, k: int = 10) -> list[list[tuple[str, float]]]:
  """Per row of ``scores`` [K, c] the k highest-scoring (concept, score) pairs with a positive score."""
  out = []
  for row in np.asarray(scores):
    order = np.argsort(-row, kind="stable")[:k]
    out.append([(concepts[j], float(row[j])) for j in order if row[j] > 0])
  return out
