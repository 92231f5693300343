"""The one iteration helper every iterative solver in conceptjax uses.

``fixed_point_loop`` runs ``step`` inside ``jax.lax.while_loop`` until every row's error is at most ``tol``
(after at least ``min_iter`` iterations) or ``max_iter`` is reached. It is batch-aware: ``error_fn`` returns
one error per row, a row that has converged is frozen (its state is no longer updated, so its result does
not drift while slower rows finish), and per-row iteration counts are reported. Errors are checked every
``check_every`` iterations (checking can cost as much as a step); a fixed-size history of the largest error
at each check is kept, with -1 meaning "not run" (as in ott-jax).

Never raises under jit: non-convergence is reported in :class:`LoopInfo`, not as an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class LoopInfo(NamedTuple):
  """What a loop did.

  Attributes:
    iterations: [B] int32, iterations each row ran before it converged (or the total when it did not).
    converged: [B] bool, whether each row reached ``error <= tol``.
    error: [B] float, each row's error at its last check.
    history: [max_iter // check_every] float, the largest unconverged error at each check; -1 = not run.
  """

  iterations: jax.Array
  converged: jax.Array
  error: jax.Array
  history: jax.Array


def _freeze(done: jax.Array, old: Any, new: Any) -> Any:
  """Keeps ``old`` for rows where ``done``; leaves whose leading axis is not the batch are taken new."""
  b = done.shape[0]

  def pick(o, n):
    if jnp.ndim(n) == 0 or n.shape[0] != b:
      return n
    return jnp.where(done.reshape((b,) + (1,) * (n.ndim - 1)), o, n)

  return jax.tree.map(pick, old, new)


def fixed_point_loop(
  step: Callable[[Any, jax.Array], Any],
  init_state: Any,
  error_fn: Callable[[Any], jax.Array],
  *,
  tol: float | jax.Array,
  max_iter: int,
  min_iter: int = 0,
  check_every: int = 1,
) -> tuple[Any, LoopInfo]:
  """Iterates ``state = step(state, iteration)`` until ``error_fn(state) <= tol`` row by row.

  Args:
    step: ``(state, iteration) -> state``, one solver iteration over the whole batch.
    init_state: pytree; leaves with leading axis ``B`` are per-row and get frozen once their row converges.
    error_fn: ``state -> [B]`` (or scalar) error, e.g. a KKT violation.
    tol: tolerance (may be traced).
    max_iter: static iteration cap (rounded up to a multiple of ``check_every``).
    min_iter: iterations to run before convergence may be declared.
    check_every: static; iterations between error checks.

  Returns:
    (final state, LoopInfo).
  """
  num_checks = max(1, -(-max_iter // check_every))
  err0 = jnp.atleast_1d(error_fn(init_state))
  b = err0.shape[0]
  history = -jnp.ones((num_checks,), err0.dtype)
  done0 = jnp.zeros((b,), bool)
  iters0 = jnp.zeros((b,), jnp.int32)

  def cond(carry):
    _, k, done, _, _, _ = carry
    return jnp.logical_and(k < num_checks, ~jnp.all(done))

  def body(carry):
    state, k, done, iters, _, history = carry
    it0 = k * check_every
    new = jax.lax.fori_loop(0, check_every, lambda i, s: step(s, it0 + i), state)
    new = _freeze(done, state, new) if b > 1 or err0.ndim else new
    err = jnp.atleast_1d(error_fn(new))
    iters = jnp.where(done, iters, iters + check_every)
    history = history.at[k].set(jnp.max(jnp.where(done, -1.0, err)))
    done = done | ((err <= tol) & (it0 + check_every >= min_iter))
    return new, k + 1, done, iters, err, history

  carry = (init_state, jnp.int32(0), done0, iters0, err0, history)
  state, _, done, iters, err, history = jax.lax.while_loop(cond, body, carry)
  return state, LoopInfo(iterations=iters, converged=done, error=err, history=history)
