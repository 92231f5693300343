"""CPU time of ``nonneg_lasso`` (working set) against one dense product, in one process.

On a shared machine wall times swing with the load; ``time.process_time`` (CPU seconds of this process,
all threads) is steadier, so this prints both. Same problems as ``benchmarks.sparse_solvers``.

Usage::

  python -m benchmarks.sparse_cputime --problem c   # (c): B=1024, c=37,445, d=512, coherent
  python -m benchmarks.sparse_cputime --problem b --preset main
  python -m benchmarks.sparse_cputime --problem b --preset main --phases   # + time of each host-loop call
  python -m benchmarks.sparse_cputime --problem b --preset main --profile workdirs/trace   # + time per XLA op
  python -m benchmarks.sparse_cputime --problem b --preset main --streams 1,2 --repeats 10   # threads A/B
  python -m benchmarks.sparse_cputime --problem b --preset main --top-k --repeats 15   # top_k A/B

``--phases`` then runs it once more timing every jitted call of ``nonneg_lasso``'s host-driven loop (each
goes through ``parallel.map_batched``; wall and CPU time, each call waited for with ``block_until_ready``,
so calls no longer overlap with the host's bookkeeping) and prints them in order.

``--profile DIR`` runs it once more under ``jax.profiler.trace`` (the trace is kept in DIR, for Perfetto or
TensorBoard) and prints the time of each kind of XLA operation summed over the run (``op_table``): which
kernels the time goes to (products, per-row Grams, Cholesky, ``top_k``, ...), where ``--phases`` says which
step of the iteration.

``--streams 1,2`` compares ``nonneg_lasso`` with its host loop capped at 1 and at 2 threads (row groups run
side by side on one CPU device, ``_api._working_set_streams``), interleaved with each other and with the
dense product in one process, ``--repeats`` rounds: median wall and CPU time of each, the streams the
solver actually used, and the largest objective difference to the first count's result.

``--top-k`` times ``jax.lax.top_k`` against the working set's ``_problem.top_k`` (two rounds on CPU) on the
scores ``z C^T`` of one thread's rows (half the batch), for the start's and the certificates' ``k`` (32 and
49), interleaved, ``--repeats`` rounds, and checks that both give the same values.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import resource
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import sparse_solvers as bench
from conceptjax import parallel, sparse
from conceptjax.sparse import _api
from conceptjax.sparse._problem import HIGHEST, top_k


def _timed(fn, repeats: int) -> tuple[float, float, object]:
  """(median CPU s, median wall s, last output) of ``repeats`` calls."""
  cpu, wall = [], []
  out = None
  for _ in range(repeats):
    c0, w0 = time.process_time(), time.perf_counter()
    out = jax.block_until_ready(fn())
    cpu.append(time.process_time() - c0)
    wall.append(time.perf_counter() - w0)
  return float(np.median(cpu)), float(np.median(wall)), out


def _phases(run) -> str:
  """Calls ``run()`` and returns a table of the time of each jitted call it made through
  ``parallel.map_batched`` (``nonneg_lasso``'s host loop makes every call that way)."""
  calls, orig = [], parallel.map_batched

  def timed(fn, batched, *args, **kwargs):
    c0, w0 = time.process_time(), time.perf_counter()
    out = jax.block_until_ready(orig(fn, batched, *args, **kwargs))
    name = getattr(getattr(fn, "func", fn), "__name__", "?")
    rows = jax.tree.leaves(batched)[0].shape[0]
    calls.append((name, rows, time.perf_counter() - w0, time.process_time() - c0))
    return out

  with mock.patch.object(parallel, "map_batched", timed):
    run()
  lines = [f"{'call':14s} {'rows':>5s} {'wall ms':>8s} {'CPU ms':>8s}"]
  lines += [f"{n:14s} {r:5d} {w * 1e3:8.1f} {c * 1e3:8.1f}" for n, r, w, c in calls]
  wall, cpu = (sum(c[i] for c in calls) * 1e3 for i in (2, 3))
  lines.append(f"{'sum':14s} {'':5s} {wall:8.1f} {cpu:8.1f}")
  return "\n".join(lines)


def op_table(trace_file: str | pathlib.Path) -> list[tuple[str, str, int, float]]:
  """[(jitted function, XLA operation, calls, total ms)], most time first, from a Perfetto trace
  (``perfetto_trace.json.gz``) written by ``jax.profiler.trace(..., create_perfetto_trace=True)``.

  Counts the complete events of XLA operations (those with an ``hlo_op``; host code, the thunk executor's
  and the runtime's waits have none), per HLO module (``jit__ws_certify`` -> ``_ws_certify``) and operation
  with numbered clones merged (``dot.6``, ``cond.3.clone`` -> ``dot``, ``cond``), and leaves out
  ``while``/``cond``/``call``, whose bodies' operations are counted themselves.
  """
  with gzip.open(trace_file, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  total, calls = collections.defaultdict(float), collections.Counter()  # by (module, operation)
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") != "X" or "hlo_op" not in args:
      continue
    name = re.sub(r"(\.(\d+|clone))+$", "", args["hlo_op"])
    if name in ("while", "cond", "conditional", "call"):
      continue
    key = (re.sub(r"^jit_", "", args.get("hlo_module", "?")), name)
    total[key] += e["dur"] / 1e3  # microseconds -> ms
    calls[key] += 1
  return sorted(((*k, calls[k], t) for k, t in total.items()), key=lambda r: -r[3])


def _profile(run, trace_dir: str, top: int = 15) -> str:
  """Calls ``run()`` under ``jax.profiler.trace`` (kept in ``trace_dir``) and returns ``op_table``'s first
  ``top`` rows as text, with the wall time of the call."""
  w0 = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    run()
  wall = (time.perf_counter() - w0) * 1e3
  traces = pathlib.Path(trace_dir).glob("plugins/profile/*/perfetto_trace.json.gz")
  trace = max(traces, key=lambda p: p.stat().st_mtime, default=None)
  if trace is None:
    raise FileNotFoundError(f"jax.profiler.trace wrote no perfetto_trace.json.gz under {trace_dir}")
  rows = op_table(trace)
  summed = sum(r[3] for r in rows) or 1.0
  lines = [f"{'jitted function':16s} {'XLA operation':30s} {'calls':>6s} {'ms':>8s} {'share':>6s}"]
  lines += [f"{m[:16]:16s} {n[:30]:30s} {c:6d} {t:8.1f} {t / summed:6.1%}" for m, n, c, t in rows[:top]]
  lines.append(f"{len(rows)} rows, {summed:.1f} ms in all (the call: {wall:.1f} ms wall, profiled)")
  lines.append(f"trace: {trace}")
  return "\n".join(lines)


def _compare_streams(solve, dense, counts: list[int], repeats: int) -> str:
  """Interleaved rounds of ``solve()`` with ``nonneg_lasso``'s host streams capped at each of ``counts``
  (``_api._host_streams``) and of ``dense()``; a table of medians (see the module docstring)."""
  rule, used = _api._host_streams, {}

  def capped(n):
    def streams(mesh, batch, _):
      used[n] = rule(mesh, batch, n)
      return used[n]

    return mock.patch.object(_api, "_host_streams", streams)

  results, times = {}, {n: [] for n in counts}
  for n in counts:  # first calls: compilation of each count's bucket shapes
    with capped(n):
      results[n] = jax.block_until_ready(solve())
  dense_times = []
  for _ in range(repeats):
    for n in counts:
      with capped(n):
        times[n].append(_timed(solve, 1)[:2])
    dense_times.append(_timed(dense, 1)[:2])
  d_cpu, d_wall = np.median(dense_times, axis=0)
  base = np.asarray(results[counts[0]].objective)
  head = ("streams", "used", "wall ms", "CPU ms", "x dense", "max |d obj|")
  lines = [" ".join(f"{h:>{w}s}" for h, w in zip(head, (7, 4, 8, 8, 7, 11), strict=True))]
  for n in counts:
    cpu, wall = np.median(times[n], axis=0)
    diff = float(np.max(np.abs(np.asarray(results[n].objective) - base)))
    lines.append(
      f"{n:7d} {used.get(n, 1):4d} {wall * 1e3:8.1f} {cpu * 1e3:8.1f} {wall / d_wall:7.1f} {diff:11.2e}"
    )
  lines.append(f"{'dense':>7s} {'':4s} {d_wall * 1e3:8.1f} {d_cpu * 1e3:8.1f} (median of {repeats} rounds)")
  return "\n".join(lines)


def _compare_top_k(scores: jax.Array, ks: list[int], repeats: int) -> str:
  """Median times of ``lax.top_k`` and ``_problem.top_k`` on ``scores`` [B, n] for each ``k``,
  interleaved; raises if their values differ."""
  lines = [f"{'k':>3s} {'rows x n':>14s} {'lax.top_k ms':>12s} {'two-round ms':>12s}"]
  for k in ks:
    fns = (jax.jit(lambda x, k=k: jax.lax.top_k(x, k)), jax.jit(lambda x, k=k: top_k(x, k)))
    (ref, _), (out, _) = (jax.block_until_ready(f(scores)) for f in fns)
    if not np.array_equal(np.asarray(ref), np.asarray(out)):
      raise AssertionError(f"top_k values differ from lax.top_k's at k={k}")
    times = [[], []]
    for _ in range(repeats):
      for t, f in zip(times, fns, strict=True):
        t.append(_timed(lambda f=f: f(scores), 1)[1])
    shape = f"{scores.shape[0]} x {scores.shape[1]}"
    lines.append(f"{k:3d} {shape:>14s} {np.median(times[0]) * 1e3:12.2f} {np.median(times[1]) * 1e3:12.2f}")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="full", choices=sorted(bench.PRESETS))
  p.add_argument("--problem", default="c")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--phases", action="store_true", help="then time each host-loop call of one more run")
  p.add_argument("--profile", metavar="DIR", help="then profile one more run into DIR; print time per XLA op")
  p.add_argument("--streams", metavar="N,M", help="then compare host-loop thread counts, interleaved")
  p.add_argument("--top-k", action="store_true", help="then time lax.top_k against the two-round top_k")
  args = p.parse_args(argv)
  spec = next(s for s in bench.PRESETS[args.preset]["problems"] if s.name == args.problem)
  c_np, z_np = bench.make_problem(spec)
  dictionary, z = jnp.asarray(c_np), jnp.asarray(z_np)
  dense = jax.jit(lambda z, c: jnp.matmul(z, c.T, precision=HIGHEST))
  jax.block_until_ready(dense(z, dictionary))
  d_cpu, d_wall, _ = _timed(lambda: dense(z, dictionary), 3)
  w0 = time.perf_counter()
  jax.block_until_ready(sparse.nonneg_lasso(dictionary, z, spec.lam))
  first = time.perf_counter() - w0
  cpu, wall, res = _timed(lambda: sparse.nonneg_lasso(dictionary, z, spec.lam), args.repeats)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  conv = float(np.mean(np.asarray(res.converged)))
  kkt = float(np.max(res.kkt_violation))
  iters = np.bincount(np.asarray(res.iterations))
  print(
    f"({spec.name}) B={z.shape[0]} c={dictionary.shape[0]} d={z.shape[1]}: working set {cpu:.2f} s CPU, "
    f"{wall:.2f} s wall (first call {first:.1f} s) | dense product {d_cpu:.3f} s CPU, {d_wall:.3f} s wall | "
    f"ratio {cpu / d_cpu:.1f}x CPU, {wall / d_wall:.1f}x wall | converged {conv:.4f}, "
    f"KKT max {kkt:.2e}, outer iterations {iters} "
    f"| peak RSS {rss:.0f} MiB"
  )
  if args.phases:
    print(_phases(lambda: sparse.nonneg_lasso(dictionary, z, spec.lam)))
  if args.profile:
    print(_profile(lambda: jax.block_until_ready(sparse.nonneg_lasso(dictionary, z, spec.lam)), args.profile))
  if args.streams:
    counts = [int(n) for n in args.streams.split(",")]
    solve = lambda: sparse.nonneg_lasso(dictionary, z, spec.lam)  # noqa: E731
    print(_compare_streams(solve, lambda: dense(z, dictionary), counts, args.repeats))
  if args.top_k:
    scores = dense(z[: max(z.shape[0] // 2, 1)], dictionary)  # one thread's rows
    k = sparse.WorkingSetConfig.working_size + 1
    print(_compare_top_k(scores, [min(sparse.WorkingSetConfig.first_size, k), k], args.repeats))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
