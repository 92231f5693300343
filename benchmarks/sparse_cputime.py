"""CPU time of ``nonneg_lasso`` (working set) against one dense product, in one process.

On a shared machine wall times swing with the load; ``time.process_time`` (CPU seconds of this process,
all threads) is steadier, so this prints both. Same problems as ``benchmarks.sparse_solvers``.

Usage::

  python -m benchmarks.sparse_cputime --problem c   # (c): B=1024, c=37,445, d=512, coherent
  python -m benchmarks.sparse_cputime --problem b --preset main
  python -m benchmarks.sparse_cputime --problem b --preset main --phases   # + time of each host-loop call

``--phases`` then runs it once more timing every jitted call of ``nonneg_lasso``'s host-driven loop (each
goes through ``parallel.map_batched``; wall and CPU time, each call waited for with ``block_until_ready``,
so calls no longer overlap with the host's bookkeeping) and prints them in order.
"""

from __future__ import annotations

import argparse
import resource
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import sparse_solvers as bench
from conceptjax import parallel, sparse
from conceptjax.sparse._problem import HIGHEST


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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="full", choices=sorted(bench.PRESETS))
  p.add_argument("--problem", default="c")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--phases", action="store_true", help="then time each host-loop call of one more run")
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
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
