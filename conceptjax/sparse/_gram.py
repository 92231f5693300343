"""Small non-negative quadratic programs on a per-row Gram matrix (the inner solver of working set and OMP).

Per row: ``min_{w >= 0} w^T G w - 2 b^T w + lam * sum(w)`` over the ``valid`` slots (others fixed at 0),
with ``G`` [K, K] positive (semi-)definite. This is the lasso objective restricted to ``K`` atoms
``A = C[idx]`` with ``G = A A^T`` and ``b = A z`` (``||wA - z||^2 = w^T G w - 2 b^T w + ||z||^2``).

Active-set steps: each proposes three feasible points from one batched Cholesky solve and keeps the one
that lowers the objective most:

1. the primal-dual active-set (semismooth Newton) point ``max(s, 0)``, where ``s`` minimises the quadratic
   on the free set ``P = {w > 0} | {gradient < 0}``;
2. the Lawson-Hanson point: the longest step from ``w`` toward ``s`` that keeps the current support
   non-negative;
3. a projected-gradient step with step ``1 / L``, ``L = 2 max_i sum_j |G_ij|`` (Gershgorin bound), which
   guarantees a monotone decrease and hence convergence.

Once the free set is the optimal support, candidate 1 is the exact minimiser (to rounding). From a warm
start with nearly the right support (later working-set iterations) that takes 1-3 steps. From a poor start
on a coherent dictionary (near-duplicate atoms) the Newton candidates are rejected and progress is slow, so
rows still unsolved after a few steps restart, in turn, from two estimates of the support that the
active-set steps then polish: accelerated projected gradient (``rough_solve``, where ``pg_iter`` > 0: the
working set uses 100 steps of one batched [K, K] product each, no factorisation, enough for 1-3 polishing
steps on the benchmark problems), and for the rows that still fail, a Mehrotra interior point
(``_interior_point``, ~15 Cholesky solves whatever the conditioning). A row stops when its KKT violation is
below ``tol`` or when no candidate lowers its objective (the rounding floor).

References:
  Lawson & Hanson, "Solving Least Squares Problems", 1974, ch. 23 (NNLS active set).
  Hintermüller, Ito & Kunisch, "The primal-dual active set strategy as a semismooth Newton method",
  SIAM J. Optim. 13(3), 2003.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.loop import LoopInfo, fixed_point_loop
from conceptjax.sparse import _fista
from conceptjax.sparse._problem import HIGHEST


class GramQP(NamedTuple):
  """A batch of small quadratic programs.

  Attributes:
    gram: [B, K, K] ``G = A A^T``.
    linear: [B, K] ``b = A z``.
    l1_penalty: [B] ``lam``.
    valid: [B, K] bool, slots that may be non-zero.
  """

  gram: jax.Array
  linear: jax.Array
  l1_penalty: jax.Array
  valid: jax.Array


def batched_gram(atoms: jax.Array) -> jax.Array:
  """[B, K, K] ``A A^T`` per row of [B, K, d] atoms.

  On CPU one product per row (``lax.map``): XLA's CPU batched product runs at about half the speed of
  its plain one here (B=256, K=64, d=512: 52-63 ms against 31-40 ms, single-threaded either way).
  Elsewhere one batched product."""

  def per_row(a):
    return jax.lax.map(lambda m: jnp.matmul(m, m.T, precision=HIGHEST), a)

  def batched(a):
    return jnp.einsum("bkd,bld->bkl", a, a, precision=HIGHEST)

  return jax.lax.platform_dependent(atoms, cpu=per_row, default=batched)


def gram_qp(atoms: jax.Array, embeddings: jax.Array, l1_penalty: jax.Array, valid: jax.Array) -> GramQP:
  """Builds the small problem from gathered atoms [B, K, d] and embeddings [B, d]."""
  gram = batched_gram(atoms)
  linear = jnp.einsum("bkd,bd->bk", atoms, embeddings, precision=HIGHEST)
  return GramQP(gram, linear, l1_penalty, valid)


def qp_gradient(qp: GramQP, w: jax.Array) -> jax.Array:
  """[B, K] gradient ``2 (G w - b) + lam``."""
  gw = jnp.einsum("bkl,bl->bk", qp.gram, w, precision=HIGHEST)
  return 2.0 * (gw - qp.linear) + qp.l1_penalty[:, None]


def qp_objective(qp: GramQP, w: jax.Array) -> jax.Array:
  """[B] ``w^T G w - 2 b^T w + lam sum(w)`` (the lasso objective minus ``||z||^2``)."""
  gw = jnp.einsum("bkl,bl->bk", qp.gram, w, precision=HIGHEST)
  return jnp.sum(w * (gw - 2.0 * qp.linear + qp.l1_penalty[:, None]), axis=-1)


def qp_kkt(qp: GramQP, w: jax.Array) -> jax.Array:
  """[B] KKT violation of the small problem over the valid slots."""
  h = qp_gradient(qp, w)
  off = jnp.max(jnp.where(qp.valid, jnp.maximum(-h, 0.0), 0.0), axis=-1)
  on = jnp.max(jnp.where(w > 0, jnp.abs(h), 0.0), axis=-1)
  return jnp.maximum(off, on)


# jaxlib's CPU LAPACK kernels split a batch of matrices into chunks on XLA's intra-op thread pool and wait
# for them on a pool thread (``ParallelBatchMap`` in jaxlib/cpu/lapack_kernels.cc). When several CPU devices
# run one sharded program at once (``--xla_force_host_platform_device_count``), every pool thread can end
# up waiting that way and the program deadlocks at 0% CPU. A kernel given one matrix runs inline, so
# ``serial=True`` (set by ``nonneg_lasso`` on a multi-device CPU mesh) maps the kernels over the rows.


def cholesky(matrices: jax.Array, *, serial: bool = False) -> jax.Array:
  """[B, K, K] lower Cholesky factors (NaN where not numerically positive definite); ``serial``: one
  matrix per LAPACK call (no deadlock on several CPU devices, slower on one)."""
  if serial:
    return jax.lax.map(jnp.linalg.cholesky, matrices)
  return jnp.linalg.cholesky(matrices)


def cho_solve(factor: jax.Array, rhs: jax.Array, *, serial: bool = False) -> jax.Array:
  """[B, K] solution of ``(L L^T) x = rhs`` for [B, K, K] factors ``L`` and [B, K] ``rhs``."""

  def solve(f, r):
    return jax.scipy.linalg.cho_solve((f, True), r[..., None])[..., 0]

  if serial:
    return jax.lax.map(lambda fr: solve(*fr), (factor, rhs))
  return solve(factor, rhs)


def solve_on_set(qp: GramQP, free: jax.Array, *, serial: bool = False) -> jax.Array:
  """[B, K] minimiser of the quadratic on the slots ``free`` [B, K] (0 elsewhere), no sign constraint.

  Solves ``G_PP s_P = b_P - lam / 2`` by Cholesky with a tiny ridge and one step of iterative refinement
  against the unregularised matrix. Rows whose matrix is not numerically positive definite give NaN (the
  caller discards such candidates).
  """
  k = qp.gram.shape[-1]
  dtype = qp.gram.dtype
  pair = free[:, :, None] & free[:, None, :]
  a = jnp.where(pair, qp.gram, 0.0)  # [B, K, K]
  diag = jnp.diagonal(qp.gram, axis1=-2, axis2=-1)
  ridge = 16 * jnp.finfo(dtype).eps * jnp.max(jnp.where(free, diag, 0.0), axis=-1, keepdims=True)
  eye = jnp.eye(k, dtype=dtype)
  a_reg = a + eye * jnp.where(free, ridge, 1.0)[:, :, None]
  rhs = jnp.where(free, qp.linear - 0.5 * qp.l1_penalty[:, None], 0.0)
  factor = cholesky(a_reg, serial=serial)

  def solve(r):
    return cho_solve(factor, r, serial=serial)

  s = solve(rhs)
  s = s + solve(rhs - jnp.einsum("bkl,bl->bk", a, s, precision=HIGHEST))
  return jnp.where(free, s, 0.0)


class _QPState(NamedTuple):
  w: jax.Array  # [B, K] feasible iterate
  moved: jax.Array  # [B] bool, whether the last iteration lowered the objective


class _Best(NamedTuple):
  w: jax.Array  # [B, K] best candidate so far
  decrease: jax.Array  # [B] its objective change from the current iterate (<= 0)


def _candidate(best: _Best, qp: GramQP, w: jax.Array, h: jax.Array, cand: jax.Array) -> _Best:
  """Keeps ``cand`` for rows where it lowers the objective more than ``best`` (NaN is never kept).

  The change ``f(w + e) - f(w) = e^T h + e^T G e`` (``h`` the gradient at ``w``) is computed from the step
  ``e`` itself, which stays accurate in float32 long after the objective values stop differing.
  """
  e = cand - w
  ge = jnp.einsum("bkl,bl->bk", qp.gram, e, precision=HIGHEST)
  change = jnp.sum(e * (h + ge), axis=-1)
  better = change < best.decrease
  return _Best(jnp.where(better[:, None], cand, best.w), jnp.where(better, change, best.decrease))


def _lipschitz(qp: GramQP) -> jax.Array:
  """[B] ``2 max_i sum_j |G_ij|`` over the valid slots (Gershgorin): a Lipschitz constant of the gradient."""
  absrow = jnp.sum(jnp.abs(jnp.where(qp.valid[:, None, :], qp.gram, 0.0)), axis=-1)
  return 2.0 * jnp.max(absrow, axis=-1) + jnp.finfo(qp.gram.dtype).tiny


def _active_set(
  qp: GramQP, w0: jax.Array, *, tol: float, max_iter: int, serial: bool = False
) -> tuple[jax.Array, LoopInfo]:
  """Active-set iterations from a feasible ``w0`` (three candidates per step, module docstring)."""
  lipschitz = _lipschitz(qp)

  def step(state: _QPState, _) -> _QPState:
    w = state.w
    h = qp_gradient(qp, w)
    free = qp.valid & ((w > 0) | (h < 0))
    s = solve_on_set(qp, free, serial=serial)
    best = _Best(w, jnp.zeros(w.shape[:1], w.dtype))
    best = _candidate(best, qp, w, h, jnp.maximum(s, 0.0))
    # Lawson-Hanson: longest step toward s keeping the current support non-negative.
    shrink = (w > 0) & (s < 0)
    ratio = jnp.where(shrink, w / jnp.where(shrink, w - s, 1.0), 1.0)
    alpha = jnp.minimum(jnp.min(ratio, axis=-1), 1.0)[:, None]
    lh = jnp.where(free, jnp.maximum(w + alpha * (s - w), 0.0), 0.0)
    lh = jnp.where(shrink & (ratio <= alpha), 0.0, lh)
    best = _candidate(best, qp, w, h, lh)
    pg = jnp.where(qp.valid, jnp.maximum(w - h / lipschitz[:, None], 0.0), 0.0)
    best = _candidate(best, qp, w, h, pg)
    return _QPState(best.w, best.decrease < 0)

  def error(state: _QPState) -> jax.Array:
    # A row that can no longer lower its objective is at the precision floor: stop it.
    return jnp.where(state.moved, qp_kkt(qp, state.w), 0.0)

  init = _QPState(w0, jnp.ones(w0.shape[:1], bool))
  state, info = fixed_point_loop(step, init, error, tol=tol, max_iter=max_iter, check_every=1)
  return state.w, info


class _IPMState(NamedTuple):
  w: jax.Array  # [B, K] primal, > 0
  mu: jax.Array  # [B, K] bound multipliers, > 0


def _interior_point(qp: GramQP, *, tol: float, max_iter: int, serial: bool = False) -> jax.Array:
  """Mehrotra predictor-corrector interior point for ``min 1/2 w^T Q w + q^T w, w >= 0``.

  ``Q = 2 G``, ``q = lam - 2 b``; invalid slots get ``Q_ii = 1, q_i = 1`` (so their optimum is 0). Its
  iteration count hardly depends on the conditioning of ``G``, which is what near-duplicate atoms spoil
  for the active-set steps. Returns a feasible point with ``w_j`` set to 0 where ``w_j <= mu_j`` (the
  predicted inactive set), for the active-set polish.

  References:
    Mehrotra, "On the implementation of a primal-dual interior point method", SIAM J. Optim. 2(4), 1992.
    Nocedal & Wright, "Numerical Optimization", 2nd ed., Alg. 16.4.
  """
  b, k = qp.linear.shape
  dtype = qp.gram.dtype
  eye = jnp.eye(k, dtype=dtype)
  pair = qp.valid[:, :, None] & qp.valid[:, None, :]
  hess = jnp.where(pair, 2.0 * qp.gram, 0.0) + eye * jnp.where(qp.valid, 0.0, 1.0)[:, :, None]
  lin = jnp.where(qp.valid, qp.l1_penalty[:, None] - 2.0 * qp.linear, 1.0)

  def max_step(x, dx):
    ratio = jnp.where(dx < 0, -x / jnp.where(dx < 0, dx, -1.0), jnp.inf)
    return jnp.minimum(jnp.min(ratio, axis=-1, keepdims=True), 1.0)

  def step(state: _IPMState, _) -> _IPMState:
    w, mu = state
    grad = jnp.einsum("bkl,bl->bk", hess, w, precision=HIGHEST) + lin  # Q w + q
    tau = jnp.mean(w * mu, axis=-1, keepdims=True)
    factor = cholesky(hess + eye * (mu / w)[:, :, None], serial=serial)

    def solve(r):
      return cho_solve(factor, r, serial=serial)

    dw_aff = solve(-grad)
    dmu_aff = -mu - mu / w * dw_aff
    a_aff = jnp.minimum(max_step(w, dw_aff), max_step(mu, dmu_aff))
    tau_aff = jnp.mean((w + a_aff * dw_aff) * (mu + a_aff * dmu_aff), axis=-1, keepdims=True)
    target = (tau_aff / tau) ** 3 * tau - dw_aff * dmu_aff  # centring + second-order correction
    dw = solve(-grad + target / w)
    dmu = (target - w * mu - mu * dw) / w
    alpha = 0.99 * jnp.minimum(max_step(w, dw), max_step(mu, dmu))
    new = _IPMState(w + alpha * dw, mu + alpha * dmu)
    ok = jnp.all(jnp.isfinite(new.w) & (new.w > 0) & (new.mu > 0), axis=-1, keepdims=True)
    return _IPMState(jnp.where(ok, new.w, w), jnp.where(ok, new.mu, mu))

  def error(state: _IPMState) -> jax.Array:
    return jnp.max(state.w * state.mu, axis=-1)  # complementarity gap (dual feasibility is kept by Newton)

  # Scale-aware start: w_j ~ |q_j| / Q_jj and mu_j ~ |q_j| (row means, a quarter of each). On the coherent
  # benchmark's small problems (K = 32, 64) this takes at most 10 iterations where w = mu = 1 took 12-14.
  w0 = 0.25 * jnp.mean(jnp.abs(lin) / jnp.diagonal(hess, axis1=-2, axis2=-1), axis=-1, keepdims=True)
  mu0 = 0.25 * jnp.mean(jnp.abs(lin), axis=-1, keepdims=True)
  init = _IPMState(
    jnp.broadcast_to(jnp.where(w0 > 0, w0, 1.0), (b, k)),
    jnp.broadcast_to(jnp.where(mu0 > 0, mu0, 1.0), (b, k)),
  )
  state, _ = fixed_point_loop(step, init, error, tol=tol, max_iter=max_iter)
  return jnp.where(qp.valid & (state.w > state.mu), state.w, 0.0)


def solve_gram_qp(
  qp: GramQP,
  w0: jax.Array,
  *,
  tol: float,
  max_iter: int,
  warm_iter: int = 6,
  ipm_iter: int = 25,
  pg_iter: int = 0,
  polish_iter: int = 6,
  serial: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Solves a batch of small non-negative QPs to KKT violation ``tol``.

  First ``warm_iter`` active-set steps from ``w0`` (enough when the warm start has nearly the right
  support; skipped when ``w0`` is all zero); rows still above ``tol`` then restart (``cold_phase``) from
  an accelerated projected-gradient estimate of the support (``pg_iter`` steps) with ``polish_iter``
  active-set steps, and rows still above ``tol`` after those from an interior-point estimate (run to a gap
  of ``1e-4 tol``) with at most ``max_iter`` active-set steps. Each restart is computed only when some row
  needs it.

  Args:
    qp: the problems.
    w0: [B, K] feasible warm start (non-negative, 0 on invalid slots).
    tol: KKT tolerance of the small problem.
    max_iter: cap on the active-set steps after the interior point (each: one batched Cholesky [B, K, K]).
    warm_iter: active-set steps tried from the warm start.
    ipm_iter: cap on interior-point iterations (each: one batched Cholesky).
    pg_iter: accelerated projected-gradient steps of the first restart (each: one batched [K, K] product);
      0 (the default, OMP's: its refits add one atom to a solved problem, the warm start rarely fails, and
      100 steps made OMP ~10% slower on (a)) restarts from the interior point only. The working set uses
      100 (``WorkingSetConfig.pg_iter``).
    polish_iter: active-set steps tried from the projected-gradient restart.
    serial: one matrix per LAPACK call (``cholesky``): required on several CPU devices.

  Returns:
    ([B, K] solution, [B] int32 active-set steps taken).
  """
  w, iters = warm_phase(qp, w0, tol=tol, warm_iter=warm_iter, serial=serial)
  todo = qp_kkt(qp, w) > tol
  return jax.lax.cond(
    jnp.any(todo),
    lambda w: cold_phase(
      qp,
      w,
      todo,
      iters,
      tol=tol,
      max_iter=max_iter,
      ipm_iter=ipm_iter,
      pg_iter=pg_iter,
      polish_iter=polish_iter,
      serial=serial,
    ),
    lambda w: (w, iters),
    w,
  )


def rough_solve(qp: GramQP, *, iters: int) -> jax.Array:
  """[B, K] approximate solution: ``iters`` accelerated projected-gradient steps from 0 (FISTA with
  gradient restart, ``_fista.restarted_step``; step ``1 / L`` with ``L`` the Gershgorin bound
  ``_lipschitz``). No factorisation: a step is one batched [K, K] product.

  The first restart of ``cold_phase``, and the whole solve of the working set's rows whose solution only
  serves to pick the next candidates (``WorkingSetState.overflow``): on the coherent benchmark (b) 50 steps
  pick about the same candidates as the 6 interior-point steps used before (rows finishing after 2 / 3 / 4
  outer iterations: 6 / 192 / 58 against 6 / 196 / 54) for a fraction of their cost (docs/sparse.md and
  benchmarks/results/HISTORY.md). The next outer iteration's certification is exact in any case."""
  lipschitz = _lipschitz(qp)[:, None]

  def gradient(y: jax.Array) -> jax.Array:
    return jnp.where(qp.valid, qp_gradient(qp, y), 1.0)  # > 0: invalid slots stay at 0

  init = _fista.zero_state(qp.linear.shape, qp.linear.dtype)
  state = jax.lax.fori_loop(0, iters, lambda _, s: _fista.restarted_step(s, gradient, lipschitz), init)
  return state.w


def warm_phase(
  qp: GramQP, w0: jax.Array, *, tol: float, warm_iter: int, serial: bool = False
) -> tuple[jax.Array, jax.Array]:
  """The first phase of :func:`solve_gram_qp`: ``warm_iter`` active-set steps from ``w0`` (none when ``w0``
  is all zero). Returns ([B, K] iterate, [B] int32 steps taken)."""
  cold = jnp.all(w0 == 0)  # nothing to warm-start from: go straight to the interior point
  return jax.lax.cond(
    cold,
    lambda w: (w, jnp.zeros(w.shape[:1], jnp.int32)),
    lambda w: (lambda r: (r[0], r[1].iterations))(
      _active_set(qp, w, tol=tol, max_iter=warm_iter, serial=serial)
    ),
    w0,
  )


def cold_phase(
  qp: GramQP,
  w: jax.Array,
  todo: jax.Array,
  iters: jax.Array,
  *,
  tol: float,
  max_iter: int,
  ipm_iter: int,
  pg_iter: int = 0,
  polish_iter: int = 6,
  serial: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """The second phase of :func:`solve_gram_qp`: rows ``todo`` [B] restart from the accelerated
  projected-gradient estimate (``pg_iter`` steps) and take at most ``polish_iter`` active-set steps; rows
  still above ``tol`` restart from the interior-point estimate (computed only when some row needs it), then
  every row takes at most ``max_iter`` active-set steps. Returns ([B, K] solution, [B] steps)."""
  if pg_iter > 0:
    w_pg = rough_solve(qp, iters=pg_iter)
    w, info = _active_set(qp, jnp.where(todo[:, None], w_pg, w), tol=tol, max_iter=polish_iter, serial=serial)
    iters = iters + info.iterations
    todo = todo & (qp_kkt(qp, w) > tol)
  return jax.lax.cond(
    jnp.any(todo),
    lambda w: _interior_point_phase(
      qp, w, todo, iters, tol=tol, max_iter=max_iter, ipm_iter=ipm_iter, serial=serial
    ),
    lambda w: (w, iters),
    w,
  )


def _interior_point_phase(
  qp: GramQP, w: jax.Array, todo: jax.Array, iters: jax.Array, *, tol, max_iter, ipm_iter, serial
) -> tuple[jax.Array, jax.Array]:
  """Rows ``todo`` restart from the interior-point support estimate, then every row takes active-set steps
  to ``tol``."""
  w_ipm = _interior_point(qp, tol=1e-4 * tol, max_iter=ipm_iter, serial=serial)
  w2, info2 = _active_set(qp, jnp.where(todo[:, None], w_ipm, w), tol=tol, max_iter=max_iter, serial=serial)
  return w2, iters + info2.iterations
