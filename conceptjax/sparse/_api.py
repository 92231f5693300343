"""``nonneg_lasso``: the public entry point (validation, solver and path choice, memory-bounded chunks,
sharding over devices)."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from conceptjax import parallel
from conceptjax.errors import InputError, check
from conceptjax.sparse import _device, _gram
from conceptjax.sparse import _working_set as ws
from conceptjax.sparse._admm import AdmmConfig, admm
from conceptjax.sparse._device import working_set_device
from conceptjax.sparse._fista import FistaConfig, fista
from conceptjax.sparse._omp import OmpConfig, omp
from conceptjax.sparse._problem import SCREEN_PRECISIONS, NonnegLassoResult, Problem
from conceptjax.sparse._target_l0 import TargetL0Config
from conceptjax.sparse._target_l0 import target_l0 as _search_l0
from conceptjax.sparse._working_set import WorkingSetConfig, working_set

SOLVERS = ("working_set", "fista", "admm", "omp")
LASSO_SOLVERS = ("working_set", "fista", "admm")  # the ones that take a penalty (OMP needs target_l0)
DEFAULT_MAX_ACTIVE = 64

_LASSO = {
  "working_set": (working_set, WorkingSetConfig),
  "fista": (fista, FistaConfig),
  "admm": (admm, AdmmConfig),
}


def choose_solver(num_concepts: int, dim: int, batch: int, target_l0: int | None = None) -> str:
  """The solver ``solver="auto"`` uses.

  The working set is the fastest in every configuration measured (B = 8-1024, c = 300-37,445, d = 32-512,
  Gaussian and coherent dictionaries): it needs 2-4 full products where FISTA and ADMM need hundreds, so
  it is always chosen; the arguments are kept so the rule can grow (e.g. an accelerator-specific choice).
  """
  del num_concepts, dim, batch, target_l0
  return "working_set"


@jax.jit
def _row_summary(a: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(first row with NaN/Inf or -1, first all-zero row or -1), computed where ``a`` lives, in two
  vectorised reductions (``x * 0`` is NaN exactly where ``x`` is NaN or +-Inf; half the time of
  ``isfinite`` + ``any`` on the [10,000, 512] benchmark dictionary)."""

  def first(bad):
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1)

  return first(jnp.isnan(jnp.sum(a * 0, axis=1))), first(jnp.max(jnp.abs(a), axis=1) == 0)


def _check_rows(summary, name: str, offset: int) -> None:
  """InputError naming the first bad row of a ``_row_summary`` (rows numbered from ``offset``)."""
  bad_value, zero = (int(i) for i in jax.device_get(summary))
  check(bad_value < 0, f"{name} row {offset + bad_value} contains NaN or Inf")
  check(zero < 0, f"{name} row {offset + zero} has zero norm")


def _validate(dictionary, embeddings, l1_penalty, solver, target_l0, tol, max_iter, max_active):
  """Boundary checks; returns (dictionary [c, d], embeddings [B, d], l1_penalty [B] numpy). The rows of
  the embeddings are checked for NaN/Inf and zero norm chunk by chunk (``_chunk_results``)."""
  check(
    solver == "auto" or solver in SOLVERS,
    f"unknown solver {solver!r}; known solvers: {', '.join(('auto',) + SOLVERS)}",
  )
  dictionary = dictionary if isinstance(dictionary, jax.Array) else np.asarray(dictionary)
  embeddings = embeddings if isinstance(embeddings, jax.Array) else np.asarray(embeddings)
  check(dictionary.ndim == 2, f"dictionary must be 2-D (c, d), got shape {dictionary.shape}")
  check(dictionary.shape[0] > 0 and dictionary.shape[1] > 0, f"empty dictionary: shape {dictionary.shape}")
  if embeddings.ndim == 1:
    embeddings = embeddings[None, :]
  check(embeddings.ndim == 2, f"embeddings must be 2-D (B, d), got shape {embeddings.shape}")
  check(embeddings.shape[0] > 0, f"no embeddings: shape {embeddings.shape}")
  check(
    embeddings.shape[1] == dictionary.shape[1],
    f"width mismatch: embeddings {embeddings.shape} vs dictionary {dictionary.shape} (last axes differ)",
  )
  for name, arr in (("dictionary", dictionary), ("embeddings", embeddings)):
    check(
      jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer),
      f"{name} must be numeric, got dtype {arr.dtype}",
    )
  _check_rows(_row_summary(jnp.asarray(dictionary)), "dictionary", 0)  # the embeddings: chunk by chunk
  b = embeddings.shape[0]
  lam = np.asarray(l1_penalty, dtype=np.float64)
  check(lam.ndim == 0 or lam.shape == (b,), f"l1_penalty must be a scalar or shape ({b},), got {lam.shape}")
  lam = np.broadcast_to(lam, (b,))
  bad = ~(np.isfinite(lam) & (lam >= 0))
  check(
    not bad.any(),
    f"l1_penalty must be finite and >= 0, got {float(lam[np.argmax(bad)])!r} (row {int(np.argmax(bad))})",
  )
  c, d = dictionary.shape
  if solver == "omp":
    check(target_l0 is not None, "solver='omp' needs target_l0 (the number of atoms per row)")
  if target_l0 is not None:
    check(
      isinstance(target_l0, int | np.integer) and 1 <= target_l0 <= min(c, d),
      f"target_l0 must be an integer in [1, min(c, d) = {min(c, d)}], got {target_l0!r}",
    )
  check(np.isfinite(tol) and tol > 0, f"tol must be finite and > 0, got {tol!r}")
  check(max_iter is None or int(max_iter) >= 1, f"max_iter must be >= 1, got {max_iter!r}")
  check(max_active is None or int(max_active) >= 1, f"max_active must be >= 1, got {max_active!r}")
  return dictionary, embeddings, lam


@functools.partial(jax.jit, static_argnames=("solver", "config"))
def _solve(embeddings, l1_penalty, dictionary, *, solver, config):
  return solver(Problem(dictionary, embeddings, l1_penalty), config)


def _run(solver, config, dictionary, embeddings, lam, mesh) -> NonnegLassoResult:
  fn = functools.partial(_solve, solver=solver, config=config)
  res = parallel.map_batched(fn, (embeddings, lam), (dictionary,), mesh=mesh)
  return res._replace(num_concepts=dictionary.shape[0])


@functools.partial(jax.jit, static_argnames=("config",))
def _ws_start(embeddings, l1_penalty, dictionary, *, config):
  return ws.initial_state(Problem(dictionary, embeddings, l1_penalty), config, config.first_size)


@functools.partial(jax.jit, static_argnames=("config", "warm"))
def _ws_warm(embeddings, l1_penalty, indices, weights, dictionary, *, config, warm=True):
  """(small problems [B], w [B, K] after the warm active-set steps, ok [B]: the small problem is solved,
  atoms [B, K, d] of the candidates, passed on to ``_ws_certify`` instead of gathered again).

  ``warm=False`` skips the active-set steps (every row then goes to the restarts)."""
  atoms, qp = ws.restricted_qp(Problem(dictionary, embeddings, l1_penalty), indices)
  tol = ws.inner_tol(config, embeddings.dtype)
  if not warm:
    return qp, weights, jnp.zeros(weights.shape[:1], bool), atoms
  w, _ = _gram.warm_phase(qp, weights, tol=tol, warm_iter=config.warm_iter, serial=config.serial_lapack)
  return qp, w, _gram.qp_kkt(qp, w) <= tol, atoms


@functools.partial(jax.jit, static_argnames=("config",))
def _ws_cold(rows, w, qp, *, config):
  """[B, K] solution of the small problems ``rows`` [B] of ``qp`` (warm start ``w`` [B, K] failed): the
  restarts of ``_gram.cold_phase`` (projected gradient, then interior point where needed), each polished
  by active-set steps."""
  qp = jax.tree.map(lambda a: a[rows], qp)
  b = w.shape[0]
  w, _ = _gram.cold_phase(
    qp,
    w,
    jnp.ones((b,), bool),
    jnp.zeros((b,), jnp.int32),
    tol=ws.inner_tol(config, w.dtype),
    max_iter=config.inner_max_iter,
    ipm_iter=config.ipm_iter,
    pg_iter=config.pg_iter,
    polish_iter=config.polish_iter,
    serial=config.serial_lapack,
  )
  return w


@functools.partial(jax.jit, static_argnames=("config",))
def _ws_rough(rows, qp, *, config):
  """[B, K] rough solution (``_gram.rough_solve``) of the small problems ``rows`` [B] of ``qp``."""
  qp = jax.tree.map(lambda a: a[rows], qp)
  return _gram.rough_solve(qp, iters=config.rough_iter)


@functools.partial(jax.jit, static_argnames=("config",))
def _ws_certify(embeddings, l1_penalty, indices, w, atoms, dictionary, *, config):
  return ws.certify(Problem(dictionary, embeddings, l1_penalty), indices, w, config, atoms)


@functools.partial(jax.jit, static_argnames=("config",))
def _ws_result(embeddings, l1_penalty, state, iterations, dictionary, *, config):
  return ws.state_result(Problem(dictionary, embeddings, l1_penalty), state, iterations, config)


def _bucket(rows: np.ndarray, total: int, factor: int = 4) -> np.ndarray:
  """``rows`` padded (repeating its last row) to ``total / factor^j`` rows (at least 8) for the largest
  ``j`` that holds them: a few static shapes, not one compilation per count of unconverged rows."""
  size = total
  while size // factor >= max(len(rows), 8):
    size //= factor
  return np.concatenate([rows, np.full(size - len(rows), rows[-1])])


def _ws_outer_step(config, dictionary, embeddings, lam, state, mesh, warm=True) -> ws.WorkingSetState:
  """``ws.outer_step`` on a bucket of rows, with the small problems' restarts (``_gram.cold_phase``) run on
  the rows whose warm start failed only (gathered into a bucket of their own). Of those, the rows whose
  violators overflowed the candidates (``state.overflow``) get a rough solve instead (``_gram.rough_solve``,
  unless ``config.rough_iter`` is 0): they almost never certify at this iteration, and the candidates
  picked from the rough solution are as good.

  ``embeddings`` and ``lam`` are host (numpy) arrays: indexing them costs nothing, where every eager
  gather from a device array costs a few milliseconds of dispatch on CPU."""
  sub = (embeddings, lam)
  warm_fn = functools.partial(_ws_warm, config=config, warm=warm)
  qp, w, ok, atoms = parallel.map_batched(
    warm_fn, (*sub, state.indices, state.weights), (dictionary,), mesh=mesh
  )
  w = np.array(w)
  failed = ~np.asarray(ok)
  rough = failed & state.overflow & (config.rough_iter > 0)
  cold = np.nonzero(failed & ~rough)[0]
  if cold.size:
    rows = _bucket(cold, len(w), factor=2)
    part = parallel.map_batched(functools.partial(_ws_cold, config=config), (rows, w[rows]), (qp,), mesh=mesh)
    w[cold] = np.asarray(part)[: cold.size]
  rough = np.nonzero(rough)[0]
  if rough.size:
    rows = _bucket(rough, len(w), factor=2)
    part = parallel.map_batched(functools.partial(_ws_rough, config=config), (rows,), (qp,), mesh=mesh)
    w[rough] = np.asarray(part)[: rough.size]
  certify = functools.partial(_ws_certify, config=config)
  return parallel.map_batched(certify, (*sub, state.indices, w, atoms), (dictionary,), mesh=mesh)


@functools.partial(jax.jit, static_argnames=("config",))
def _ws_step(embeddings, l1_penalty, state, dictionary, *, config):
  return ws.outer_step(Problem(dictionary, embeddings, l1_penalty), state, config)


# Buckets of fewer rows run the fused ``ws.outer_step`` (one executable): splitting off the restarts pays
# off on large batches only, and each split piece is one more compilation.
_SPLIT_MIN_ROWS = 64


def _working_set_compacted(
  config, dictionary, embeddings, lam, mesh, split_min_rows: int = _SPLIT_MIN_ROWS
) -> NonnegLassoResult:
  """The working-set iteration driven from the host, each outer iteration on the unconverged rows only.

  A batched loop costs as much per iteration as its slowest row needs; here the rows still running are
  gathered into a smaller bucket (``_bucket``) once enough have converged (on the Gaussian benchmark most
  converge after the first or second iteration; on the coherent one most after the third, the rest after
  the fourth), the finished rows' states are kept on the host, and within an iteration the small problems'
  restarts run on the rows that need them only (``_ws_outer_step``; buckets under ``split_min_rows``
  rows run the fused ``ws.outer_step`` instead). The first iteration solves on
  ``config.first_size`` candidates. Rows are independent, so each row follows ``ws.outer_step``'s
  iteration (up to the extra active-set step a warm-solved row takes inside the batched solve, and the
  rough solve of rows whose violators overflowed the candidates, see ``_ws_outer_step``).
  """
  total = embeddings.shape[0]
  state = parallel.map_batched(
    functools.partial(_ws_start, config=config), (embeddings, lam), (dictionary,), mesh=mesh
  )
  state = jax.tree.map(np.array, state)
  embeddings, lam = np.asarray(embeddings), np.asarray(lam)  # rows are picked on the host from here on
  iterations = np.zeros(total, np.int32)
  todo = np.arange(total)
  for it in range(config.max_iter):
    rows = _bucket(todo, total, factor=2)
    sub = ws.WorkingSetState(*(a[rows] for a in state))
    # Right after the first iteration on first_size candidates most supports change (97% of the warm
    # starts fail on the coherent benchmark): that iteration goes straight to the restarts.
    warm = not (it == 1 and 0 < config.first_size < config.working_size)
    if len(rows) >= split_min_rows:
      new = _ws_outer_step(config, dictionary, embeddings[rows], lam[rows], sub, mesh, warm=warm)
    else:
      step = functools.partial(_ws_step, config=config)
      new = parallel.map_batched(step, (embeddings[rows], lam[rows], sub), (dictionary,), mesh=mesh)
    if it == 0:  # every row ran (rows == arange(total)); the candidates grow from first_size to K
      state = jax.tree.map(np.array, new)
    for a, b in zip(state, new, strict=True):
      a[todo] = np.asarray(b)[: len(todo)]
    iterations[todo] += 1
    todo = todo[~ws.stopped(ws.WorkingSetState(*(a[todo] for a in state)), config.tol)]
    if todo.size == 0:
      break
  fn = functools.partial(_ws_result, config=config)
  res = parallel.map_batched(fn, (embeddings, lam, state, iterations), (dictionary,), mesh=mesh)
  return res._replace(num_concepts=dictionary.shape[0])


def _mesh_devices(mesh: Mesh | None) -> list:
  """The devices the batch is sharded over (``mesh``, default ``parallel.data_mesh()``)."""
  return list((parallel.data_mesh() if mesh is None else mesh).devices.flat)


def _host_streams(mesh: Mesh | None, batch: int, streams: int) -> int:
  """How many row groups ``_working_set_streams`` runs side by side: ``streams`` on a mesh of one CPU
  device, as long as every group keeps at least ``_SPLIT_MIN_ROWS`` rows; else 1 (several devices already
  run side by side, and an accelerator runs its operations concurrently itself)."""
  devices = _mesh_devices(mesh)
  if len(devices) != 1 or devices[0].platform != "cpu":
    return 1
  return max(1, min(streams, batch // _SPLIT_MIN_ROWS))


def _working_set_streams(config, dictionary, embeddings, lam, mesh) -> NonnegLassoResult:
  """``_working_set_compacted`` on ``_host_streams`` contiguous groups of rows, each in its own thread.

  XLA's CPU runtime runs the operations of one executable one at a time, and only the full products use
  every core: the per-row Grams, ``top_k`` and the small solves (about 60% of the time on the coherent
  benchmark problem) run on one. Two host loops on two halves of the batch keep both cores busy: on 2
  cores, one thread against two, (b) 241 -> 210 ms, (a) 119 -> 111 ms, (c) 3.32 -> 2.76 s
  (``python -m benchmarks.sparse_cputime --preset main --problem b --repeats 10 --streams 1,2``, thread
  counts interleaved in one process; docs/sparse.md and benchmarks/results/HISTORY.md). Rows are
  independent, so the result
  is the single loop's, up to rounding. The threads feed LAPACK one matrix at a time (``serial_lapack``):
  jaxlib's batched kernels wait for the XLA thread pool from inside it and deadlock when two executables
  call them at once.
  """
  streams = _host_streams(mesh, embeddings.shape[0], config.streams)
  if streams == 1:
    return _working_set_compacted(config, dictionary, embeddings, lam, mesh)
  config = dataclasses.replace(config, serial_lapack=True)
  embeddings, lam = np.asarray(embeddings), np.asarray(lam)
  groups = np.array_split(np.arange(embeddings.shape[0]), streams)

  def solve(rows):
    return _working_set_compacted(config, dictionary, embeddings[rows], lam[rows], mesh)

  with ThreadPoolExecutor(streams) as pool:
    parts = list(pool.map(solve, groups))
  fields = (jnp.concatenate(f) for f in zip(*(p[:-1] for p in parts), strict=True))
  return NonnegLassoResult(*fields, num_concepts=dictionary.shape[0])


def _serial_lapack(mesh: Mesh | None) -> bool:
  """Whether batched LAPACK calls must run one matrix at a time: a mesh of several CPU devices (jaxlib's
  batched CPU kernels can deadlock there, see ``_gram.cholesky``)."""
  devices = _mesh_devices(mesh)
  return len(devices) > 1 and any(d.platform == "cpu" for d in devices)


def _merge_rows(full: NonnegLassoResult, part: NonnegLassoResult, rows: np.ndarray) -> NonnegLassoResult:
  def put(a, p):
    if np.ndim(a) == 0:  # num_concepts
      return a
    return jnp.asarray(a).at[rows].set(p)

  return jax.tree.map(put, full, part)


PATHS = ("auto", "host", "device")
DEFAULT_CPU_BUDGET = 1 << 30  # bytes of per-row working memory of one chunk, all CPU devices together
DEFAULT_DEVICE_BUDGET = 8 << 30  # bytes per GPU/TPU device (at most a quarter of its memory)


def choose_path(mesh: Mesh | None = None) -> str:
  """The working-set driver ``path="auto"`` uses: ``"device"`` on GPUs and TPUs, ``"host"`` on CPUs.

  The host path (``_working_set_streams``) copies the state to the host after every outer iteration to
  solve the unconverged rows only, in two threads on one CPU device: the fastest on a 2-core CPU. On an
  accelerator each of those copies is a synchronisation and each new bucket shape a compilation, so there
  the device path (``_device.working_set_device``: whole iteration and retries in one program per chunk)
  runs instead."""
  return "host" if _mesh_devices(mesh)[0].platform == "cpu" else "device"


def default_memory_budget(mesh: Mesh | None = None) -> int:
  """Bytes of per-row working memory one chunk may use: ``DEFAULT_CPU_BUDGET`` (1 GiB) on CPU devices
  (they share the host's memory), else ``DEFAULT_DEVICE_BUDGET`` (8 GiB) per device, at most a quarter
  of a device's memory where ``memory_stats()`` reports it."""
  devices = _mesh_devices(mesh)
  if devices[0].platform == "cpu":
    return DEFAULT_CPU_BUDGET
  per = DEFAULT_DEVICE_BUDGET
  try:
    limit = (devices[0].memory_stats() or {}).get("bytes_limit")
  except Exception:  # noqa: BLE001  (not every backend implements memory_stats)
    limit = None
  if limit:
    per = min(per, int(limit) // 4)
  return per * len(devices)


def row_bytes(solver: str, num_concepts: int, dim: int, working_size: int, itemsize: int = 4) -> int:
  """Estimated working memory of one row of a chunk, in bytes (the dictionary and outputs come on top).

  Working set (either path; target-l0 search twice over): ``2 c + 2 K d + 8 K^2 + 4 d`` floats, for the
  [c] gradient and its top-k, the [K, d] candidate atoms and the [K, K] Grams and factors of the small
  problems. XLA's own buffer analysis of the device path's program on CPU stays below it (about
  ``1.05 c + K d + 6 K^2`` floats per row for c = 2,000-8,000, d = 64-256, K = 48;
  ``tests/sparse/test_sparse_device.py``). FISTA and ADMM keep several dense [c] iterates per row:
  ``8 c + 4 d``; OMP: ``2 c + 2 K d + 4 d``.
  """
  c, d, k = num_concepts, dim, working_size
  if solver in ("fista", "admm"):
    floats = 8 * c + 4 * d
  elif solver == "omp":
    floats = 2 * c + 2 * k * d + 4 * d
  else:
    floats = 2 * c + 2 * k * d + 8 * k * k + 4 * d
  return itemsize * floats


def chunk_rows(total: int, per_row: int, budget: int, devices: int) -> int:
  """Rows per chunk: as many as ``budget`` bytes hold at ``per_row`` bytes each (a multiple of the device
  count where that is at least one row per device), at most ``total``.

  Raises:
    InputError: the budget does not hold one row.
  """
  rows = int(budget) // per_row
  check(
    rows >= 1,
    f"memory_budget={int(budget)} bytes is too small for one row (about {per_row} bytes per row here)",
  )
  if rows >= total:
    return total
  return rows - rows % devices if rows >= devices else rows


@functools.partial(jax.jit, static_argnames=("config", "mesh"))
def _device_solve(embeddings, l1_penalty, dictionary, *, config, mesh):
  """``working_set_device`` on each device's rows (``shard_map``: no communication, every device's loops
  run on their own rows only)."""

  def local(z, lam, c):
    return tuple(working_set_device(Problem(c, z, lam), config)[:-1])

  rows = P(parallel.DATA_AXIS)
  out = jax.shard_map(local, mesh=mesh, in_specs=(rows, rows, P()), out_specs=rows, check_vma=False)(
    embeddings, l1_penalty, dictionary
  )
  return NonnegLassoResult(*out, num_concepts=dictionary.shape[0])


class _Plan:
  """How one call solves a chunk: ``solve(z, lam)`` [chunk] device arrays -> result (asynchronous where
  the path allows), ``finish(result, z, lam)`` -> result (host-side retries), ``early``: check the chunk's
  rows before solving it (the host path iterates on them from the host)."""

  def __init__(self, solve, finish, early):
    self.solve, self.finish, self.early = solve, finish, early


def _plan(solver, path, config, dictionary, mesh, width) -> _Plan:
  """The per-chunk solve of ``nonneg_lasso`` (after validation, ``config`` built)."""
  if solver == "omp":
    return _Plan(lambda z, lam: _run(omp, config, dictionary, z, jnp.zeros_like(lam), mesh), None, False)
  if isinstance(config, TargetL0Config):
    solve = lambda z, lam: _run(_search_l0, config, dictionary, z, lam, mesh)  # noqa: E731
    finish = _retry_finish(config, dictionary, mesh) if config.solver is working_set else None
    return _Plan(solve, finish, False)
  if solver != "working_set":
    return _Plan(lambda z, lam: _run(_LASSO[solver][0], config, dictionary, z, lam, mesh), None, False)
  if path == "host":
    solve = lambda z, lam: _working_set_streams(config, dictionary, z, lam, mesh)  # noqa: E731
    return _Plan(solve, _retry_finish(config, dictionary, mesh), True)
  mesh = parallel.data_mesh() if mesh is None else mesh
  config = dataclasses.replace(config, device_iter=min(config.device_iter, config.max_iter))
  grown = _grow(config, _device.retry_size(dictionary.shape[0], config))  # rows past K2: host retry
  solve = lambda z, lam: _device_solve(z, lam, dictionary, config=config, mesh=mesh)  # noqa: E731
  return _Plan(solve, _retry_finish(grown, dictionary, mesh), False)


def _retry_finish(config, dictionary, mesh):
  return lambda res, z, lam: _retry_stuck(res, config, dictionary, z, lam, mesh)


def _chunk_results(
  plan: _Plan, embeddings, lam, rows: int, dtype, mesh, unpad: bool = True
) -> Iterator[tuple[int, int, Any]]:
  """Yields ``(start, n, result)`` for the rows ``[start, start + n)`` chunk by chunk, ``rows`` rows a
  chunk (the last one padded with copies of its last row, so every chunk has the same shape and each
  program compiles once); ``unpad=False`` leaves the padded rows in the result (the caller cuts them).

  The next chunk's host-to-device transfer is issued right after the current chunk's solve is dispatched,
  and the previous chunk's result is waited for only then (JAX dispatches asynchronously): on the device
  path, transfers, the device's work and the host's collection of results overlap.
  """
  n_rows = embeddings.shape[0]
  mesh = parallel.data_mesh() if mesh is None else mesh

  def put(start):
    stop = min(start + rows, n_rows)
    z, lam_ = embeddings[start:stop], lam[start:stop]
    z = z.astype(dtype) if isinstance(z, jax.Array) else np.asarray(z, dtype)
    (z, lam_), _ = parallel.pad_to_multiple((z, np.asarray(lam_, dtype)), rows)
    (z, lam_), _ = parallel.shard_batch((z, lam_), mesh)
    return start, stop - start, z, lam_

  def collect(start, n, z, lam_, summary, out):
    _check_rows(summary, "embeddings", start)
    if plan.finish is not None:
      out = plan.finish(out, z, lam_)
    return start, n, parallel.unpad(out, n) if unpad else out

  pending = None
  nxt = put(0)
  while nxt is not None:
    start, n, z, lam_ = nxt
    summary = _row_summary(z)
    if plan.early:
      _check_rows(summary, "embeddings", start)
    out = plan.solve(z, lam_)
    nxt = put(start + rows) if start + rows < n_rows else None  # issued before any result is waited for
    if pending is not None:
      yield collect(*pending)
    pending = (start, n, z, lam_, summary, out)
  yield collect(*pending)


def _prepare(
  dictionary, embeddings, l1_penalty, solver, path, target_l0, tol, max_iter, max_active, mesh, memory_budget,
  screen_precision,
):
  """Validation, solver and path choice, config and chunk size: (plan, embeddings, lam, rows, dtype,
  width)."""
  check(path in PATHS, f"unknown path {path!r}; known paths: {', '.join(PATHS)}")
  check(
    screen_precision in SCREEN_PRECISIONS,
    f"unknown screen_precision {screen_precision!r}; known: {', '.join(SCREEN_PRECISIONS)}",
  )
  dictionary, embeddings, lam = _validate(
    dictionary, embeddings, l1_penalty, solver, target_l0, tol, max_iter, max_active
  )
  c, d = dictionary.shape
  dtype = jax.dtypes.canonicalize_dtype(
    jnp.promote_types(jnp.result_type(dictionary, embeddings), jnp.float32)
  )
  place = parallel.data_mesh() if mesh is None else mesh
  check(
    not parallel.spans_processes(place),
    "nonneg_lasso needs a mesh of this process's devices (its loops run as often as each process's rows "
    "need, so processes sharing one mesh would wait for each other): pass mesh=parallel.local_mesh()",
  )
  dictionary = parallel.replicate(jnp.asarray(dictionary, dtype), place)
  if solver == "auto":
    solver = choose_solver(c, d, embeddings.shape[0], target_l0)
  if path == "auto":
    path = choose_path(mesh)
  iters = {} if max_iter is None else {"max_iter": int(max_iter)}
  serial = _serial_lapack(mesh)
  width = DEFAULT_MAX_ACTIVE if max_active is None else int(max_active)
  if target_l0 is not None:
    width = max(width, int(target_l0) + 1)
  width = min(width, c)
  # the working set solves on fewer candidates than the output width (see WorkingSetConfig); the target-l0
  # search keeps K = width (48 was measured on the plain lasso only)
  size = width if target_l0 is not None else min(width, WorkingSetConfig.working_size)
  if solver == "omp":
    config = OmpConfig(n_atoms=int(target_l0), serial_lapack=serial)
    size = int(target_l0)
  else:
    fn, config_cls = _LASSO[solver]
    extra = {}
    if solver == "working_set":
      extra = {"working_size": size, "serial_lapack": serial, "screen_precision": screen_precision}
    if target_l0 is None:
      config = config_cls(max_active=width, tol=tol, **extra, **iters)
    else:
      inner = config_cls(max_active=width, tol=tol, **extra)
      config = TargetL0Config(n_atoms=int(target_l0), solver=fn, solver_config=inner, **iters)
  per_row = row_bytes(solver, c, d, size, jnp.dtype(dtype).itemsize) * (1 if target_l0 is None else 2)
  budget = default_memory_budget(mesh) if memory_budget is None else memory_budget
  check(np.isfinite(budget) and budget > 0, f"memory_budget must be > 0 bytes, got {memory_budget!r}")
  rows = chunk_rows(embeddings.shape[0], per_row, budget, len(_mesh_devices(mesh)))
  return _plan(solver, path, config, dictionary, mesh, width), embeddings, lam, rows, dtype, width


def nonneg_lasso_chunks(
  dictionary: Any,
  embeddings: Any,
  l1_penalty: Any = 0.25,
  *,
  solver: str = "auto",
  path: str = "auto",
  target_l0: int | None = None,
  tol: float = 1e-5,
  max_iter: int | None = None,
  max_active: int | None = None,
  mesh: Mesh | None = None,
  memory_budget: int | None = None,
  screen_precision: str = "highest",
) -> Iterator[tuple[int, NonnegLassoResult]]:
  """:func:`nonneg_lasso` one chunk at a time: yields ``(start, result)`` for the rows ``[start, start +
  len(result.l0))``, in order, so that a caller can write each chunk out and keep nothing [N]-sized.

  Same arguments as :func:`nonneg_lasso` (validated before the first chunk is solved; a bad embedding row
  raises when its chunk is reached). Results are the solver's arrays (on the devices).
  """
  plan, embeddings, lam, rows, dtype, _ = _prepare(
    dictionary, embeddings, l1_penalty, solver, path, target_l0, tol, max_iter, max_active, mesh,
    memory_budget, screen_precision,
  )
  return ((start, part) for start, _, part in _chunk_results(plan, embeddings, lam, rows, dtype, mesh))


def nonneg_lasso(
  dictionary: Any,
  embeddings: Any,
  l1_penalty: Any = 0.25,
  *,
  solver: str = "auto",
  path: str = "auto",
  target_l0: int | None = None,
  tol: float = 1e-5,
  max_iter: int | None = None,
  max_active: int | None = None,
  mesh: Mesh | None = None,
  memory_budget: int | None = None,
  screen_precision: str = "highest",
) -> NonnegLassoResult:
  """Non-negative sparse codes of a batch: ``min_{w >= 0} ||w C - z||^2 + lam ||w||_1`` per row.

  Which path runs where (the working set, ``path="auto"``, ``choose_path``): on CPUs the host path, a loop
  driven from the host that copies the state back after every outer iteration to solve the unconverged rows
  only (two threads on one CPU device): the fastest there. On GPUs and TPUs the device path
  (``conceptjax.sparse._device``): the whole outer iteration, and the retry of slow or stuck rows on a wider
  working set, in one program per chunk, with static shapes (each program compiles once) and no host round
  trip. Either can be chosen on any platform; both certify every row on all concepts. FISTA, ADMM, OMP and
  the target-l0 search run in one program per chunk on any path.

  Memory: the rows are solved in chunks of a fixed size, as many as ``memory_budget`` bytes of working
  memory hold (``row_bytes``: about ``4 (2 c + 2 K d + 8 K^2)`` bytes a row for the working set); the last
  chunk is padded to the same size. No [N, c] array is built. The next chunk's transfer to the devices is
  issued before the current chunk's result is waited for. :func:`nonneg_lasso_chunks` yields the chunks
  one by one instead of assembling them.

  Args:
    dictionary: [c, d] concept rows ``C`` (SpLiCE: unit-norm, mean-centred).
    embeddings: [B, d] (or [d]) targets ``z``, numpy (moved to the devices chunk by chunk) or a jax array.
    l1_penalty: ``lam``, scalar or [B] (ignored with ``target_l0``).
    solver: ``"auto"`` (= ``choose_solver``: the working set), one of ``SOLVERS``. ``"omp"`` needs
      ``target_l0`` and solves the fixed-l0 non-negative least-squares problem instead (no penalty).
    path: the working set's driver: ``"auto"`` (``choose_path``), ``"host"`` or ``"device"`` (above).
    target_l0: k. With a lasso solver, search the penalty per row so that ~k concepts are active (the chosen
      penalty is in ``result.l1_penalty``); with ``"omp"``, select exactly k atoms greedily.
    tol: KKT tolerance (``result.kkt_violation``, see ``conceptjax.sparse._problem``).
    max_iter: cap on the solver's main iterations (default: the solver config's).
    max_active: k, width of ``result.indices``/``values`` (default 64, at least ``target_l0 + 1``, at most
      c; OMP: ``target_l0``). A row with more active concepts keeps its k largest weights, with a warning
      (``objective``, ``kkt_violation`` and ``l0`` still describe its whole solution). The working set
      solves on ``min(k, 48)`` candidates per row (``k`` with ``target_l0``); a row whose support fills
      them is solved again with twice as many.
    mesh: device mesh for the batch (default: all devices, ``parallel.data_mesh()``).
    memory_budget: bytes of per-row working memory one chunk may use over all devices (default
      ``default_memory_budget``: 1 GiB on CPU, 8 GiB per GPU/TPU device).
    screen_precision: the working set's full products: ``"highest"`` (float32, HIGHEST: exact
      certificates), ``"default"`` (TF32 on NVIDIA GPUs, bf16 on TPUs) or ``"bfloat16"``. With the last
      two the fast product only screens (picks candidates); the certificate is recomputed in float32 at
      HIGHEST on the support and the most violating concepts and bounded, by the screen's proven rounding
      error, on the others (``WorkingSetConfig.screen_precision``, ``_problem.screen_error``): a row is
      reported converged only when that float32 bound is within ``tol``.

  Returns:
    NonnegLassoResult (indices padded with -1). float32 unless x64 is on and an input is float64. With one
    chunk the fields are the devices' arrays; with several they are assembled in host (numpy) arrays.

  Raises:
    InputError: one line naming the bad row, shape or value, or a memory budget too small for one row.
  """
  plan, embeddings, lam, rows, dtype, width = _prepare(
    dictionary, embeddings, l1_penalty, solver, path, target_l0, tol, max_iter, max_active, mesh,
    memory_budget, screen_precision,
  )
  total = embeddings.shape[0]
  res, host = None, None
  for start, n, part in _chunk_results(plan, embeddings, lam, rows, dtype, mesh, unpad=rows >= total):
    if rows >= total:
      res = part
      break
    if host is None:
      host = [np.empty((total, *np.shape(a)[1:]), np.asarray(a).dtype) for a in part[:-1]]
    for dst, src in zip(host, part[:-1], strict=True):
      dst[start : start + n] = np.asarray(src)[:n]
    res = NonnegLassoResult(*host, num_concepts=part.num_concepts)
  _warn_if_truncated(res, width)
  return res


def _warn_if_truncated(res: NonnegLassoResult, width: int) -> None:
  """Warns when a row's solution has more non-zeros than ``indices``/``values`` can hold."""
  l0 = np.asarray(res.l0)
  wide = l0 > width
  if wide.any():
    warnings.warn(
      f"{int(wide.sum())} of {l0.size} rows have more active concepts than max_active={width} (up to "
      f"{int(l0.max())}): indices/values keep the {width} largest weights, while objective, kkt_violation "
      f"and l0 describe the whole solution; pass max_active >= {int(l0.max())} to keep them all",
      stacklevel=3,
    )


def _grow(config: Any, size: int) -> Any:
  if isinstance(config, TargetL0Config):
    return dataclasses.replace(config, solver_config=_grow(config.solver_config, size))
  return dataclasses.replace(config, working_size=size)


def _working_size(config: Any) -> int:
  return _working_size(config.solver_config) if isinstance(config, TargetL0Config) else config.working_size


def _retry_stuck(res, config, dictionary, embeddings, lam, mesh) -> NonnegLassoResult:
  """Re-solves rows whose support filled the working set, with twice as many candidates (up to c)."""
  c = dictionary.shape[0]
  fn = _search_l0 if isinstance(config, TargetL0Config) else working_set
  while True:
    size = _working_size(config)
    stuck = np.nonzero(~np.asarray(res.converged) & (np.asarray(res.l0) >= size))[0]
    if stuck.size == 0 or size >= c:
      return res
    config = _grow(config, min(2 * size, c))
    rows = _bucket(stuck, embeddings.shape[0], factor=2)  # a few shapes, not one per count
    part = _run(fn, config, dictionary, embeddings[rows], lam[rows], mesh)
    res = _merge_rows(res, parallel.unpad(part, stuck.size), stuck)


__all__ = [
  "LASSO_SOLVERS",
  "PATHS",
  "SOLVERS",
  "InputError",
  "choose_path",
  "choose_solver",
  "default_memory_budget",
  "nonneg_lasso",
  "nonneg_lasso_chunks",
  "row_bytes",
]
