"""Non-negative orthogonal matching pursuit: a fixed number of atoms, no penalty.

Per row, ``n_atoms`` greedy steps: pick the concept most positively correlated with the residual (one full
product ``r C^T``), then refit non-negative least squares on all atoms picked so far (the small solver of
``_gram`` with ``lam = 0``, warm-started). A row stops early when no concept has a positive correlation.
Some refitted weights may be 0 (NNLS may drop an atom); ``l0`` counts the positive ones.

References:
  Bruckstein, Elad & Zibulevsky, "On the uniqueness of nonnegative sparse solutions to underdetermined
  systems of equations", IEEE Trans. Inf. Theory 54(11), 2008 (non-negative OMP).
  Pati, Rezaiifar & Krishnaprasad, "Orthogonal matching pursuit", Asilomar 1993.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.loop import fixed_point_loop
from conceptjax.sparse._gram import gram_qp, qp_kkt, solve_gram_qp
from conceptjax.sparse._problem import HIGHEST, PAD_INDEX, NonnegLassoResult, Problem, sparse_result


@dataclasses.dataclass(frozen=True)
class OmpConfig:
  """Static settings of :func:`omp`.

  Attributes:
    n_atoms: atoms to select per row (the target l0).
    nnls_max_iter: cap on the small NNLS solver's active-set steps per refit.
    serial_lapack: one matrix per LAPACK call (see ``WorkingSetConfig``).
  """

  n_atoms: int = 10
  nnls_max_iter: int = 30
  serial_lapack: bool = False


class OmpState(NamedTuple):
  """Attributes: indices [B, k] selected atoms (``PAD_INDEX`` unused); weights [B, k] NNLS weights;
  count [B] int32 atoms selected; exhausted [B] bool, no positively correlated atom was left."""

  indices: jax.Array
  weights: jax.Array
  count: jax.Array
  exhausted: jax.Array


def _atoms(dictionary: jax.Array, indices: jax.Array) -> jax.Array:
  """[B, k, d] gathered atoms, zero in ``PAD_INDEX`` slots."""
  return jnp.where((indices >= 0)[..., None], dictionary[jnp.maximum(indices, 0)], 0.0)


def omp(problem: Problem, config: OmpConfig = OmpConfig()) -> NonnegLassoResult:
  """Batched non-negative OMP (module docstring). Pure and jit-able; ``problem.l1_penalty`` is ignored.

  Args:
    problem: dictionary [c, d], embeddings [B, d].
    config: static settings (``n_atoms`` <= min(c, d)).

  Returns:
    NonnegLassoResult of width ``n_atoms``: objective ``||w C - z||^2``, ``l1_penalty`` 0,
    ``kkt_violation`` of the NNLS problem on the selected atoms, ``iterations`` = atoms selected,
    ``converged`` = the NNLS refit reached its tolerance.
  """
  dictionary, z, _ = problem
  b = z.shape[0]
  c = dictionary.shape[0]
  k = config.n_atoms
  dtype = z.dtype
  tol = 8 * float(jnp.finfo(dtype).eps)
  zero_lam = jnp.zeros((b,), dtype)
  rows = jnp.arange(b)

  def step(state: OmpState, _) -> OmpState:
    valid = state.indices >= 0
    atoms = _atoms(dictionary, state.indices)
    residual = z - jnp.einsum("bk,bkd->bd", state.weights, atoms, precision=HIGHEST)
    corr = jnp.matmul(residual, dictionary.T, precision=HIGHEST)  # [B, c]
    corr = corr.at[rows[:, None], jnp.where(valid, state.indices, c)].set(-jnp.inf, mode="drop")
    best = jnp.argmax(corr, axis=-1).astype(jnp.int32)
    can_add = (state.count < k) & (corr[rows, best] > tol)
    slot = jnp.where(can_add, state.count, k)  # k is out of bounds: dropped
    indices = state.indices.at[rows, slot].set(best, mode="drop")
    valid = indices >= 0
    qp = gram_qp(_atoms(dictionary, indices), z, zero_lam, valid)
    weights, _ = solve_gram_qp(
      qp, state.weights, tol=tol, max_iter=config.nnls_max_iter, serial=config.serial_lapack
    )
    return OmpState(indices, weights, state.count + can_add, state.exhausted | ~can_add)

  def remaining(state: OmpState) -> jax.Array:
    return jnp.where(state.exhausted, 0, k - state.count).astype(dtype)

  init = OmpState(
    jnp.full((b, k), PAD_INDEX, jnp.int32),
    jnp.zeros((b, k), dtype),
    jnp.zeros((b,), jnp.int32),
    jnp.zeros((b,), bool),
  )
  state, _ = fixed_point_loop(step, init, remaining, tol=0.5, max_iter=k)
  qp = gram_qp(_atoms(dictionary, state.indices), z, zero_lam, state.indices >= 0)
  kkt = qp_kkt(qp, state.weights)
  result = sparse_result(
    problem._replace(l1_penalty=zero_lam),
    state.indices,
    state.weights,
    kkt_violation=kkt,
    converged=kkt <= 64 * tol,
    iterations=state.count,
    width=k,
  )
  return result
