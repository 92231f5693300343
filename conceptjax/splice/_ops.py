"""SpLiCE operations: decompose, recompose, cosine, intervene, zero-shot classification.

Image side (docs/splice.md): ``z = normalize(e)``, ``z_c = normalize(z - mu)``; solve
``min_{w >= 0} ||w C - z_c||^2 + lam ||w||_1`` with the sparse core; recompose
``z_hat = normalize(normalize(w C) + mu)`` (the scale of ``w`` does not matter; ``l0 = 0`` gives
``mu / |mu|``).

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024, Eq. 1-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import parallel
from conceptjax.errors import check
from conceptjax.sparse.synthetic import normalize_rows
from conceptjax.splice._dictionary import ConceptDictionary, check_embeddings


def center(embeddings: jax.Array, mean: jax.Array) -> jax.Array:
  """``normalize(normalize(e) - mu)`` [B, d]: the vector the decomposition approximates."""
  return normalize_rows(normalize_rows(embeddings) - mean)


def decompose(
  dictionary: ConceptDictionary,
  mean: Any,
  embeddings: Any,
  l1_penalty: float = 0.25,
  *,
  solver: str = "auto",
  target_l0: int | None = None,
  tol: float = 1e-5,
  max_active: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> Any:
  """Sparse non-negative concept weights of a batch of embeddings.

  Args:
    dictionary: the concept dictionary (``C`` [c, d]).
    mean: [d] the image mean ``mu`` (or the text mean for text embeddings).
    embeddings: [B, d] raw CLIP embeddings (any norm; finite, no zero rows).
    l1_penalty: lam (ignored by the solver's target-l0 mode, which searches lam per row).
    solver, target_l0, tol, max_active: passed to ``conceptjax.sparse.nonneg_lasso``.
    mesh: device mesh for the solver (default: all devices).

  Returns:
    ``conceptjax.sparse.NonnegLassoResult``: indices/values [B, k] (padded with -1 / 0), objective,
    kkt_violation, converged, l0 [B].

  Raises:
    InputError: NaN/Inf or zero-norm rows, width mismatch, negative penalty.
  """
  from conceptjax import sparse

  check(l1_penalty >= 0, f"l1_penalty must be >= 0, got {l1_penalty}")
  z = check_embeddings(embeddings, dictionary.dim)
  mean = jnp.asarray(check_embeddings(np.reshape(mean, (1, -1)), dictionary.dim, "mean")[0])
  zc = _center_jit(jnp.asarray(z), mean)
  return sparse.nonneg_lasso(
    jnp.asarray(dictionary.matrix),
    zc,
    l1_penalty,
    solver=solver,
    target_l0=target_l0,
    tol=tol,
    max_active=max_active,
    mesh=mesh,
  )


_center_jit = jax.jit(center)


@jax.jit
def recompose_dense(matrix: jax.Array, mean: jax.Array, weights: jax.Array) -> jax.Array:
  """``normalize(normalize(w C) + mu)`` for dense weights [B, c] -> [B, d]."""
  return normalize_rows(normalize_rows(weights @ matrix) + mean)


@jax.jit
def recompose(matrix: jax.Array, mean: jax.Array, indices: jax.Array, values: jax.Array) -> jax.Array:
  """``normalize(normalize(w C) + mu)`` for sparse weights.

  Args:
    matrix: [c, d] dictionary ``C``.
    mean: [d] ``mu``.
    indices: [B, k] int concept indices (-1 = unused slot).
    values: [B, k] weights (0 in unused slots).

  Returns:
    [B, d] unit-norm recomposed embeddings.
  """
  atoms = matrix[jnp.maximum(indices, 0)]  # [B, k, d]
  v = jnp.where(indices >= 0, values, 0.0)
  return normalize_rows(normalize_rows(jnp.einsum("bk,bkd->bd", v, atoms)) + mean)


@jax.jit
def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of [B, d] and [B, d] -> [B]."""
  return jnp.sum(normalize_rows(a) * normalize_rows(b), axis=-1)


def remove_concepts(indices: jax.Array, values: jax.Array, remove: Sequence[int]) -> jax.Array:
  """Values with the weights of the concepts in ``remove`` set to 0 (all other slots untouched).

  Args:
    indices: [B, k] concept indices.
    values: [B, k] weights.
    remove: concept indices to zero.

  Returns:
    [B, k] values.
  """
  hit = jnp.isin(indices, jnp.asarray(list(remove), dtype=jnp.asarray(indices).dtype))
  return jnp.where(hit, 0.0, values)


def intervene(
  dictionary: ConceptDictionary,
  mean: Any,
  indices: Any,
  values: Any,
  remove: Sequence[str] | Sequence[int],
) -> tuple[jax.Array, jax.Array]:
  """Zeroes the named concepts and recomposes (the SpLiCE intervention).

  Args:
    dictionary: the dictionary the codes were computed with.
    mean: [d] ``mu``.
    indices, values: [B, k] sparse codes.
    remove: concept names (or indices) to remove.

  Returns:
    (values [B, k] with the removed concepts zeroed, recomposed embeddings [B, d]).
  """
  ids = [r for r in remove if not isinstance(r, str)] + dictionary.index(
    r for r in remove if isinstance(r, str)
  )
  new_values = remove_concepts(jnp.asarray(indices), jnp.asarray(values), ids)
  return new_values, recompose(
    jnp.asarray(dictionary.matrix), jnp.asarray(mean), jnp.asarray(indices), new_values
  )


@jax.jit
def _classify(image_embeddings: jax.Array, class_embeddings: jax.Array) -> jax.Array:
  return jnp.argmax(normalize_rows(image_embeddings) @ normalize_rows(class_embeddings).T, axis=-1)


def classify(
  image_embeddings: Any, class_embeddings: Any, *, mesh: jax.sharding.Mesh | None = None
) -> np.ndarray:
  """Zero-shot predictions: the class whose text embedding has the largest cosine with each image.

  Args:
    image_embeddings: [N, d] (dense or recomposed).
    class_embeddings: [K, d] text embeddings of the class prompts.

  Returns:
    int [N] predicted class indices.
  """
  out = parallel.map_batched(
    _classify, (jnp.asarray(image_embeddings),), (jnp.asarray(class_embeddings),), mesh=mesh
  )
  return np.asarray(out)


def class_prompts(class_names: Sequence[str], template: str = "a photo of a {}") -> list[str]:
  """Prompts from class names (``template`` holds one ``{}``)."""
  check(template.count("{}") == 1, f"template {template!r} must contain exactly one {{}}")
  return [template.format(n) for n in class_names]
