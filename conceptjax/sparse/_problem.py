"""Problem and result types of the batched non-negative lasso, and the pieces every solver shares.

Per row ``b`` of a batch: ``min_{w >= 0} ||w C - z_b||^2 + lam_b ||w||_1`` with ``C`` the [c, d] dictionary
(concepts as rows) and ``z_b`` the [d] embedding (SpLiCE's convention: no 1/2 factor). With
``g = 2 (w C - z) C^T + lam`` the optimality (KKT) conditions are ``w >= 0``, ``g >= 0`` and ``g_j = 0``
where ``w_j > 0``; every solver reports the largest violation::

  kkt_violation = max( max_j relu(-g_j), max_{j: w_j > 0} |g_j| )

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024, Eq. 2.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.loop import fixed_point_loop

PAD_INDEX = -1  # index stored in the unused slots of ``NonnegLassoResult.indices`` (their value is 0)
HIGHEST = jax.lax.Precision.HIGHEST  # full float32 products on accelerators (TF32 would spoil the KKT check)


def top_k(x: jax.Array, k: int, block: int = 32) -> tuple[jax.Array, jax.Array]:
  """``jax.lax.top_k`` over the last axis of [B, n] ``x``: the same values, and indices of those values
  (which index of several equal ones may differ).

  On CPU in two rounds where ``n`` is large: the maximum of each block of ``block`` entries, the ``k``
  blocks with the largest maxima (they hold the ``k`` largest entries: a block without any of them has a
  maximum below all of them), then ``top_k`` over those ``k * block`` entries. XLA's CPU ``top_k`` visits
  entries one by one on one core where a block maximum is one vectorised pass: on the scores of the
  benchmark problems (k=49, one thread's rows) 4.6 -> 3.9 ms on [128, 10,000] and 46 -> 41-43 ms on
  [512, 37,445] (``python -m benchmarks.sparse_cputime --preset main --problem b --top-k``; ``--problem
  c``). Elsewhere, or with fewer than ``4 k`` blocks, one ``top_k``.
  """
  n = x.shape[-1]
  blocks = -(-n // block)
  if blocks < 4 * k:
    return jax.lax.top_k(x, k)

  def two_rounds(x):
    padded = jnp.pad(x, ((0, 0), (0, blocks * block - n)), constant_values=-jnp.inf)
    _, best = jax.lax.top_k(jnp.max(padded.reshape(-1, blocks, block), axis=-1), k)  # [B, k] blocks
    entries = (best[:, :, None] * block + jnp.arange(block)).reshape(x.shape[0], k * block)
    values, pos = jax.lax.top_k(jnp.take_along_axis(padded, entries, axis=-1), k)
    return values, jnp.take_along_axis(entries, pos, axis=-1)

  return jax.lax.platform_dependent(x, cpu=two_rounds, default=lambda x: tuple(jax.lax.top_k(x, k)))


class Problem(NamedTuple):
  """A batch of non-negative lasso problems sharing one dictionary (arrays only, so it can be vmapped).

  Attributes:
    dictionary: [c, d] concept rows ``C``.
    embeddings: [B, d] targets ``z``.
    l1_penalty: [B] penalty ``lam`` per row (>= 0).
  """

  dictionary: jax.Array
  embeddings: jax.Array
  l1_penalty: jax.Array


class NonnegLassoResult(NamedTuple):
  """Sparse solutions of a batch, fixed width ``k`` per row, with per-row certificates.

  Attributes:
    indices: [B, k] int32 concept indices, sorted by decreasing weight; unused slots hold ``PAD_INDEX``
      (-1) with value 0.
    values: [B, k] non-negative weights of ``indices``.
    objective: [B] ``||w C - z||^2 + lam ||w||_1`` at the returned ``w`` (the whole ``w``, see ``l0``).
    kkt_violation: [B] largest violation of the optimality conditions (module docstring); for OMP, of the
      non-negative least-squares conditions on the selected atoms.
    converged: [B] bool, whether the row reached the tolerance (for target-l0: also l0 within 1 of k).
    iterations: [B] int32 iterations of the solver's main loop (outer iterations for the working set,
      bisection steps for target-l0).
    l1_penalty: [B] the penalty solved for (the one chosen per row in target-l0 mode; 0 for OMP).
    l0: [B] int32 number of positive weights. Dense solvers may find more than ``k``; then only the ``k``
      largest are kept in ``indices``/``values`` and ``l0 > k`` shows it.
    num_concepts: c, the dictionary size (for ``to_dense``).
  """

  indices: jax.Array
  values: jax.Array
  objective: jax.Array
  kkt_violation: jax.Array
  converged: jax.Array
  iterations: jax.Array
  l1_penalty: jax.Array
  l0: jax.Array
  num_concepts: int

  def to_dense(self, num_concepts: int | None = None) -> jax.Array:
    """[B, c] dense weights (pass ``num_concepts`` when calling under jit)."""
    c = operator.index(int(self.num_concepts if num_concepts is None else num_concepts))
    return scatter_dense(self.indices, self.values, c)


def scatter_dense(indices: jax.Array, values: jax.Array, c: int) -> jax.Array:
  """[B, c] dense matrix from [B, k] ``(indices, values)``; ``PAD_INDEX`` slots are dropped."""
  b = indices.shape[0]
  safe = jnp.where(indices < 0, c, indices)  # out of bounds -> dropped
  return jnp.zeros((b, c), values.dtype).at[jnp.arange(b)[:, None], safe].add(values, mode="drop")


SCREEN_PRECISIONS = ("highest", "default", "bfloat16")


def full_gradient(problem: Problem, residual: jax.Array, precision: str = "highest") -> jax.Array:
  """[B, c] gradient ``2 r C^T + lam`` from the residual ``r = w C - z`` [B, d] (one full product).

  ``precision``: ``"highest"`` (float32 products, HIGHEST), ``"default"`` (the backend's default: TF32 on
  NVIDIA GPUs, one bf16 pass on TPUs, float32 on CPUs) or ``"bfloat16"`` (bf16 inputs, float32
  accumulation). The last two are for screening only: their error is bounded by ``screen_error``."""
  c = problem.dictionary
  if precision == "bfloat16":
    prod = jnp.matmul(
      residual.astype(jnp.bfloat16), c.T.astype(jnp.bfloat16), preferred_element_type=residual.dtype
    )
  else:
    prod = jnp.matmul(residual, c.T, precision=HIGHEST if precision == "highest" else None)
  return 2.0 * prod + problem.l1_penalty[:, None]


def screen_error(precision: str, dim: int) -> float:
  """``eta``: with ``g_lo = full_gradient(.., precision)``, ``|g_lo_j - g_j| <= eta ||r|| ||C_j||``.

  The error argument: a product whose inputs are rounded to a format of unit roundoff ``u`` and
  accumulated in float32 over ``d`` terms computes ``r . C_j`` within ``(2 u + u^2 + d 2^-24) sum_i |r_i
  C_ji|`` (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., Sec. 3.1), and ``sum_i |r_i
  C_ji| <= ||r|| ||C_j||`` (Cauchy-Schwarz). ``u = 2^-8`` (bfloat16, the coarsest format a DEFAULT
  product may use: TPUs; TF32 on GPUs is ``2^-11``), the factor 2 of the gradient, and a factor 2 of
  margin for the float32 sum with ``lam``. 0 for ``"highest"``.
  """
  if precision == "highest":
    return 0.0
  u = 2.0**-8
  return 2.0 * 2.0 * (2 * u + u * u + dim * 2.0**-24)


def kkt_from_gradient(gradient: jax.Array, active: jax.Array) -> jax.Array:
  """[B] ``max(max_j relu(-g_j), max_{active} |g_j|)`` for a gradient and an active mask of the same shape."""
  off = jnp.max(jnp.maximum(-gradient, 0.0), axis=-1)
  on = jnp.max(jnp.where(active, jnp.abs(gradient), 0.0), axis=-1)
  return jnp.maximum(off, on)


def dense_residual(problem: Problem, w: jax.Array) -> jax.Array:
  """[B, d] residual ``w C - z`` for dense weights [B, c]."""
  return jnp.matmul(w, problem.dictionary, precision=HIGHEST) - problem.embeddings


def dense_kkt(problem: Problem, w: jax.Array) -> jax.Array:
  """[B] KKT violation of dense weights [B, c] (two full products)."""
  return kkt_from_gradient(full_gradient(problem, dense_residual(problem, w)), w > 0)


def objective_from_residual(problem: Problem, residual: jax.Array, l1_norm: jax.Array) -> jax.Array:
  """[B] ``||r||^2 + lam * l1_norm``."""
  return jnp.sum(residual * residual, axis=-1) + problem.l1_penalty * l1_norm


def sparse_residual(problem: Problem, indices: jax.Array, values: jax.Array) -> jax.Array:
  """[B, d] residual ``w C - z`` for sparse weights ([B, k] indices, ``PAD_INDEX`` allowed, and values)."""
  atoms = problem.dictionary[jnp.maximum(indices, 0)]  # [B, k, d]
  return jnp.einsum("bk,bkd->bd", values, atoms, precision=HIGHEST) - problem.embeddings


def sort_slots(indices: jax.Array, values: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  """Keeps the ``width`` largest positive values per row, sorted descending; the rest padded.

  Args:
    indices: [B, m] concept indices.
    values: [B, m] weights (zeros are treated as unused).
    width: k, output width (where k > m, the extra slots are padding).

  Returns:
    ([B, k] int32 indices with ``PAD_INDEX`` where the value is 0, [B, k] values).
  """
  extra = ((0, 0), (0, max(width - values.shape[-1], 0)))
  indices, values = jnp.pad(indices, extra), jnp.pad(values, extra)
  top, pos = jax.lax.top_k(values, width)
  idx = jnp.take_along_axis(indices, pos, axis=-1)
  keep = top > 0
  return jnp.where(keep, idx, PAD_INDEX).astype(jnp.int32), jnp.where(keep, top, 0.0)


def sparse_result(
  problem: Problem,
  indices: jax.Array,
  values: jax.Array,
  *,
  kkt_violation: jax.Array,
  converged: jax.Array,
  iterations: jax.Array,
  width: int,
  objective: jax.Array | None = None,
) -> NonnegLassoResult:
  """Builds the result from [B, m] slot weights (m >= width) whose non-zeros are the whole solution.

  The objective is recomputed (one gather of the atoms) unless given.
  """
  if objective is None:
    residual = sparse_residual(problem, indices, values)
    objective = objective_from_residual(problem, residual, jnp.sum(values, axis=-1))
  idx, val = sort_slots(indices, values, width)
  return NonnegLassoResult(
    indices=idx,
    values=val,
    objective=objective,
    kkt_violation=kkt_violation,
    converged=converged,
    iterations=iterations.astype(jnp.int32),
    l1_penalty=problem.l1_penalty,
    l0=jnp.sum(values > 0, axis=-1).astype(jnp.int32),
    num_concepts=problem.dictionary.shape[0],
  )


def dense_result(
  problem: Problem, w: jax.Array, *, converged: jax.Array, iterations: jax.Array, width: int
) -> NonnegLassoResult:
  """Builds the result from dense weights [B, c] (objective and KKT of the whole ``w``)."""
  residual = dense_residual(problem, w)
  b, c = w.shape
  return sparse_result(
    problem,
    jnp.broadcast_to(jnp.arange(c, dtype=jnp.int32), (b, c)),
    w,
    kkt_violation=kkt_from_gradient(full_gradient(problem, residual), w > 0),
    converged=converged,
    iterations=iterations,
    width=width,
    objective=objective_from_residual(problem, residual, jnp.sum(w, axis=-1)),
  )


def solve_dense(
  problem: Problem,
  step: Callable[[Any, jax.Array], Any],
  init: Any,
  weights: Callable[[Any], jax.Array],
  config: Any,
) -> NonnegLassoResult:
  """Runs a dense iterative solver in the shared loop, stopping rows on the KKT violation of ``weights``.

  Args:
    problem: the batch.
    step: ``(state, iteration) -> state``.
    init: initial state (leaves with leading axis B are per row).
    weights: ``state -> [B, c]`` non-negative iterate whose KKT violation is checked.
    config: has ``tol``, ``max_iter``, ``check_every`` and ``max_active``.
  """
  state, info = fixed_point_loop(
    step,
    init,
    lambda s: dense_kkt(problem, weights(s)),
    tol=config.tol,
    max_iter=config.max_iter,
    check_every=config.check_every,
  )
  width = min(config.max_active, problem.dictionary.shape[0])
  return dense_result(
    problem, weights(state), converged=info.converged, iterations=info.iterations, width=width
  )
