"""Decomposition throughput over processes: total rows/s of N processes against one.

Each process decomposes its own rows (``parallel.process_slice``) in fixed-size chunks on its own devices
(``parallel.local_mesh()``: the host-driven working set needs no other process), like ``conceptjax
decompose``. Each process makes two passes over its rows: the first compiles, the second starts on every
process together (``multihost_utils.sync_global_devices``) and is timed. Total rows/s = rows / the slowest
process's seconds. The problem is ``benchmarks/sparse_solvers.py``'s Gaussian one (planted sparse
codes), lam 0.25.

Run (one process, then two on the same machine; compare ``rows_per_s``)::

  python -m benchmarks.multihost_decompose --name multihost_decompose_p1
  python -m conceptjax.launch -n 2 -- python -m benchmarks.multihost_decompose --name multihost_decompose_p2
  python -m benchmarks.multihost_decompose --preset tiny      # seconds (a test runs this)

Writes ``benchmarks/results/<name>.json`` (process 0) and prints one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from conceptjax import benchmarking, io, parallel, sparse
from conceptjax.sparse import synthetic

PRESETS = {
  "default": {"rows": 4096, "concepts": 10_000, "dim": 512, "chunk": 256, "solver": "auto"},
  "tiny": {"rows": 32, "concepts": 100, "dim": 16, "chunk": 16, "solver": "fista"},  # one compilation
}


def problem(rows: int, concepts: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(dictionary [concepts, dim], embeddings [rows, dim]) as in benchmarks/sparse_solvers.py's Gaussian
  problem (10-30 planted atoms per row, 10% noise), float32, the same on every process."""
  k_dict, k_emb = jax.random.split(jax.random.key(seed))
  dictionary = synthetic.gaussian_dictionary(k_dict, concepts, dim, dtype=jnp.float32)
  return np.asarray(dictionary), np.asarray(synthetic.sparse_embeddings(k_emb, dictionary, rows).embeddings)


def _pass(solve, own: np.ndarray, chunk: int) -> tuple[float, float]:
  """(seconds, summed objective) of one pass over ``own`` in chunks of one shape."""
  objective, t0 = 0.0, time.perf_counter()
  for start in range(0, len(own), chunk):
    part = own[start : start + chunk]
    res = solve(np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)]))
    objective += float(np.sum(np.asarray(res.objective)[: len(part)]))
  return time.perf_counter() - t0, objective


def run(rows: int, concepts: int, dim: int, chunk: int, lam: float, solver: str) -> dict:
  """Two passes over each process's rows: the first compiles (the working set's host loop meets its bucket
  shapes as the rows need them), the second, started together on every process, is timed."""
  dictionary, z = problem(rows, concepts, dim)
  mesh = parallel.local_mesh()
  own = z[parallel.process_slice(rows)]
  solve = lambda x: sparse.nonneg_lasso(dictionary, x, lam, solver=solver, mesh=mesh)  # noqa: E731
  first_s, _ = _pass(solve, own, chunk)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("multihost_decompose:start")
  seconds, objective = _pass(solve, own, chunk)
  mine = np.array([seconds, len(own), objective, first_s])
  every = np.asarray(multihost_utils.process_allgather(mine)) if jax.process_count() > 1 else mine[None]
  return {
    "processes": jax.process_count(),
    "devices_per_process": jax.local_device_count(),
    "rows": int(every[:, 1].sum()),
    "rows_per_s": float(every[:, 1].sum() / every[:, 0].max()),
    "seconds_per_process": [float(v) for v in every[:, 0]],
    "first_pass_s_per_process": [round(float(v), 3) for v in every[:, 3]],
    "objective_mean": float(every[:, 2].sum() / every[:, 1].sum()),
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
  parser.add_argument("--rows", type=int, default=None, help="timed rows in all (default from preset)")
  parser.add_argument("--chunk", type=int, default=None, help="rows per solver call (default from preset)")
  parser.add_argument("--lam", type=float, default=0.25)
  parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
  parser.add_argument("--name", default=None, help="result file stem (default multihost_decompose[_PRESET])")
  parallel.add_distributed_args(parser)
  args = parser.parse_args(argv)
  parallel.initialize_from_args(args)
  size = dict(PRESETS[args.preset])
  size.update({k: v for k, v in (("rows", args.rows), ("chunk", args.chunk)) if v is not None})
  command = ["python -m benchmarks.multihost_decompose", *(sys.argv[1:] if argv is None else argv)]
  result = {
    "benchmark": "multihost_decompose",
    "command": " ".join(command),
    "config": size | {"lam": args.lam},
    "environment": benchmarking.environment(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "load_average_start": os.getloadavg()[0],
  }
  result |= run(size["rows"], size["concepts"], size["dim"], size["chunk"], args.lam, size["solver"])
  result["load_average_end"] = os.getloadavg()[0]
  if jax.process_index() == 0:
    stem = args.name or ("multihost_decompose" + ("" if args.preset == "default" else f"_{args.preset}"))
    io.write_json(Path(args.out) / f"{stem}.json", result)
    print(
      f"{result['processes']} process(es) x {result['devices_per_process']} device(s): "
      f"{result['rows_per_s']:.1f} rows/s ({result['rows']} rows, seconds per process "
      f"{[round(v, 3) for v in result['seconds_per_process']]}, "
      f"mean objective {result['objective_mean']:.6f})"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
