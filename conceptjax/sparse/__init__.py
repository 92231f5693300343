"""Batched non-negative sparse recovery: the SpLiCE decomposition ``min_{w>=0} ||wC - z||^2 + lam ||w||_1``.

Entry point :func:`nonneg_lasso` (validation, solver choice, sharding). The solvers are also exposed as
pure jit-able functions ``solver(problem, config) -> NonnegLassoResult`` over a :class:`Problem` (arrays
only) with a frozen, static config:

* :func:`working_set` (default): exact solves on a few candidates per row, KKT certified on all concepts.
* :func:`fista`: accelerated proximal gradient with adaptive restart.
* :func:`admm`: ADMM with a Woodbury solve (one (d x d) factorisation, never (c x c)).
* :func:`omp`: non-negative orthogonal matching pursuit for a fixed l0.
* :func:`target_l0`: per-row penalty search for about k active concepts around any lasso solver.

Synthetic problems for tests and benchmarks live in ``conceptjax.sparse.synthetic``.
"""

from conceptjax.sparse._admm import AdmmConfig, admm
from conceptjax.sparse._api import LASSO_SOLVERS, SOLVERS, choose_solver, nonneg_lasso
from conceptjax.sparse._fista import FistaConfig, fista, spectral_norm_sq
from conceptjax.sparse._omp import OmpConfig, omp
from conceptjax.sparse._problem import PAD_INDEX, NonnegLassoResult, Problem, dense_kkt, scatter_dense
from conceptjax.sparse._target_l0 import TargetL0Config, target_l0
from conceptjax.sparse._working_set import WorkingSetConfig, working_set

__all__ = [
  "LASSO_SOLVERS",
  "PAD_INDEX",
  "SOLVERS",
  "AdmmConfig",
  "FistaConfig",
  "NonnegLassoResult",
  "OmpConfig",
  "Problem",
  "TargetL0Config",
  "WorkingSetConfig",
  "admm",
  "choose_solver",
  "dense_kkt",
  "fista",
  "nonneg_lasso",
  "omp",
  "scatter_dense",
  "spectral_norm_sq",
  "target_l0",
  "working_set",
]
