"""Non-negative lasso: every conceptjax solver beside scikit-learn, skglm and celer and one dense product.

Problem per row (SpLiCE's convention, no 1/2 factor): ``min_{w >= 0} ||w C - z||^2 + lam ||w||_1``.
In ONE run and on the same problems (conceptjax.sparse.synthetic), this times

* every in-project solver (``conceptjax.sparse.SOLVERS``), float32, jit-compiled, batch sharded over all
  devices: first call (compile + run) and the median of warm calls, reported apart;
* scikit-learn ``Lasso(alpha=lam/(2d), positive=True, fit_intercept=False, tol=1e-6, max_iter=10000)`` per
  row in a Python loop, float64 (exactly as SpLiCE calls it), skglm and celer ``Lasso(positive=True)`` per
  row with tol 1e-8, float64 (a missing peer is skipped with a note). Peers run on the first
  ``peer_rows`` rows and their time is extrapolated to the whole batch (marked ``*`` in the table and
  ``"extrapolated": true`` in the JSON). In the main and full presets the in-project solvers that are far
  slower than the working set here (FISTA, ADMM, the target-l0 search) get the same treatment on the first
  ``subset_rows`` rows, also marked ``*``;
* one dense ``(B x d) @ (d x c)`` float32 product in JAX: the floor (certifying optimality needs it once);
* at the end, the fastest in-project solver and the dense product again, interleaved call by call
  (``side_by_side``): the table's last line, the ratio of adjacent calls, steadier under a moving load
  than the ``x dense`` column (whose floor was timed before the peers ran).

Every solution is evaluated here, in float64 numpy, with the same formulas: objective, KKT violation
``max(max_j relu(-g_j), max_{w_j>0} |g_j|)`` with ``g = 2 (w C - z) C^T + lam``, l0 and the cosine between
``w C`` and ``z``. A method reaches tolerance on a row when its objective is within 1e-6 relative of the best
objective any method found on that row and its KKT violation is <= 1e-5. An in-project solver that misses on
some row is re-run with a tighter ``tol`` (``--tols``); its time-to-tolerance is the first setting that
reaches on every row, else it is reported as missing. OMP solves a different (fixed-l0) problem: it runs
with ``target_l0`` = the mean l0 of the best lasso solution and its objective gap is marked not comparable.

Presets (``--preset``): ``tiny`` (a test, seconds), ``main`` (``conceptjax main``: problem (a) and (b) at
the issue's size with peers on a few rows, about a minute on 2 cores), ``full`` (the issue's problems:
(a) B=256, c=10,000, d=512 Gaussian; (b) the same coherent; (c) c=37,445, B=1024, coherent; ~10 min).

Usage::

  python -m benchmarks.sparse_solvers --preset full --out benchmarks/results
  python -m benchmarks.sparse_solvers --preset main --problems a --solvers fista,working_set --peers sklearn

Writes ``sparse_solvers.json`` (environment, sizes, every figure) and ``sparse_solvers.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from conceptjax import benchmarking, io
from conceptjax.sparse import synthetic

OBJECTIVE_RTOL = 1e-6  # a row reaches tolerance when (obj - best) <= 1e-6 * best ...
KKT_TOL = 1e-5  # ... and its KKT violation is <= 1e-5
# Fixed-l0 methods (objective at lam not comparable): OMP, and the target-l0 mode (per-row penalty search)
# around the fastest lasso solver that reached tolerance.
FIXED_L0 = ("omp", "target_l0")
PEERS = ("sklearn", "skglm", "celer")


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
  """One benchmark problem: a dictionary kind and sizes (rows B, concepts c, width d)."""

  name: str
  dictionary: str  # "gaussian" | "coherent"
  batch: int
  concepts: int
  dim: int
  lam: float = 0.25
  seed: int = 0
  peer_rows: int = 16
  target_l0: int | None = None  # l0 of the fixed-l0 methods (None: mean l0 of the best lasso solution)
  subset_solvers: tuple[str, ...] = ()  # in-project methods run on the first subset_rows rows only ...
  subset_rows: int = 64  # ... (too slow for the whole batch here), time extrapolated to B like the peers


_ISSUE = dict(batch=256, concepts=10_000, dim=512)
_SLOW = ("fista", "admm", "target_l0")  # measured here at ~100x the working set: timed on a row subset
PRESETS: dict[str, dict[str, Any]] = {
  "tiny": dict(
    problems=(
      # A fixed target l0 so that OMP (static k) compiles once for both problems.
      ProblemSpec("a", "gaussian", batch=16, concepts=400, dim=32, peer_rows=16, target_l0=15),
      ProblemSpec("b", "coherent", batch=16, concepts=400, dim=32, peer_rows=16, target_l0=15),
    ),
    repeats=2,
  ),
  "main": dict(
    problems=(
      ProblemSpec("a", "gaussian", **_ISSUE, peer_rows=4, subset_solvers=_SLOW, subset_rows=16),
      ProblemSpec("b", "coherent", **_ISSUE, peer_rows=2, subset_solvers=_SLOW, subset_rows=16),
    ),
    repeats=3,
  ),
  "full": dict(
    problems=(
      ProblemSpec("a", "gaussian", **_ISSUE, peer_rows=16, subset_solvers=_SLOW, subset_rows=32),
      ProblemSpec("b", "coherent", **_ISSUE, peer_rows=8, subset_solvers=_SLOW, subset_rows=32),
      ProblemSpec(
        "c",
        "coherent",
        batch=1024,
        concepts=37_445,
        dim=512,
        peer_rows=4,
        subset_solvers=_SLOW,
        subset_rows=16,
      ),
    ),
    repeats=5,
  ),
}


# ----------------------------------------------------------------------------------------------------------
# Problems and evaluation (float64 numpy, the same formulas for every method).


def make_problem(spec: ProblemSpec) -> tuple[np.ndarray, np.ndarray]:
  """(dictionary [c, d], embeddings [B, d]) as float32 numpy arrays, a pure function of ``spec``."""
  k_dict, k_emb = jax.random.split(jax.random.key(spec.seed))
  make = {"gaussian": synthetic.gaussian_dictionary, "coherent": synthetic.coherent_dictionary}[
    spec.dictionary
  ]
  dictionary = make(k_dict, spec.concepts, spec.dim, dtype=jnp.float32)
  sample = synthetic.sparse_embeddings(k_emb, dictionary, spec.batch)
  return np.asarray(dictionary), np.asarray(sample.embeddings)


@dataclasses.dataclass
class Evaluation:
  """Per-row figures of one solution, computed in float64: objective, kkt, l0, cos [n]."""

  objective: np.ndarray
  kkt: np.ndarray
  l0: np.ndarray
  cos: np.ndarray


def evaluate(
  weights: scipy.sparse.csr_matrix,
  dictionary: np.ndarray,
  embeddings: np.ndarray,
  lam: float,
  chunk: int = 128,
) -> Evaluation:
  """Objective, KKT violation, l0 and reconstruction cosine of sparse weights [n, c] (float64, chunked).

  ``g = 2 (w C - z) C^T + lam``; ``kkt = max(max_j relu(-g_j), max_{w_j > 0} |g_j|)``.
  """
  n = weights.shape[0]
  out = {k: np.zeros(n) for k in ("objective", "kkt", "l0", "cos")}
  c64 = dictionary.astype(np.float64)
  for s in range(0, n, chunk):
    w = weights[s : s + chunk]
    z = embeddings[s : s + chunk].astype(np.float64)
    recon = np.asarray(w @ c64)  # [n, d]
    r = recon - z
    g = 2.0 * (r @ c64.T) + lam  # [n, c]
    active = w.toarray() > 0
    off = np.max(np.maximum(-g, 0.0), axis=1)
    on = np.max(np.where(active, np.abs(g), 0.0), axis=1)
    out["objective"][s : s + chunk] = np.sum(r * r, axis=1) + lam * np.asarray(w.sum(axis=1)).ravel()
    out["kkt"][s : s + chunk] = np.maximum(off, on)
    out["l0"][s : s + chunk] = active.sum(axis=1)
    norms = np.linalg.norm(recon, axis=1) * np.linalg.norm(z, axis=1)
    out["cos"][s : s + chunk] = np.sum(recon * z, axis=1) / np.maximum(norms, 1e-300)
  return Evaluation(**out)


def sparse_rows(indices: np.ndarray, values: np.ndarray, c: int) -> scipy.sparse.csr_matrix:
  """CSR [B, c] from fixed-width (indices, values) with negative-index padding."""
  indices, values = np.asarray(indices), np.asarray(values, np.float64)
  keep = (indices >= 0) & (values > 0)
  rows = np.broadcast_to(np.arange(indices.shape[0])[:, None], indices.shape)
  return scipy.sparse.csr_matrix((values[keep], (rows[keep], indices[keep])), shape=(indices.shape[0], c))


# ----------------------------------------------------------------------------------------------------------
# Methods.


def peer_factory(name: str, alpha: float) -> Callable[[], Any] | None:
  """A constructor of the peer's estimator for the sklearn-scaled penalty ``alpha``, or None if missing."""
  try:
    if name == "sklearn":
      from sklearn.linear_model import Lasso

      return lambda: Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-6, max_iter=10_000)
    if name == "skglm":
      from skglm import Lasso

      return lambda: Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-8)
    if name == "celer":
      from celer import Lasso

      return lambda: Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-8)
  except ImportError:
    return None
  raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")


def run_peer(
  make: Callable[[], Any], dictionary: np.ndarray, embeddings: np.ndarray
) -> tuple[float, float, scipy.sparse.csr_matrix]:
  """Fits one estimator per row (a Python loop, as SpLiCE does) after one untimed-apart warm-up fit.

  Returns:
    (seconds for all rows, seconds of the warm-up fit on row 0 (numba compilation for skglm/celer),
    CSR weights [n, c]).
  """
  import warnings

  from sklearn.exceptions import ConvergenceWarning

  x = np.asfortranarray(dictionary.astype(np.float64).T)  # [d, c] (F order, as SpLiCE passes it)
  ys = embeddings.astype(np.float64)
  coefs = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    t0 = time.perf_counter()
    make().fit(x, ys[0])
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for y in ys:
      coefs.append(make().fit(x, y).coef_.copy())
    seconds = time.perf_counter() - t0
  return seconds, first, scipy.sparse.csr_matrix(np.maximum(np.asarray(coefs), 0.0))


_dense_product = jax.jit(lambda z, c: jnp.matmul(z, c.T))


def dense_floor(dictionary: np.ndarray, embeddings: np.ndarray, repeats: int) -> benchmarking.Timing:
  """Times one float32 ``(B x d) @ (d x c)`` product in JAX (the same placement as the solvers' input)."""
  z, c = jnp.asarray(embeddings), jnp.asarray(dictionary)
  timing, _ = benchmarking.time_call(lambda: _dense_product(z, c), repeats=max(repeats, 5), min_seconds=0.2)
  return timing


def dense_floor_numpy(dictionary: np.ndarray, embeddings: np.ndarray, repeats: int) -> benchmarking.Timing:
  """Times the same product in numpy (BLAS), the floor as a numpy user measures it (JAX's CPU product can be
  slower: both are reported, ``x_dense`` is relative to JAX's, ``x_dense_numpy`` to numpy's)."""
  z, c = np.asarray(embeddings, np.float32), np.asarray(dictionary, np.float32)
  timing, _ = benchmarking.time_call(lambda: z @ c.T, repeats=max(repeats, 5), min_seconds=0.2)
  return timing


def _solver_names(requested: Sequence[str] | None) -> list[str]:
  if requested == ["none"]:
    return []
  from conceptjax import sparse

  names = list(sparse.SOLVERS) + ["target_l0"]
  if requested:
    unknown = set(requested) - set(names)
    if unknown:
      raise SystemExit(f"unknown solver(s) {sorted(unknown)}; known: {', '.join(names)}")
    names = [n for n in names if n in requested]
  return names


_COMPILES = [0]  # XLA compilations in this process (a jax.monitoring listener, registered once)


def _count_compile(event: str, duration: float, **_: Any) -> None:
  if event == "/jax/core/compile/backend_compile_duration":
    _COMPILES[0] += 1


def solver_call(
  name: str,
  dictionary: jax.Array,
  embeddings: jax.Array,
  lam: float,
  tol: float,
  extra: dict,
  max_iter: int | None = None,
) -> Callable[[], Any]:
  """The thunk ``run_solver`` times: ``sparse.nonneg_lasso(..., solver=name, tol=tol, **extra)``."""
  from conceptjax import sparse

  kw = {"solver": name, **extra}
  if max_iter is not None:
    kw["max_iter"] = max_iter
  return lambda: sparse.nonneg_lasso(dictionary, embeddings, l1_penalty=lam, tol=tol, **kw)


def run_solver(
  name: str,
  dictionary: jax.Array,
  embeddings: jax.Array,
  lam: float,
  tol: float,
  repeats: int,
  extra: dict,
  budget_s: float = 20.0,
  max_iter: int | None = None,
) -> tuple[benchmarking.Timing, Any, int]:
  """Times ``sparse.nonneg_lasso(..., solver=name, tol=tol)``: first call apart from warm calls.

  ``repeats`` warm calls (median) when they fit in ``budget_s`` seconds, else one.

  Returns:
    (timing, result, XLA compilations during the warm calls: should be 0).
  """
  if not getattr(_count_compile, "registered", False):
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    _count_compile.registered = True
  solve = solver_call(name, dictionary, embeddings, lam, tol, extra, max_iter)
  starts = []

  def call():
    starts.append(_COMPILES[0])
    return solve()

  # One warm call first; more only while they fit in ``budget_s`` (slow solvers get one warm call).
  timing, res = benchmarking.time_call(call, repeats=1)
  more = repeats - 1
  if more > 0 and timing.median_s * more <= budget_s:
    extra_timing, res = benchmarking.time_call(call, repeats=more)  # its first call is warm too
    times = timing.times + (extra_timing.first_s, *extra_timing.times)
    timing = benchmarking.Timing(timing.first_s, statistics.median(times), min(times), times)
  return timing, res, _COMPILES[0] - starts[1]


# ----------------------------------------------------------------------------------------------------------
# One problem.


def _summary(ev: Evaluation, rows: np.ndarray, best: np.ndarray, comparable: bool) -> dict[str, Any]:
  """Figures of one method over the ``rows`` it solved, against the per-row ``best`` objective [B]."""
  gap = (ev.objective - best[rows]) / np.abs(best[rows])
  reach = (gap <= OBJECTIVE_RTOL) & (ev.kkt <= KKT_TOL)
  return {
    "objective_mean": float(ev.objective.mean()),
    "objective_gap_max": float(gap.max()),
    "objective_gap_median": float(np.median(gap)),
    "kkt_max": float(ev.kkt.max()),
    "kkt_median": float(np.median(ev.kkt)),
    "mean_l0": float(ev.l0.mean()),
    "recon_cos": float(ev.cos.mean()),
    "rows_evaluated": int(len(rows)),
    "rows_reaching_tolerance": float(reach.mean()) if comparable else None,
    "reached_tolerance": bool(reach.all()) if comparable else None,
  }


def run_problem(
  spec: ProblemSpec,
  *,
  solvers: Sequence[str],
  peers: Sequence[str],
  tols: Sequence[float],
  repeats: int,
  log: Callable[[str], None],
  max_iter: int | None = None,
) -> dict[str, Any]:
  """Runs every method on one problem; returns its JSON record."""
  t_start = time.perf_counter()
  dictionary, embeddings = make_problem(spec)
  b, c = embeddings.shape[0], dictionary.shape[0]
  n_peer = min(spec.peer_rows, b)
  check_rows = np.arange(n_peer)  # rows every method solved
  lam = spec.lam
  log(f"[{spec.name}] {spec.dictionary} B={b} c={c} d={spec.dim} lam={lam}: problem ready")

  floor = dense_floor(dictionary, embeddings, repeats)
  floor_np = dense_floor_numpy(dictionary, embeddings, repeats)
  methods: list[dict[str, Any]] = []
  evals: dict[str, tuple[Evaluation, np.ndarray]] = {}  # name -> (evaluation, rows it covers)

  # Peers first (per row, float64, on the first n_peer rows).
  for peer in peers:
    make = peer_factory(peer, lam / (2 * spec.dim))
    if make is None:
      methods.append({"method": peer, "kind": "peer", "skipped": f"{peer} is not installed"})
      log(f"[{spec.name}] {peer}: not installed, skipped")
      continue
    seconds, first, w = run_peer(make, dictionary, embeddings[:n_peer])
    evals[peer] = (evaluate(w, dictionary, embeddings[:n_peer], lam), check_rows)
    methods.append(
      {
        "method": peer,
        "kind": "peer",
        "rows_timed": n_peer,
        "extrapolated": n_peer < b,
        "measured_s": seconds,
        "time_s": seconds * b / n_peer,
        "first_s": first,
        "compile_s": max(first - seconds / n_peer, 0.0),
        "peak_rss_mb": benchmarking.peak_rss_mb(),
      }
    )
    log(f"[{spec.name}] {peer}: {seconds:.2f} s for {n_peer} rows")

  # In-project solvers, whole batch, float32. A solver that raises is reported, not fatal.
  dict_j, emb_j = jnp.asarray(dictionary), jnp.asarray(embeddings)
  records: dict[str, dict[str, Any]] = {}

  def attempt(name: str, tol: float, extra: dict) -> bool:
    n = max(min(spec.subset_rows, b), n_peer) if name in spec.subset_solvers else b
    rec = records.setdefault(
      name, {"method": name, "kind": "conceptjax", "rows_timed": n, "extrapolated": n < b, "tries": []}
    )
    try:
      timing, res, warm_compiles = run_solver(
        name, dict_j, emb_j[:n], lam, tol, repeats, extra, max_iter=max_iter
      )
    except Exception as e:  # noqa: BLE001  (reported in the table and the JSON)
      rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      log(f"[{spec.name}] {name} tol={tol:g}: FAILED {rec['error']}")
      return False
    evals[name] = (
      evaluate(sparse_rows(res.indices, res.values, c), dictionary, embeddings[:n], lam),
      np.arange(n),
    )
    rec["tries"].append(
      {
        "tol": tol,
        "measured_s": timing.median_s,
        "time_s": timing.median_s * b / n,
        "first_s": timing.first_s,
        "compile_s": timing.compile_s,
        "warm_compiles": warm_compiles,
        "solver_converged": float(np.mean(np.asarray(res.converged))),
        "solver_kkt_max": float(np.max(np.asarray(res.kkt_violation))),
        "iterations_max": int(np.max(np.asarray(res.iterations))),
        "truncated_rows": int(np.sum(np.asarray(res.l0) > res.indices.shape[1])),
      }
    )
    rec.update(
      measured_s=timing.median_s,
      time_s=timing.median_s * b / n,
      first_s=timing.first_s,
      compile_s=timing.compile_s,
      warm_compiles=warm_compiles,
      solver_tol=tol,
    )
    rec["peak_rss_mb"] = benchmarking.peak_rss_mb()
    log(
      f"[{spec.name}] {name} tol={tol:g} ({n} rows): {timing.median_s:.3f} s warm, "
      f"{timing.first_s:.2f} s first"
    )
    return True

  def best_objective() -> np.ndarray:
    best = np.full(b, np.inf)
    for ev, rows in evals.values():
      best[rows] = np.minimum(best[rows], ev.objective)
    return best

  def reached(name: str, best: np.ndarray) -> bool:
    return _summary(*evals[name], best, comparable=True)["reached_tolerance"]

  # Time to tolerance: run at the loosest tol; a solver missing on some row is re-run at the next tighter
  # tol (its record keeps every try; the figures are those of its last try).
  lasso = [n for n in solvers if n not in FIXED_L0 and attempt(n, tols[0], {})]
  for tol in tols[1:]:
    best = best_objective()
    missing = [n for n in lasso if not reached(n, best)]
    if not missing:
      break
    for name in missing:
      if not attempt(name, tol, {}):
        lasso.remove(name)
        evals.pop(name, None)

  # Every figure against the final best (a tighter try may have lowered it).
  best = best_objective()
  for m in methods:
    if m["kind"] == "peer" and "skipped" not in m:
      m.update(_summary(*evals[m["method"]], best, comparable=True))
  for name in [n for n in solvers if n not in FIXED_L0]:
    rec = records[name]
    if name in lasso:
      rec.update(_summary(*evals[name], best, comparable=True))
    methods.append(rec)

  best_lasso = _best_method(methods)
  paired = None
  if best_lasso:  # the best solver and the floor, interleaved (``side_by_side``), on the rows it timed
    rows, tol = records[best_lasso]["rows_timed"], records[best_lasso]["solver_tol"]
    emb_rows = emb_j[:rows]
    paired = side_by_side(
      solver_call(best_lasso, dict_j, emb_rows, lam, tol, {}, max_iter),
      lambda: _dense_product(emb_rows, dict_j),
      rounds=max(repeats, 5),
    )
    paired.update(method=best_lasso, rows=rows, tol=tol)
    log(f"[{spec.name}] {best_lasso} and the dense product side by side: {paired['ratio']:.1f}x")

  # Fixed-l0 methods: target the mean l0 of the best lasso solution; objective not comparable.
  if spec.target_l0 is not None:
    target, source = spec.target_l0, "fixed by the preset"
  else:
    target = int(round(evals[best_lasso][0].l0.mean())) if best_lasso else 10
    source = f"mean l0 of {best_lasso}"
  for name in [n for n in solvers if n in FIXED_L0]:
    extra = {"target_l0": target}
    if name == "target_l0":
      extra["solver"] = best_lasso or "auto"
    ok = attempt(name, tols[0], extra)
    rec = records[name]
    rec["target_l0"] = target
    how = "greedy selection" if name == "omp" else f"per-row penalty search around {extra['solver']}"
    rec["note"] = f"l0 = {target} ({source}) by {how}; objective at lam not comparable"
    if ok:
      ev, rows = evals.pop(name)
      rec.update(_summary(ev, rows, best, comparable=False))
      rec["rows_l0_within_1"] = float(np.mean(np.abs(ev.l0 - target) <= 1))
    methods.append(rec)

  methods.append(
    {
      "method": "dense product (floor)",
      "kind": "floor",
      "rows_timed": b,
      "extrapolated": False,
      "time_s": floor.median_s,
      "first_s": floor.first_s,
      "compile_s": floor.compile_s,
    }
  )
  for m in methods:
    if "time_s" in m:
      m["x_dense"] = m["time_s"] / floor.median_s
      m["x_dense_numpy"] = m["time_s"] / floor_np.median_s

  return {
    "name": spec.name,
    "spec": dataclasses.asdict(spec),
    "dense_floor_s": floor.median_s,
    "dense_floor_numpy_s": floor_np.median_s,
    "target_l0": target,
    "check_rows": n_peer,
    "best_objective_check_rows": best[check_rows].tolist(),
    "objective_check_rows": {name: ev.objective[:n_peer].tolist() for name, (ev, _) in evals.items()},
    "best_objective_mean": float(best.mean()),
    "best_method": best_lasso,
    "side_by_side": paired,
    "peak_rss_mb": benchmarking.peak_rss_mb(),
    "seconds": time.perf_counter() - t_start,
    "methods": methods,
  }


def side_by_side(
  solve: Callable[[], Any], dense: Callable[[], Any], rounds: int, dense_calls: int = 3
) -> dict[str, Any]:
  """After one call of each, ``rounds`` rounds of one ``solve()`` call then ``dense_calls`` ``dense()``
  calls, each waited for.

  The table's ``x dense`` divides a solver's median by the floor timed minutes earlier, before the peers;
  on a shared machine the load moves in between (the dense product took 15-25 ms on (b) within one
  afternoon of runs on a 2-core CPU). Here each round's ratio comes from adjacent calls: the solver's time
  over the fastest of the dense calls right after it (the first of them ran about 6% slower than the next
  ones on (b), a scratch measurement: the fastest keeps the floor conservative). ``ratio`` is the median of
  the rounds' ratios.

  ``solve`` should be the call the solver was timed with (``solver_call``): the XLA compilations of the
  first call and of the rounds are counted (both 0 when it is; ``run_solver`` registers the counter).

  Returns:
    {"rounds", "dense_calls", "solver_s" and "dense_s" (medians over the rounds), "ratio",
    "round_ratios", "first_call_compiles", "round_compiles"}.
  """

  def timed(fn) -> float:
    t0 = time.perf_counter()
    benchmarking.block(fn())
    return time.perf_counter() - t0

  start = _COMPILES[0]
  benchmarking.block((solve(), dense()))
  first = _COMPILES[0]
  pairs = []
  for _ in range(rounds):
    solver_s = timed(solve)
    pairs.append((solver_s, min(timed(dense) for _ in range(dense_calls))))
  ratios = [s / d for s, d in pairs]
  return {
    "rounds": rounds,
    "dense_calls": dense_calls,
    "solver_s": statistics.median(p[0] for p in pairs),
    "dense_s": statistics.median(p[1] for p in pairs),
    "ratio": statistics.median(ratios),
    "round_ratios": ratios,
    "first_call_compiles": first - start,
    "round_compiles": _COMPILES[0] - first,
  }


def _best_method(methods: list[dict[str, Any]]) -> str | None:
  """The fastest in-project lasso solver that reached tolerance (else the one with the smallest gap)."""
  cands = [m for m in methods if m["kind"] == "conceptjax" and m.get("reached_tolerance") is not None]
  if not cands:
    return None
  reached = [m for m in cands if m["reached_tolerance"]]
  if reached:
    return min(reached, key=lambda m: m["time_s"])["method"]
  return min(cands, key=lambda m: m["objective_gap_max"])["method"]


# ----------------------------------------------------------------------------------------------------------
# Output.


def format_table(record: dict[str, Any]) -> str:
  """A plain-text table of one problem."""
  s = record["spec"]
  head = (
    f"({s['name']}) {s['dictionary']} dictionary, B={s['batch']}, c={s['concepts']}, d={s['dim']}, "
    f"lam={s['lam']}; dense product {record['dense_floor_s'] * 1e3:.1f} ms (JAX), "
    f"{record.get('dense_floor_numpy_s', float('nan')) * 1e3:.1f} ms (numpy); peak RSS "
    f"{record['peak_rss_mb']:.0f} MiB"
  )
  cols = ("method", "time s", "x dense", "compile s", "tolerance", "obj gap max", "kkt max", "l0", "cos")
  rows = []
  for m in record["methods"]:
    if "skipped" in m or "error" in m:
      rows.append((m["method"], m.get("skipped") or f"FAILED: {m['error']}"[:100], *[""] * 7))
      continue
    star = "*" if m.get("extrapolated") else ""
    if m["kind"] == "floor":
      tol = ""
    elif m.get("reached_tolerance") is None:
      tol = f"n/a: l0={m['target_l0']} ({m['rows_l0_within_1']:.0%} within 1)"
    else:
      frac = m["rows_reaching_tolerance"]
      tol = "yes" if m["reached_tolerance"] else f"MISSED ({frac:.0%} rows)"
      if m["kind"] == "conceptjax":
        tol += f" @tol={m['solver_tol']:g}"
    rows.append(
      (
        m["method"],
        f"{m['time_s']:.3f}{star}",
        f"{m['x_dense']:.1f}{star}",
        f"{m['compile_s']:.2f}" + (f" ({m['warm_compiles']} warm!)" if m.get("warm_compiles") else ""),
        tol,
        "" if m["kind"] == "floor" else f"{m['objective_gap_max']:.1e}",
        "" if m["kind"] == "floor" else f"{m['kkt_max']:.1e}",
        "" if m["kind"] == "floor" else f"{m['mean_l0']:.1f}",
        "" if m["kind"] == "floor" else f"{m['recon_cos']:.4f}",
      )
    )
  widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
  line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
  subset = [f"{m['method']} {m['rows_timed']}" for m in record["methods"] if m.get("extrapolated")]
  foot = (
    f"* timed and evaluated on the first rows only ({', '.join(subset)}), time extrapolated to B={s['batch']}"
    if subset
    else "every method timed on every row"
  )
  lines = [head, line(cols), line(["-" * w for w in widths]), *map(line, rows), foot]
  pair = record.get("side_by_side")
  if pair:
    lines.append(
      f"side by side ({pair['rounds']} interleaved rounds, {pair['rows']} rows): {pair['method']} "
      f"{pair['solver_s'] * 1e3:.1f} ms, dense product {pair['dense_s'] * 1e3:.1f} ms, "
      f"{pair['ratio']:.1f}x (median of the rounds' ratios to the fastest of {pair['dense_calls']} "
      "products right after)"
    )
  return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: str) -> None:
  """Bars of time (log scale) per method and problem, the dense floor as a line; missed tolerance hatched."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(records), figsize=(5.5 * len(records), 4.2), squeeze=False)
  colors = {"conceptjax": "tab:blue", "peer": "tab:orange", "floor": "tab:gray"}
  for ax, rec in zip(axes[0], records, strict=True):
    ms = [m for m in rec["methods"] if "time_s" in m and "error" not in m]
    y = np.arange(len(ms))
    bars = ax.barh(y, [m["time_s"] for m in ms], color=[colors[m["kind"]] for m in ms])
    for bar, m in zip(bars, ms, strict=True):
      if m.get("reached_tolerance") is False:
        bar.set_hatch("//")
      if m.get("extrapolated"):
        bar.set_alpha(0.6)
      ax.text(
        bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {m['x_dense']:.3g}x", va="center", fontsize=7
      )
    ax.axvline(rec["dense_floor_s"], color="k", ls="--", lw=1)
    ax.axvline(10 * rec["dense_floor_s"], color="k", ls=":", lw=1)
    ax.set_yticks(y, [m["method"] + ("*" if m.get("extrapolated") else "") for m in ms])
    ax.set_xscale("log")
    ax.invert_yaxis()
    s = rec["spec"]
    ax.set_title(f"({s['name']}) {s['dictionary']} B={s['batch']} c={s['concepts']}", fontsize=9)
    ax.set_xlabel("seconds for the batch (-- dense product, : 10x)")
  fig.suptitle("non-negative lasso, time to tolerance (hatched: missed; * extrapolated)", fontsize=10)
  fig.tight_layout()
  with io.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m benchmarks.sparse_solvers", description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=sorted(PRESETS), default="main")
  p.add_argument("--out", default="workdirs/sparse_solvers", help="folder for sparse_solvers.json/.png")
  p.add_argument("--problems", default=None, help="comma list of problem names of the preset (a,b,c)")
  p.add_argument("--solvers", default=None, help="comma list of conceptjax solvers (default: all), or 'none'")
  p.add_argument("--peers", default=",".join(PEERS), help="comma list of peers, or 'none'")
  p.add_argument("--peer-rows", type=int, default=None, help="rows the peers solve (extrapolated to B)")
  p.add_argument("--subset-rows", type=int, default=None, help="rows the preset's slow solvers solve")
  p.add_argument("--batch", type=int, default=None, help="override B of every problem")
  p.add_argument("--concepts", type=int, default=None, help="override c of every problem")
  p.add_argument("--dim", type=int, default=None, help="override d of every problem")
  p.add_argument("--lam", type=float, default=None, help="override the l1 penalty")
  p.add_argument("--seed", type=int, default=None)
  p.add_argument("--max-iter", type=int, default=None, help="cap on every solver's iterations (a time cap)")
  p.add_argument("--tols", default="1e-5,1e-6,1e-7", help="solver tol tried in order until tolerance is met")
  p.add_argument("--repeats", type=int, default=None, help="warm calls timed per solver (median)")
  p.add_argument("--no-plot", action="store_true")
  return p.parse_args(argv)


def _csv(value: str | None) -> list[str] | None:
  return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  preset = PRESETS[args.preset]
  specs = list(preset["problems"])
  wanted = _csv(args.problems)
  if wanted:
    specs = [s for s in specs if s.name in wanted]
  overrides = {
    k: v
    for k, v in dict(
      batch=args.batch,
      concepts=args.concepts,
      dim=args.dim,
      lam=args.lam,
      seed=args.seed,
      peer_rows=args.peer_rows,
      subset_rows=args.subset_rows,
    ).items()
    if v is not None
  }
  specs = [dataclasses.replace(s, **overrides) for s in specs]
  peers = [] if args.peers.strip().lower() == "none" else _csv(args.peers)
  for peer in peers:
    if peer not in PEERS:
      raise SystemExit(f"unknown peer {peer!r}; known: {', '.join(PEERS)}")
  solvers = _solver_names(_csv(args.solvers))
  tols = [float(t) for t in _csv(args.tols)]
  repeats = args.repeats or preset["repeats"]
  t0 = time.perf_counter()
  log = lambda msg: print(f"{time.perf_counter() - t0:7.1f}s {msg}", file=sys.stderr, flush=True)

  load_before = os.getloadavg()
  records = []
  json_path = os.path.join(args.out, "sparse_solvers.json")
  for spec in specs:
    records.append(
      run_problem(
        spec, solvers=solvers, peers=peers, tols=tols, repeats=repeats, log=log, max_iter=args.max_iter
      )
    )
    print(format_table(records[-1]) + "\n", flush=True)
    report = {  # rewritten after every problem, so a long run keeps what it measured
      "benchmark": "sparse_solvers",
      "preset": args.preset,
      "command": "python -m benchmarks.sparse_solvers "
      + " ".join(argv if argv is not None else sys.argv[1:]),
      "criteria": {"objective_rtol": OBJECTIVE_RTOL, "kkt_tol": KKT_TOL, "solver_tols": tols},
      "max_iter": args.max_iter,
      "environment": benchmarking.environment(),
      "peer_versions": _peer_versions(peers),
      "load_average_before": load_before,
      "load_average_after": os.getloadavg(),
      "peak_rss_mb": benchmarking.peak_rss_mb(),
      "seconds": time.perf_counter() - t0,
      "complete": len(records) == len(specs),
      "problems": records,
    }
    io.write_json(json_path, report)
  if not args.no_plot:
    plot(records, os.path.join(args.out, "sparse_solvers.png"))
  print(f"wrote {json_path} ({time.perf_counter() - t0:.0f} s)")
  return 0


def _peer_versions(peers: Sequence[str]) -> dict[str, str | None]:
  out = {}
  for peer in peers:
    try:
      out[peer] = importlib.import_module(peer).__version__
    except ImportError:
      out[peer] = None
  return out


if __name__ == "__main__":
  sys.exit(main())
