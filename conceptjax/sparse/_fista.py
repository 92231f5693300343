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
from collections.abc import Callable
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


def restarted_step(state: FistaState, gradient: Callable[[jax.Array], jax.Array], lipschitz) -> FistaState:
  """One FISTA step with gradient restart on ``min f(w) + lam sum(w)`` over ``w >= 0``, batched over rows.

  Args:
    state: iterate ``w``, extrapolated point ``y`` (both [B, n]) and momentum ``t`` [B].
    gradient: ``y -> grad f(y) + lam`` [B, n], the gradient of the whole objective at ``y``.
    lipschitz: Lipschitz constant of ``grad f`` (a scalar, or [B, 1] per row); the step is its inverse.
  """
  w = jnp.maximum(state.y - gradient(state.y) / lipschitz, 0.0)  # prox of lam |w|_1 + (w >= 0)
  uphill = jnp.sum((state.y - w) * (w - state.w), axis=-1) > 0  # [B]
  t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.t**2))
  beta = jnp.where(uphill, 0.0, (state.t - 1.0) / t_next)[:, None]
  return FistaState(w, w + beta * (w - state.w), jnp.where(uphill, 1.0, t_next))


def zero_state(shape: tuple[int, int], dtype) -> FistaState:
  """The start ``w = y = 0``, ``t = 1``."""
  zeros = jnp.zeros(shape, dtype)
  return FistaState(zeros, zeros, jnp.ones(shape[:1], dtype))


def fista(problem: Problem, config: FistaConfig = FistaConfig()) -> NonnegLassoResult:
  """Batched non-negative lasso by FISTA with gradient restart (module docstring). Pure and jit-able.

  Args:
    problem: dictionary [c, d], embeddings [B, d], l1_penalty [B].
    config: static settings.

  Returns:
    NonnegLassoResult of width ``min(max_active, c)``.
  """
  lipschitz = 2.0 * spectral_norm_sq(problem.dictionary, config.power_iter) * 1.02

  def step(state: FistaState, _) -> FistaState:
    return restarted_step(state, lambda y: full_gradient(problem, dense_residual(problem, y)), lipschitz)

  init = zero_state((problem.embeddings.shape[0], problem.dictionary.shape[0]), problem.embeddings.dtype)
  return solve_dense(problem, step, init, lambda s: s.w, config)
