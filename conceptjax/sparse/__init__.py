"""Batched non-negative sparse recovery: the SpLiCE decomposition ``min_{w>=0} ||wC - z||^2 + lam ||w||_1``.

Entry point :func:`nonneg_lasso` (validation, solver and path choice, chunks sized from a memory budget,
sharding; :func:`nonneg_lasso_chunks` yields the chunks one by one). The solvers are also exposed as
pure jit-able functions ``solver(problem, config) -> NonnegLassoResult`` over a :class:`Problem` (arrays
only) with a frozen, static config:

* :func:`working_set` (default): exact solves on a few candidates per row, KKT certified on all concepts.
* :func:`working_set_device`: the same iteration plus a retry of slow or stuck rows on a wider working
  set, all in one program (``nonneg_lasso``'s device path, chosen on GPUs and TPUs: ``choose_path``).
* :func:`fista`: accelerated proximal gradient with adaptive restart.
* :func:`admm`: ADMM with a Woodbury solve (one (d x d) factorisation, never (c x c)).
* :func:`omp`: non-negative orthogonal matching pursuit for a fixed l0.
* :func:`target_l0`: per-row penalty search for about k active concepts around any lasso solver.

Synthetic problems for tests and benchmarks live in ``conceptjax.sparse.synthetic``.
"""

from conceptjax.sparse._admm import AdmmConfig, admm
from conceptjax.sparse._api import (
  LASSO_SOLVERS,
  PATHS,
  SOLVERS,
  choose_path,
  choose_solver,
  default_memory_budget,
  nonneg_lasso,
  nonneg_lasso_chunks,
  row_bytes,
)
from conceptjax.sparse._device import working_set_device
from conceptjax.sparse._fista import FistaConfig, fista, spectral_norm_sq
from conceptjax.sparse._omp import OmpConfig, omp
from conceptjax.sparse._problem import PAD_INDEX, NonnegLassoResult, Problem, dense_kkt, scatter_dense
from conceptjax.sparse._target_l0 import TargetL0Config, target_l0
from conceptjax.sparse._working_set import WorkingSetConfig, working_set

__all__ = [
  "LASSO_SOLVERS",
  "PAD_INDEX",
  "PATHS",
  "SOLVERS",
  "AdmmConfig",
  "FistaConfig",
  "NonnegLassoResult",
  "OmpConfig",
  "Problem",
  "TargetL0Config",
  "WorkingSetConfig",
  "admm",
  "choose_path",
  "choose_solver",
  "default_memory_budget",
  "dense_kkt",
  "fista",
  "nonneg_lasso",
  "nonneg_lasso_chunks",
  "omp",
  "row_bytes",
  "scatter_dense",
  "spectral_norm_sq",
  "target_l0",
  "working_set",
  "working_set_device",
]
