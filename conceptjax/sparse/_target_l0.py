"""Target-l0 mode: per row, the lasso penalty that gives about ``k`` active concepts.

The number of active concepts of the non-negative lasso grows as the penalty falls (not always by one).
Per row, a bisection on ``log(lam)`` over ``[lam_max * ratio, lam_max]`` (``lam_max = 2 max_j (z C^T)_j``:
above it the solution is 0) solves the lasso at the midpoint and moves toward ``k``; the solution whose
``l0`` is closest to ``k`` so far is kept. A row stops once ``|l0 - k| <= slack`` (default 1). The chosen
penalty is reported in ``NonnegLassoResult.l1_penalty``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.loop import fixed_point_loop
from conceptjax.sparse._problem import HIGHEST, NonnegLassoResult, Problem


@dataclasses.dataclass(frozen=True)
class TargetL0Config:
  """Static settings of :func:`target_l0`.

  Attributes:
    n_atoms: k, the target number of active concepts.
    solver: the lasso solver, a pure ``(problem, config) -> NonnegLassoResult``.
    solver_config: its static config.
    max_iter: bisection steps (each one full lasso solve of the batch).
    lam_ratio: lower end of the bracket as a fraction of ``lam_max``.
    slack: a row stops once ``|l0 - k| <= slack`` (0: search for exactly ``k`` until ``max_iter``; each
      further step costs a full solve of the batch).
  """

  n_atoms: int
  solver: Callable[..., NonnegLassoResult]
  solver_config: Any
  max_iter: int = 30
  lam_ratio: float = 1e-4
  slack: int = 1


class _Bisection(NamedTuple):
  lo: jax.Array  # [B] log lam with too many atoms
  hi: jax.Array  # [B] log lam with too few atoms
  best: NonnegLassoResult  # per-row best so far (num_concepts a scalar array here)
  distance: jax.Array  # [B] |l0 - k| of best


def target_l0(problem: Problem, config: TargetL0Config) -> NonnegLassoResult:
  """Per-row penalty search for ``l0 ~= k`` (module docstring). Pure and jit-able.

  Args:
    problem: dictionary [c, d], embeddings [B, d]; ``l1_penalty`` is ignored.
    config: static settings.

  Returns:
    NonnegLassoResult at the chosen penalty per row; ``iterations`` = bisection steps; ``converged`` =
    ``|l0 - k| <= 1`` and the lasso solve converged.
  """
  k = config.n_atoms
  corr = jnp.matmul(problem.embeddings, problem.dictionary.T, precision=HIGHEST)
  lam_max = 2.0 * jnp.maximum(jnp.max(corr, axis=-1), jnp.finfo(corr.dtype).tiny)
  hi0 = jnp.log(lam_max)
  lo0 = hi0 + jnp.log(config.lam_ratio)

  def solve(log_lam):
    return config.solver(problem._replace(l1_penalty=jnp.exp(log_lam)), config.solver_config)

  def bisect(lo, hi, mid, res):
    return jnp.where(res.l0 > k, mid, lo), jnp.where(res.l0 < k, mid, hi)

  def step(state: _Bisection, _) -> _Bisection:
    mid = 0.5 * (state.lo + state.hi)
    res = solve(mid)._replace(num_concepts=state.best.num_concepts)
    lo, hi = bisect(state.lo, state.hi, mid, res)
    distance = jnp.abs(res.l0 - k)
    better = distance < state.distance

    def pick(new, old):
      if jnp.ndim(new) == 0:
        return old
      return jnp.where(better.reshape((-1,) + (1,) * (jnp.ndim(new) - 1)), new, old)

    best = jax.tree.map(pick, res, state.best)
    return _Bisection(lo, hi, best, jnp.minimum(distance, state.distance))

  mid0 = 0.5 * (lo0 + hi0)
  first = solve(mid0)
  first = first._replace(num_concepts=jnp.int32(first.num_concepts))
  lo, hi = bisect(lo0, hi0, mid0, first)
  init = _Bisection(lo, hi, first, jnp.abs(first.l0 - k))
  state, info = fixed_point_loop(
    step,
    init,
    lambda s: s.distance.astype(corr.dtype),
    tol=config.slack + 0.5,
    max_iter=max(config.max_iter - 1, 1),
  )
  best = state.best
  return best._replace(
    converged=best.converged & (state.distance <= max(config.slack, 1)),
    iterations=info.iterations + 1,
    num_concepts=problem.dictionary.shape[0],
  )
