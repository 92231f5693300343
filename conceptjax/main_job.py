"""``conceptjax main``: the README's main job.

For now it runs the sparse-solver comparison (benchmarks/sparse_solvers.py) at a size that finishes in about
a minute on 2 cores and prints its table. It becomes the ShapesWorld SpLiCE report once that lands.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser("main", help="run the main job (offline, embedded defaults)")
  p.add_argument("--out", default="workdirs/main", help="folder for the results (JSON, plot)")
  p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
  from benchmarks import sparse_solvers

  # An iteration cap keeps the slow solvers (FISTA, ADMM) to about a minute in all; a solver that misses the
  # tolerance under it is reported as such. `make bench` runs the uncapped comparison.
  argv = ["--preset", "main", "--out", args.out, "--max-iter", "500", "--tols", "1e-5", "--repeats", "2"]
  return sparse_solvers.main(argv)
