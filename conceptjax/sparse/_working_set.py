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

``nonneg_lasso`` drives the same steps from the host (``_api._working_set_compacted``): later iterations
run on the unconverged rows only, the first iteration uses ``first_size`` (32) candidates (a cheap first
guess: on the benchmark problems it lowered the CPU time on both, see benchmarks/sparse_solvers.py),
the iteration right after it skips the warm start (the supports change too much), the restart of the
small problems (``_gram.cold_phase``) runs on the rows whose warm start failed only, and rows with more
violators than free slots (``WorkingSetState.overflow``: the candidates cannot hold them all, so the row
almost never certifies at that iteration) get a rough solve instead (``_gram.rough_solve``: accelerated
projected-gradient steps, no polish), from which the next candidates are picked as well as from the exact
solution. The certification stays exact: a row stops only when its KKT violation over all concepts is
within ``tol``.

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
from conceptjax.sparse._gram import GramQP, gram_qp, solve_gram_qp
from conceptjax.sparse._problem import (
  HIGHEST,
  NonnegLassoResult,
  Problem,
  full_gradient,
  objective_from_residual,
  screen_error,
  sparse_result,
  top_k,
)


@dataclasses.dataclass(frozen=True)
class WorkingSetConfig:
  """Static settings of :func:`working_set`.

  Attributes:
    working_size: K, candidate concepts per row (capped at c). 48 by default: on the benchmark problems
      (supports of 10-40 concepts) 48 candidates took 10-18% less time than 64 (the small problems cost
      ``K^2`` to build), with more rows needing one more outer iteration (``benchmarks/sparse_cputime.py``
      against the 64-candidate commit; docs/sparse.md and benchmarks/results/HISTORY.md).
    max_active: k, width of the returned ``indices``/``values`` (padded where larger than K).
    tol: KKT tolerance on all concepts.
    max_iter: cap on outer iterations (full products).
    inner_tol: KKT tolerance of the small problems, as a fraction of ``tol`` (floored at 8 machine eps).
    inner_max_iter: cap on small-problem iterations per outer iteration.
    warm_iter: active-set steps tried from the warm start before the restarts (``_gram.cold_phase``). One:
      a row whose support has not changed is solved by one Newton step; the others restart at once (a
      batched loop runs as long as its slowest row, and the restart is cheap). On (b) 1 step took 5% less
      time than 6, on (a) the same (docs/sparse.md and benchmarks/results/HISTORY.md).
    ipm_iter: cap on interior-point iterations of the second restart.
    pg_iter: accelerated projected-gradient steps of the first restart (0: straight to the interior
      point). 100 lets 1-3 active-set steps finish the small problems of the benchmark problems; against
      the interior point alone it took (a) 217 -> 201 ms, (b) 433 -> 406 ms, (c) 5.65 -> 5.38 s (scratch
      runs interleaved in one process; docs/sparse.md and benchmarks/results/HISTORY.md).
    polish_iter: active-set steps from the first restart before the second.
    first_size: candidates per row in the first outer iteration of ``nonneg_lasso``'s host-driven loop
      (0 or >= ``working_size``: ``working_size``). The first candidates (the concepts most correlated
      with ``z``) are a rough guess on coherent dictionaries, so a smaller, cheaper first solve loses
      little; the next iteration refills to ``working_size``. The all-in-jit :func:`working_set` keeps
      ``working_size`` throughout.
    serial_lapack: one matrix per LAPACK call (``_gram.cholesky``); ``nonneg_lasso`` sets it on a
      multi-device CPU mesh and in its host-loop threads (``streams``), where jaxlib's batched kernels can
      deadlock.
    rough_iter: accelerated projected-gradient steps of the rough small solve (``_gram.rough_solve``)
      that ``nonneg_lasso``'s host-driven loop gives to rows whose violators overflowed the candidates
      (``WorkingSetState.overflow``), with no active-set polish; 0 solves them exactly like the other
      rows.
    streams: row groups ``nonneg_lasso``'s host-driven loop runs side by side in threads on a mesh of one
      CPU device (``_api._working_set_streams``; at most one per 64 rows). The all-in-jit
      :func:`working_set` ignores it.
    device_iter: outer iterations of the device path's main phase (``_device.working_set_device``); the
      rows still unconverged after it go to its retry phase.
    retry_fraction: R / B, the rows one retry round of the device path solves (fixed shape).
    retry_size: K2, candidates per row in the device path's retry phase (0: ``2 * working_size``).
    screen_precision: precision of the full products (``_problem.full_gradient``): ``"highest"`` (float32
      throughout), ``"default"`` or ``"bfloat16"``. With the last two the products only screen: they pick
      the candidates, and the certificate (``certify``) recomputes the gradient in float32 at HIGHEST on
      the support and on the ``K + 1`` most violating concepts, and bounds every other concept's violation
      by the screen's proven error (``_problem.screen_error``). ``kkt_violation`` is then an upper bound of
      the float32 KKT violation, and a row is converged only when that bound is within ``tol``.
  """

  working_size: int = 48
  max_active: int = 64
  tol: float = 1e-5
  max_iter: int = 30
  inner_tol: float = 0.25
  inner_max_iter: int = 60
  warm_iter: int = 1
  ipm_iter: int = 25
  first_size: int = 32
  serial_lapack: bool = False
  rough_iter: int = 50
  pg_iter: int = 100
  polish_iter: int = 6
  streams: int = 2
  device_iter: int = 6
  retry_fraction: float = 0.125
  retry_size: int = 0
  screen_precision: str = "highest"


class WorkingSetState(NamedTuple):
  """Per-row state between outer iterations.

  Attributes:
    indices: [B, K] int32 candidate concepts; the support comes first.
    weights: [B, K] solution on the candidates (0 on newly added ones).
    kkt: [B] KKT violation of ``weights`` on all concepts.
    objective: [B] objective of ``weights``.
    stuck: [B] bool, support fills all K slots while violators remain.
    overflow: [B] bool, more violators than free slots: the candidates hold the most violating ones only,
      so the next small problem almost never certifies the row (its solution mostly serves to pick the
      candidates after it).
  """

  indices: jax.Array
  weights: jax.Array
  kkt: jax.Array
  objective: jax.Array
  stuck: jax.Array
  overflow: jax.Array


def _next_candidates(
  indices: jax.Array, weights: jax.Array, gradient: jax.Array, size: int, tol: float
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
  """Support first, then the most violating concepts outside it.

  Args:
    indices: [B, K0] current candidates (K0 <= K).
    weights: [B, K0] their solved weights.
    gradient: [B, c] full gradient at ``weights``.
    size: K, the number of new candidates.
    tol: KKT tolerance (a concept outside the support violates where its gradient is below ``-tol``).

  Returns:
    ([B, K] new candidates, [B, K] warm-start weights, [B] bool support already fills K, [B] bool more
    violators than free slots, [B] largest violation ``max relu(-g)`` outside the support, and the
    ``n = min(K + 1, c)`` most violating concepts outside the support: [B, n] their ``-g`` in decreasing
    order (-inf where fewer) and [B, n] their indices).
  """
  b, k = indices.shape[0], size
  c = gradient.shape[-1]
  indices = jnp.pad(indices, ((0, 0), (0, k - indices.shape[1])))  # padded slots have weight 0
  weights = jnp.pad(weights, ((0, 0), (0, k - weights.shape[1])))
  active = weights > 0
  rows = jnp.arange(b)[:, None]
  support = jnp.zeros((b, c), bool).at[rows, jnp.where(active, indices, c)].set(True, mode="drop")
  # One more than the slots (where c allows): whether the violators overflow the free slots. Read the
  # outputs with gathers and reductions, not slices: XLA's CPU backend turns a top_k whose outputs are
  # sliced into a full sort (about 0.7 s on [256, 10,000]).
  neg, violators = top_k(jnp.where(support, -jnp.inf, -gradient), min(k + 1, c))  # most violating first
  order = jnp.argsort(~active, axis=-1, stable=True)  # support first
  sorted_idx = jnp.take_along_axis(indices, order, axis=-1)
  sorted_w = jnp.take_along_axis(weights, order, axis=-1)
  n_support = jnp.sum(active, axis=-1, keepdims=True)  # [B, 1]
  slot = jnp.arange(k)[None, :]
  fill = jnp.take_along_axis(violators, jnp.maximum(slot - n_support, 0), axis=-1)
  new_idx = jnp.where(slot < n_support, sorted_idx, fill).astype(jnp.int32)
  new_w = jnp.where(slot < n_support, sorted_w, 0.0)
  off = jnp.maximum(jnp.max(neg, axis=-1), 0.0)
  return new_idx, new_w, n_support[:, 0] >= k, _overflow(neg, k - n_support[:, 0], tol), off, neg, violators


def _overflow(neg_sorted: jax.Array, free: jax.Array, tol: float) -> jax.Array:
  """[B] bool: more than ``free`` [B] violators, from the [B, n] largest negated gradients outside the
  support in decreasing order (n > ``free`` where the dictionary allows; else nothing can overflow)."""
  n = neg_sorted.shape[-1]
  nxt = jnp.take_along_axis(neg_sorted, jnp.minimum(free, n - 1)[:, None], axis=-1)[:, 0]
  return (free < n) & (nxt > tol)


def initial_state(problem: Problem, config: WorkingSetConfig, size: int | None = None) -> WorkingSetState:
  """Candidates = the ``size`` (default ``K``) concepts most correlated with each embedding (one full
  product), weights 0."""
  dictionary, z, lam = problem
  k = min(size or config.working_size, config.working_size, dictionary.shape[0])
  violation = -full_gradient(problem, -z, config.screen_precision)  # [B, c], 2 z C^T - lam
  _, idx0 = top_k(violation, k)
  kkt0 = jnp.max(jnp.maximum(violation, 0.0), axis=-1) + _screen_bound(problem, -z, config)  # upper bound
  return WorkingSetState(
    indices=idx0.astype(jnp.int32),
    weights=jnp.zeros(idx0.shape, z.dtype),
    kkt=kkt0,
    objective=jnp.sum(z * z, axis=-1),
    stuck=jnp.zeros(kkt0.shape, bool),
    overflow=jnp.sum(violation > config.tol, axis=-1) > k,
  )


def inner_tol(config: WorkingSetConfig, dtype) -> float:
  """KKT tolerance of the small problems: ``inner_tol * tol``, floored at 8 machine eps."""
  return max(config.inner_tol * config.tol, 8 * float(jnp.finfo(dtype).eps))


def restricted_qp(problem: Problem, indices: jax.Array) -> tuple[jax.Array, GramQP]:
  """([B, K, d] candidate atoms, the small problem on them) for [B, K] candidate ``indices``."""
  atoms = problem.dictionary[indices]  # [B, K, d]
  return atoms, gram_qp(atoms, problem.embeddings, problem.l1_penalty, jnp.ones(indices.shape, bool))


def certify(
  problem: Problem,
  indices: jax.Array,
  w: jax.Array,
  config: WorkingSetConfig,
  atoms: jax.Array | None = None,
) -> WorkingSetState:
  """KKT violation and objective of the solution ``w`` [B, K] on the candidates ``indices`` [B, K] over ALL
  concepts (one full product), and the next candidates: the support, then the most violating concepts.

  ``atoms``: the [B, K, d] atoms of ``indices`` when the caller already gathered them (the gather costs
  about a quarter of the full product on CPU)."""
  dictionary, z, lam = problem
  atoms = dictionary[indices] if atoms is None else atoms  # [B, K, d]
  residual = jnp.einsum("bk,bkd->bd", w, atoms, precision=HIGHEST) - z
  g = full_gradient(problem, residual, config.screen_precision)  # [B, c]
  size = min(config.working_size, dictionary.shape[0])
  new_idx, new_w, full, overflow, off, neg, ranked = _next_candidates(indices, w, g, size, config.tol)
  if config.screen_precision == "highest":
    g_slots = jnp.take_along_axis(g, indices, axis=-1)
  else:  # float32 at HIGHEST on the slots and on the most violating concepts; a bound for the rest
    g_slots = 2.0 * jnp.einsum("bkd,bd->bk", atoms, residual, precision=HIGHEST) + lam[:, None]
    off = _screened_off(problem, residual, neg, ranked, config)
  on = jnp.max(jnp.where(w > 0, jnp.abs(g_slots), 0.0), axis=-1)
  kkt = jnp.maximum(off, on)  # the support's own relu(-g) is at most ``on``
  objective = objective_from_residual(problem, residual, jnp.sum(w, axis=-1))
  return WorkingSetState(new_idx, new_w, kkt, objective, full & (kkt > config.tol), overflow)


def _screen_bound(problem: Problem, residual: jax.Array, config: WorkingSetConfig) -> jax.Array:
  """[B] bound of ``|g_lo_j - g_j|`` over all concepts (``_problem.screen_error``; 0 at HIGHEST)."""
  eta = screen_error(config.screen_precision, problem.dictionary.shape[1])
  if eta == 0.0:
    return jnp.zeros(residual.shape[:1], residual.dtype)
  c_norm = jnp.max(jnp.linalg.norm(problem.dictionary, axis=-1))
  return eta * jnp.linalg.norm(residual, axis=-1) * c_norm


def _screened_off(
  problem: Problem, residual: jax.Array, neg: jax.Array, ranked: jax.Array, config: WorkingSetConfig
) -> jax.Array:
  """[B] upper bound of ``max_j relu(-g_j)`` outside the support from a screened gradient: the ``n``
  concepts ranked most violating by the screen ([B, n] ``ranked``, their screened ``-g`` ``neg``,
  decreasing, -inf where there are fewer) get their float32 gradient at HIGHEST; every other one has a
  screened ``-g`` at most ``neg[:, -1]``, so its ``-g`` is at most ``neg[:, -1]`` plus the screen's error
  bound (none when the ``n`` cover every concept)."""
  atoms = problem.dictionary[ranked]  # [B, n, d]
  g = 2.0 * jnp.einsum("bnd,bd->bn", atoms, residual, precision=HIGHEST) + problem.l1_penalty[:, None]
  exact = jnp.max(jnp.where(jnp.isfinite(neg), jnp.maximum(-g, 0.0), 0.0), axis=-1)
  if ranked.shape[-1] >= problem.dictionary.shape[0]:
    return exact
  last = neg[:, -1]
  rest = jnp.where(jnp.isfinite(last), jnp.maximum(last + _screen_bound(problem, residual, config), 0.0), 0.0)
  return jnp.maximum(exact, rest)


def outer_step(problem: Problem, state: WorkingSetState, config: WorkingSetConfig) -> WorkingSetState:
  """One outer iteration: solve on the candidates, certify on all concepts (one full product), refill.

  ``nonneg_lasso`` runs the same pieces from the host (``restricted_qp``, ``_gram.warm_phase`` /
  ``cold_phase`` with the cold phase on the rows that need it only, ``certify``)."""
  atoms, qp = restricted_qp(problem, state.indices)
  return certify(problem, state.indices, solve_small(qp, state.weights, config), config, atoms)


def solve_small(qp: GramQP, w0: jax.Array, config: WorkingSetConfig) -> jax.Array:
  """[B, K] solution of the small problems ``qp`` from ``w0`` (``_gram.solve_gram_qp`` with the config's
  inner settings)."""
  w, _ = solve_gram_qp(
    qp,
    w0,
    tol=inner_tol(config, qp.linear.dtype),
    max_iter=config.inner_max_iter,
    warm_iter=config.warm_iter,
    ipm_iter=config.ipm_iter,
    pg_iter=config.pg_iter,
    polish_iter=config.polish_iter,
    serial=config.serial_lapack,
  )
  return w


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
    width=min(config.max_active, problem.dictionary.shape[0]),
    objective=state.objective,
  )


def working_set(problem: Problem, config: WorkingSetConfig = WorkingSetConfig()) -> NonnegLassoResult:
  """Batched non-negative lasso by working sets (module docstring). Pure and jit-able (config static).

  ``nonneg_lasso`` runs the same steps from the host instead (``initial_state``, ``certify``, ...) so
  that later iterations run on the unconverged rows only; this is the all-in-one-jit form.

  Args:
    problem: dictionary [c, d], embeddings [B, d], l1_penalty [B].
    config: static settings.

  Returns:
    NonnegLassoResult with width ``min(config.max_active, c)``; ``iterations`` counts outer iterations
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
