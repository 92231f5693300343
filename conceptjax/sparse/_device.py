"""The device path of the working set: every outer iteration, and the retry of stragglers, in one program.

``nonneg_lasso``'s host path (``_api._working_set_compacted``) copies the per-row state to the host after
every outer iteration to gather the unconverged rows into a smaller batch. That suits a 2-core CPU and
costs an accelerator a device-to-host synchronisation per iteration, Python threads and one compilation
per bucket shape. :func:`working_set_device` does the same work without leaving the device, with static
shapes only:

1. **Main phase.** Every row runs up to ``device_iter`` outer iterations (``_working_set``'s steps on
   ``K = working_size`` candidates) in one ``while_loop``. A row that stops (converged, or stuck: its
   support fills the K slots) is frozen, and its slots are masked out of the small problems of later
   iterations, so it no longer lengthens the inner loops (a batched loop runs as long as its slowest row).
   Rows whose violators overflow the free slots get the rough projected-gradient solve, as on the host.
2. **Retry phase.** The rows still unconverged (slow or stuck) are gathered, ``R`` at a time (``R`` a
   fixed fraction of the batch, ``retry_fraction``; the rows are chosen with a stable sort, so the shape
   is fixed whatever their count), warm-started from their main-phase solution on ``K2 = retry_size``
   candidates (their support plus the most violating concepts, one full product on the R rows) and
   iterated up to ``max_iter`` outer iterations, then scattered back. A ``while_loop`` repeats this until
   every row has had its retry, so the work is proportional to the number of stragglers, not the batch.

A row is reported converged only when its KKT violation over all concepts, computed on the device in
float32 at HIGHEST precision (or bounded, with a low-precision screen: ``_problem.screened_kkt``), is at
most ``tol``. A row whose support exceeds ``K2`` comes back unconverged with ``l0 >= K2``;
``nonneg_lasso`` then solves it again with a wider working set (the rare case, e.g. a tiny penalty).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from conceptjax.loop import fixed_point_loop
from conceptjax.sparse import _gram
from conceptjax.sparse import _working_set as ws
from conceptjax.sparse._problem import NonnegLassoResult, Problem


def retry_rows(batch: int, config: ws.WorkingSetConfig) -> int:
  """R, the rows one retry round solves: ``ceil(retry_fraction * batch)`` (at least 1, at most batch)."""
  return max(1, min(batch, -(-int(batch * config.retry_fraction * 1e6) // 1_000_000)))


def retry_size(num_concepts: int, config: ws.WorkingSetConfig) -> int:
  """K2, candidates per row in the retry phase: ``config.retry_size`` (0: twice K), at most c."""
  return min(config.retry_size or 2 * config.working_size, num_concepts)


def device_step(
  problem: Problem, state: ws.WorkingSetState, config: ws.WorkingSetConfig
) -> ws.WorkingSetState:
  """One outer iteration in which rows that have stopped, and rows whose violators overflow the slots
  (rough solve instead, ``config.rough_iter`` > 0), take no part in the exact small solves: their slots are
  marked invalid there, so the inner loops run as long as the rows that need them only."""
  atoms, qp = ws.restricted_qp(problem, state.indices)
  done = ws.stopped(state, config.tol)
  rough = state.overflow & ~done if config.rough_iter > 0 else jnp.zeros_like(done)
  skip = done | rough
  exact = qp._replace(valid=qp.valid & ~skip[:, None])
  w = ws.solve_small(exact, jnp.where(skip[:, None], 0.0, state.weights), config)
  if config.rough_iter > 0:
    w_rough = jax.lax.cond(
      jnp.any(rough), lambda: _gram.rough_solve(qp, iters=config.rough_iter), lambda: jnp.zeros_like(w)
    )
    w = jnp.where(rough[:, None], w_rough, w)
  w = jnp.where(done[:, None], state.weights, w)
  return ws.certify(problem, state.indices, w, config, atoms)


def _iterate(
  problem: Problem, state: ws.WorkingSetState, config: ws.WorkingSetConfig, max_iter: int
) -> tuple[ws.WorkingSetState, jax.Array]:
  """``device_step`` until every row stops (converged or stuck) or ``max_iter``; ([B] iterations run)."""

  def error(s: ws.WorkingSetState) -> jax.Array:
    return jnp.where(s.stuck, 0.0, s.kkt)  # a stuck row cannot progress at this K: stop it

  state, info = fixed_point_loop(
    lambda s, _: device_step(problem, s, config), state, error, tol=config.tol, max_iter=max_iter
  )
  return state, info.iterations


def _retry(
  problem: Problem,
  result: tuple[jax.Array, ...],
  state: ws.WorkingSetState,
  config: ws.WorkingSetConfig,
) -> tuple[jax.Array, ...]:
  """The retry phase (module docstring): unconverged rows, R at a time, on K2 candidates. ``result``: the
  array fields of the main phase's NonnegLassoResult (a loop carry cannot hold its int ``num_concepts``).
  """
  fields = NonnegLassoResult._fields[:-1]
  b = problem.embeddings.shape[0]
  r = retry_rows(b, config)
  wide = dataclasses.replace(config, working_size=retry_size(problem.dictionary.shape[0], config))

  def cond(carry):
    res, tried = carry
    return jnp.any(~res[fields.index("converged")] & ~tried)

  def body(carry):
    res, tried = carry
    need = ~res[fields.index("converged")] & ~tried
    rows = jnp.argsort(~need, stable=True)[:r]  # rows needing a retry first, in order
    valid = need[rows]
    sub = Problem(problem.dictionary, problem.embeddings[rows], problem.l1_penalty[rows])
    # support + most violating concepts on K2 slots (one full product), then the outer iterations
    start = ws.certify(sub, state.indices[rows], state.weights[rows], wide)
    final, iters = _iterate(sub, start, wide, config.max_iter)
    part = ws.state_result(sub, final, res[fields.index("iterations")][rows] + 1 + iters, config)
    target = jnp.where(valid, rows, b)  # out of bounds: dropped
    res = tuple(a.at[target].set(p, mode="drop") for a, p in zip(res, part[:-1], strict=True))
    return res, tried.at[target].set(True, mode="drop")

  result, _ = jax.lax.while_loop(cond, body, (result, jnp.zeros((b,), bool)))
  return result


def working_set_device(problem: Problem, config: ws.WorkingSetConfig | None = None) -> NonnegLassoResult:
  """Batched non-negative lasso by working sets, main phase and retry phase on the device (module
  docstring). Pure and jit-able (config static); no host transfer or callback inside.

  Args:
    problem: dictionary [c, d], embeddings [B, d], l1_penalty [B].
    config: static settings (default ``WorkingSetConfig()``); ``device_iter`` (main-phase outer
      iterations), ``retry_fraction``, ``retry_size`` and ``max_iter`` (retry-phase outer iterations) are
      this path's own.

  Returns:
    NonnegLassoResult of width ``min(config.max_active, c)``; ``iterations`` counts outer iterations
    (full products) of both phases; ``converged`` is ``kkt_violation <= tol``.
  """
  config = ws.WorkingSetConfig() if config is None else config
  state = ws.initial_state(problem, config)
  state, iters = _iterate(problem, state, config, config.device_iter)
  first = ws.state_result(problem, state, iters, config)
  rows = _retry(problem, tuple(first[:-1]), state, config)
  return NonnegLassoResult(*rows, num_concepts=problem.dictionary.shape[0])
