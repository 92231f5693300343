"""Synthetic sparse-recovery problems: dictionaries and embeddings with a known sparse non-negative truth.

Pure functions of an explicit PRNG key. They build the problems of the solver benchmark
(benchmarks/sparse_solvers.py) and of the solver tests:

* :func:`gaussian_dictionary`: unit-norm Gaussian rows (incoherent; the easy case).
* :func:`coherent_dictionary`: rows with a power-law spectrum, a common offset and families of
  near-duplicates (as in real vocabularies: "dog", "dogs", "puppy"), then SpLiCE's processing
  (:func:`center_normalize`). This is where iterative solvers slow down.
* :func:`sparse_embeddings`: embeddings ``z = normalize(normalize(w C) + noise)`` from a ground truth ``w``
  of ``min_atoms..max_atoms`` non-negative atoms per row.

The default dtype is JAX's default float (float32, or float64 when x64 is on); the same key gives different
numbers in float32 and float64.

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024,
  Sec. 3 (concept dictionary: normalise, subtract the mean concept, renormalise).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.errors import check

__all__ = [
  "SparseSample",
  "center_normalize",
  "coherent_dictionary",
  "gaussian_dictionary",
  "normalize_rows",
  "sparse_embeddings",
]


def _default_float(dtype):
  return jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)


def normalize_rows(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Scales every row of ``x`` [..., d] to unit L2 norm (rows of norm < eps are left ~zero)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def center_normalize(raw: jax.Array) -> jax.Array:
  """SpLiCE's dictionary processing: L2-normalise rows, subtract the mean row, L2-normalise again.

  Args:
    raw: [c, d] raw concept embeddings (any norms).

  Returns:
    [c, d] unit-norm, mean-centred concept rows.

  References:
    SpLiCE (Bhalla et al., 2024), Sec. 3; docs/splice.md, "The method".
  """
  rows = normalize_rows(raw)
  return normalize_rows(rows - jnp.mean(rows, axis=0, keepdims=True))


@functools.partial(jax.jit, static_argnames=("c", "d", "dtype"))
def gaussian_dictionary(key: jax.Array, c: int, d: int, dtype=None) -> jax.Array:
  """Unit-norm Gaussian dictionary.

  Args:
    key: PRNG key.
    c: number of concepts (rows).
    d: embedding width.
    dtype: float dtype (default: JAX's default float).

  Returns:
    [c, d] rows drawn i.i.d. from N(0, I) and scaled to unit norm.
  """
  return normalize_rows(jax.random.normal(key, (c, d), _default_float(dtype)))


@functools.partial(
  jax.jit, static_argnames=("c", "d", "spectrum_decay", "family_size", "duplicate_cos", "offset", "dtype")
)
def coherent_dictionary(
  key: jax.Array,
  c: int,
  d: int,
  *,
  spectrum_decay: float = 1.0,
  family_size: int = 4,
  duplicate_cos: float = 0.9,
  offset: float = 1.0,
  dtype=None,
) -> jax.Array:
  """A coherent, SpLiCE-processed dictionary: power-law spectrum, near-duplicate families, common offset.

  Every row is ``sqrt(rho) * f_j + sqrt(1 - rho) * e_i + offset * m`` where ``f_j`` is the (unit) centre of
  its family ``j`` (about ``family_size`` rows per family, assigned at random), ``e_i`` a (unit) private
  part, ``rho = duplicate_cos`` (so two members of a family have cosine ~``rho`` before the offset), and
  ``m`` a shared unit direction (CLIP text embeddings share a large common component). ``f_j`` and ``e_i``
  are Gaussian with covariance eigenvalues ``k^-spectrum_decay`` (k = 1..d) in a random orthonormal basis.
  The result is processed as SpLiCE does (:func:`center_normalize`), which removes the offset.

  Args:
    key: PRNG key.
    c: number of concepts (rows).
    d: embedding width.
    spectrum_decay: power-law exponent of the covariance spectrum (0 = isotropic).
    family_size: mean number of near-duplicates per family (1 = no families).
    duplicate_cos: cosine between the raw members of one family (0 = unrelated, 1 = exact duplicates).
    offset: norm of the common component relative to the unit rows (removed by the centring).
    dtype: float dtype (default: JAX's default float).

  Returns:
    [c, d] unit-norm, mean-centred rows.
  """
  dtype = _default_float(dtype)
  k_basis, k_fam, k_assign, k_own, k_mean = jax.random.split(key, 5)
  basis, _ = jnp.linalg.qr(jax.random.normal(k_basis, (d, d), dtype))  # [d, d] orthonormal
  scale = jnp.arange(1, d + 1, dtype=dtype) ** (-0.5 * spectrum_decay)  # [d] sqrt of the eigenvalues

  def draw(k, n):
    return normalize_rows((jax.random.normal(k, (n, d), dtype) * scale) @ basis.T)

  n_families = max(c // max(family_size, 1), 1)
  centres = draw(k_fam, n_families)  # [F, d]
  family = jax.random.randint(k_assign, (c,), 0, n_families)  # [c]
  own = draw(k_own, c)  # [c, d]
  mean_dir = normalize_rows(jax.random.normal(k_mean, (d,), dtype))  # [d]
  rho = duplicate_cos if family_size > 1 else 0.0
  raw = np.sqrt(rho) * centres[family] + np.sqrt(1.0 - rho) * own + offset * mean_dir
  return center_normalize(raw)


class SparseSample(NamedTuple):
  """Embeddings with their ground-truth sparse non-negative weights.

  Attributes:
    embeddings: [B, d] unit-norm embeddings ``normalize(values-weighted atoms + noise)``.
    indices: [B, K] int32 distinct atom indices per row (K = max_atoms); slots past ``n_atoms`` are padding
      with value 0.
    values: [B, K] non-negative weights, scaled so that ``to_dense(c) @ C`` is the noiseless part of
      ``embeddings``; 0 in padding slots.
    n_atoms: [B] int32 number of true atoms per row (min_atoms..max_atoms).
  """

  embeddings: jax.Array
  indices: jax.Array
  values: jax.Array
  n_atoms: jax.Array

  def to_dense(self, c: int) -> jax.Array:
    """[B, c] dense ground-truth weights."""
    b = self.indices.shape[0]
    dense = jnp.zeros((b, c), self.values.dtype)
    return dense.at[jnp.arange(b)[:, None], self.indices].set(self.values)


@functools.partial(jax.jit, static_argnames=("batch_size", "min_atoms", "max_atoms", "chunk"))
def sparse_embeddings(
  key: jax.Array,
  dictionary: jax.Array,
  batch_size: int,
  min_atoms: int = 10,
  max_atoms: int = 30,
  noise: float = 0.1,
  chunk: int = 128,
) -> SparseSample:
  """Embeddings with a sparse non-negative ground truth over ``dictionary``.

  Per row: ``k ~ U{min_atoms..max_atoms}`` distinct atoms chosen uniformly, weights ``~ U(0.1, 1)``; the
  signal ``w C`` is normalised, a random direction of norm ``noise`` (0.1 = 10% noise) is added, and the sum
  is normalised again. Atoms are drawn ``chunk`` rows at a time so memory stays ``O(chunk * c)``.

  Args:
    key: PRNG key.
    dictionary: [c, d] concept rows (c >= max_atoms).
    batch_size: B, number of embeddings.
    min_atoms: fewest true atoms per row (>= 1).
    max_atoms: most true atoms per row (K, the width of ``indices``).
    noise: norm of the noise added to the unit-norm signal.
    chunk: rows drawn at once when choosing atoms.

  Returns:
    :class:`SparseSample` with embeddings [B, d] in the dictionary's dtype.
  """
  c, _ = dictionary.shape
  check(
    1 <= min_atoms <= max_atoms <= c,
    f"sparse_embeddings: need 1 <= min_atoms <= max_atoms <= c, got {min_atoms}, {max_atoms}, c={c}",
  )
  dtype = dictionary.dtype
  k_idx, k_n, k_val, k_noise = jax.random.split(key, 4)

  # Distinct atoms per row: the top-K of i.i.d. uniforms is a uniform K-subset (Gumbel-top-k).
  row_keys = jax.random.split(k_idx, batch_size)
  pick = lambda k: jax.lax.top_k(jax.random.uniform(k, (c,)), max_atoms)[1]
  indices = jax.lax.map(pick, row_keys, batch_size=min(chunk, batch_size)).astype(jnp.int32)  # [B, K]
  n_atoms = jax.random.randint(k_n, (batch_size,), min_atoms, max_atoms + 1).astype(jnp.int32)  # [B]
  active = jnp.arange(max_atoms)[None, :] < n_atoms[:, None]  # [B, K]
  values = jnp.where(active, jax.random.uniform(k_val, (batch_size, max_atoms), dtype, 0.1, 1.0), 0.0)

  signal = jnp.einsum("bk,bkd->bd", values, dictionary[indices])  # [B, d]
  s = jnp.linalg.norm(signal, axis=-1, keepdims=True)  # [B, 1]
  z = signal / s + noise * normalize_rows(jax.random.normal(k_noise, signal.shape, dtype))
  t = jnp.linalg.norm(z, axis=-1, keepdims=True)  # [B, 1]
  return SparseSample(z / t, indices, values / (s * t), n_atoms)
