"""Accelerated proximal gradient (FISTA) with adaptive restart for the batched non-negative lasso.

Step ``1 / L`` with ``L = 2 ||C||_2^2`` (the Lipschitz constant of the gradient of ``||wC - z||^2``),
estimated by power iteration on ``C^T C`` [d, d] (never ``C C^T``). The proximal map of
``lam ||w||_1 + indicator(w >= 0)`` is ``max(w - lam / L, 0)``. Momentum is restarted per row when it
points uphill (gradient restart). Each iteration costs two full products; the KKT check costs two more
and runs every ``check_every`` iterations.

References:
  Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse problems",
  SIAM J. Imaging Sci. 2(1), 2009.
  O'Donoghue & Candès, "Adaptive restart for accelerated gradient schemes", Found. Comput. Math. 15, 2015.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.sparse._problem import (
  HIGHEST,
  NonnegLassoResult,
  Problem,
  dense_residual,
  full_gradient,
  solve_dense,
)


@dataclasses.dataclass(frozen=True)
class FistaConfig:
  """Static settings of :func:`fista`.

  Attributes:
    max_active: k, width of the returned ``indices``/``values``.
    tol: KKT tolerance.
    max_iter: iteration cap.
    check_every: iterations between KKT checks.
    power_iter: power iterations for the step size (a 2% margin is added).
  """

  max_active: int = 64
  tol: float = 1e-5
  max_iter: int = 5000
  check_every: int = 10
  power_iter: int = 50


class FistaState(NamedTuple):
  """Attributes: w [B, c] iterate (>= 0); y [B, c] extrapolated point; t [B] momentum parameter."""

  w: jax.Array
  y: jax.Array
  t: jax.Array


def spectral_norm_sq(dictionary: jax.Array, num_iter: int) -> jax.Array:
  """Largest eigenvalue of ``C^T C`` (= ``||C||_2^2``) by power iteration on a [d] vector."""
  d = dictionary.shape[1]
  v0 = jnp.ones((d,), dictionary.dtype) / jnp.sqrt(d) + jnp.linspace(0.0, 1e-3, d, dtype=dictionary.dtype)

  def body(_, v):
    u = jnp.matmul(dictionary.T, jnp.matmul(dictionary, v, precision=HIGHEST), precision=HIGHEST)
    return u / jnp.linalg.norm(u)

  v = jax.lax.fori_loop(0, num_iter, body, v0 / jnp.linalg.norm(v0))
  return jnp.sum(jnp.matmul(dictionary, v, precision=HIGHEST) ** 2)


def fista(problem: Problem, config: FistaConfig = FistaConfig()) -> NonnegLassoResult:
  """Batched non-negative lasso by FISTA with gradient restart (module docstring). Pure and jit-able.

  Args:
    problem: dictionary [c, d], embeddings [B, d], l1_penalty [B].
    config: static settings.

  Returns:
    NonnegLassoResult of width ``min(max_active, c)``.
  """
  b = problem.embeddings.shape[0]
  c = problem.dictionary.shape[0]
  dtype = problem.embeddings.dtype
  lipschitz = 2.0 * spectral_norm_sq(problem.dictionary, config.power_iter) * 1.02
  lam = problem.l1_penalty[:, None]

  def step(state: FistaState, _) -> FistaState:
    grad = full_gradient(problem, dense_residual(problem, state.y)) - lam  # smooth part only
    w = jnp.maximum(state.y - (grad + lam) / lipschitz, 0.0)
    uphill = jnp.sum((state.y - w) * (w - state.w), axis=-1) > 0  # [B]
    t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.t**2))
    beta = jnp.where(uphill, 0.0, (state.t - 1.0) / t_next)[:, None]
    return FistaState(w, w + beta * (w - state.w), jnp.where(uphill, 1.0, t_next))

  zeros = jnp.zeros((b, c), dtype)
  init = FistaState(zeros, zeros, jnp.ones((b,), dtype))
  return solve_dense(problem, step, init, lambda s: s.w, config)
