"""Working-set solver: exact solves on a few candidate concepts, certified on all of them.

Per row, the solver keeps ``K`` candidate concepts (``working_size``). It starts from the ``K`` concepts
most correlated with the embedding (one full product ``Z C^T``), then repeats:

1. gather the candidates' atoms [B, K, d] and form the per-row Gram [B, K, K];
2. solve the small non-negative lasso exactly (``_gram.solve_gram_qp``: active set / semismooth Newton,
   warm-started from the previous solution);
3. compute the gradient on ALL concepts with one full product ``2 (w C - z) C^T + lam`` and its KKT
   violation; rows at tolerance stop;
4. keep the support (``w > 0``) and fill the other slots with the most violating concepts (most negative
   gradient).

The cost is one full product per outer iteration plus one for the start (typically 2-4 in all), a gather
of ``B K d`` floats and a ``B K^2 d`` Gram per iteration, and small batched Cholesky solves. A row whose
support fills all ``K`` slots while violators remain cannot progress: it stops unconverged (``l0 == K``)
and the caller may retry it with a larger ``working_size`` (``nonneg_lasso`` does).

References:
  Johnson & Guestrin, "Blitz: A principled meta-algorithm for scaling sparse optimization", ICML 2015.
  Massias, Gramfort & Salmon, "Celer: a fast solver for the lasso with dual extrapolation", ICML 2018
  (working sets ranked by KKT violation).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.loop import fixed_point_loop
from conceptjax.sparse._gram import gram_qp, solve_gram_qp
from conceptjax.sparse._problem import (
  HIGHEST,
  NonnegLassoResult,
  Problem,
  full_gradient,
  objective_from_residual,
  sparse_result,
)


@dataclasses.dataclass(frozen=True)
class WorkingSetConfig:
  """Static settings of :func:`working_set`.

  Attributes:
    working_size: K, candidate concepts per row (capped at c).
    max_active: k, width of the returned ``indices``/``values`` (<= K).
    tol: KKT tolerance on all concepts.
    max_iter: cap on outer iterations (full products).
    inner_tol: KKT tolerance of the small problems, as a fraction of ``tol`` (floored at 8 machine eps).
    inner_max_iter: cap on small-problem iterations per outer iteration.
  """

  working_size: int = 64
  max_active: int = 64
  tol: float = 1e-5
  max_iter: int = 30
  inner_tol: float = 0.25
  inner_max_iter: int = 60


class WorkingSetState(NamedTuple):
  """Per-row state between outer iterations.

  Attributes:
    indices: [B, K] int32 candidate concepts; the support comes first.
    weights: [B, K] solution on the candidates (0 on newly added ones).
    kkt: [B] KKT violation of ``weights`` on all concepts.
    objective: [B] objective of ``weights``.
    stuck: [B] bool, support fills all K slots while violators remain.
  """

  indices: jax.Array
  weights: jax.Array
  kkt: jax.Array
  objective: jax.Array
  stuck: jax.Array


def _next_candidates(
  indices: jax.Array, weights: jax.Array, gradient: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Support first, then the most violating concepts outside it.

  Args:
    indices: [B, K] current candidates.
    weights: [B, K] their solved weights.
    gradient: [B, c] full gradient at ``weights``.

  Returns:
    ([B, K] new candidates, [B, K] warm-start weights, [B] bool support already fills K).
  """
  b, k = indices.shape
  c = gradient.shape[-1]
  active = weights > 0
  rows = jnp.arange(b)[:, None]
  masked = gradient.at[rows, jnp.where(active, indices, c)].set(jnp.inf, mode="drop")
  _, violators = jax.lax.top_k(-masked, k)  # [B, K] most negative gradient first
  order = jnp.argsort(~active, axis=-1, stable=True)  # support first
  sorted_idx = jnp.take_along_axis(indices, order, axis=-1)
  sorted_w = jnp.take_along_axis(weights, order, axis=-1)
  n_support = jnp.sum(active, axis=-1, keepdims=True)  # [B, 1]
  slot = jnp.arange(k)[None, :]
  fill = jnp.take_along_axis(violators, jnp.maximum(slot - n_support, 0), axis=-1)
  new_idx = jnp.where(slot < n_support, sorted_idx, fill).astype(jnp.int32)
  new_w = jnp.where(slot < n_support, sorted_w, 0.0)
  return new_idx, new_w, n_support[:, 0] >= k


def initial_state(problem: Problem, config: WorkingSetConfig) -> WorkingSetState:
  """Candidates = the ``K`` concepts most correlated with each embedding (one full product), weights 0."""
  dictionary, z, lam = problem
  k = min(config.working_size, dictionary.shape[0])
  corr = jnp.matmul(z, dictionary.T, precision=HIGHEST)  # [B, c], the gradient at 0 is lam - 2 corr
  _, idx0 = jax.lax.top_k(corr, k)
  kkt0 = jnp.max(jnp.maximum(2.0 * corr - lam[:, None], 0.0), axis=-1)
  return WorkingSetState(
    indices=idx0.astype(jnp.int32),
    weights=jnp.zeros(idx0.shape, z.dtype),
    kkt=kkt0,
    objective=jnp.sum(z * z, axis=-1),
    stuck=jnp.zeros(kkt0.shape, bool),
  )


def outer_step(problem: Problem, state: WorkingSetState, config: WorkingSetConfig) -> WorkingSetState:
  """One outer iteration: solve on the candidates, certify on all concepts (one full product), refill."""
  dictionary, z, lam = problem
  inner_tol = max(config.inner_tol * config.tol, 8 * float(jnp.finfo(z.dtype).eps))
  atoms = dictionary[state.indices]  # [B, K, d]
  qp = gram_qp(atoms, z, lam, jnp.ones(state.indices.shape, bool))
  w, _ = solve_gram_qp(qp, state.weights, tol=inner_tol, max_iter=config.inner_max_iter)
  residual = jnp.einsum("bk,bkd->bd", w, atoms, precision=HIGHEST) - z
  g = full_gradient(problem, residual)  # [B, c]
  g_slots = jnp.take_along_axis(g, state.indices, axis=-1)
  off = jnp.max(jnp.maximum(-g, 0.0), axis=-1)
  on = jnp.max(jnp.where(w > 0, jnp.abs(g_slots), 0.0), axis=-1)
  kkt = jnp.maximum(off, on)
  objective = objective_from_residual(problem, residual, jnp.sum(w, axis=-1))
  new_idx, new_w, full = _next_candidates(state.indices, w, g)
  return WorkingSetState(new_idx, new_w, kkt, objective, full & (kkt > config.tol))


def stopped(state: WorkingSetState, tol: float) -> jax.Array:
  """[B] bool: converged, or stuck (support fills all K slots while violators remain: cannot progress)."""
  return (state.kkt <= tol) | state.stuck


def state_result(
  problem: Problem, state: WorkingSetState, iterations: jax.Array, config: WorkingSetConfig
) -> NonnegLassoResult:
  """The result of a final state (``iterations``: [B] outer iterations run per row)."""
  return sparse_result(
    problem,
    state.indices,
    state.weights,
    kkt_violation=state.kkt,
    converged=state.kkt <= config.tol,
    iterations=iterations,
    width=min(config.max_active, config.working_size, problem.dictionary.shape[0]),
    objective=state.objective,
  )


def working_set(problem: Problem, config: WorkingSetConfig = WorkingSetConfig()) -> NonnegLassoResult:
  """Batched non-negative lasso by working sets (module docstring). Pure and jit-able (config static).

  ``nonneg_lasso`` runs the same iteration from the host instead (``initial_state``, ``outer_step``) so
  that later iterations run on the unconverged rows only; this is the all-in-one-jit form.

  Args:
    problem: dictionary [c, d], embeddings [B, d], l1_penalty [B].
    config: static settings.

  Returns:
    NonnegLassoResult with width ``min(config.max_active, K)``; ``iterations`` counts outer iterations
    (each one full product); ``converged`` is ``kkt_violation <= tol``.
  """

  def error(state: WorkingSetState) -> jax.Array:
    return jnp.where(state.stuck, 0.0, state.kkt)  # a stuck row cannot progress: stop it

  state, info = fixed_point_loop(
    lambda s, _: outer_step(problem, s, config),
    initial_state(problem, config),
    error,
    tol=config.tol,
    max_iter=config.max_iter,
  )
  return state_result(problem, state, info.iterations, config)
