"""Every bad input to conceptjax.sparse.nonneg_lasso gives a one-line InputError naming the problem."""

import numpy as np
import pytest

from conceptjax import sparse
from conceptjax.errors import InputError

RNG = np.random.default_rng(0)
C = RNG.normal(size=(20, 6))
Z = RNG.normal(size=(4, 6))


def _with(a, where, value):
  a = a.copy()
  a[where] = value
  return a


CASES = [
  ("nan embedding", dict(embeddings=_with(Z, 2, np.nan)), "embeddings row 2 contains NaN or Inf"),
  ("one nan", dict(embeddings=_with(Z, (1, 4), np.nan)), "embeddings row 1 contains NaN or Inf"),
  ("one -inf atom", dict(dictionary=_with(C, (11, 2), -np.inf)), "dictionary row 11 contains NaN or Inf"),
  ("inf dictionary", dict(dictionary=_with(C, 7, np.inf)), "dictionary row 7 contains NaN or Inf"),
  ("zero embedding", dict(embeddings=_with(Z, 3, 0.0)), "embeddings row 3 has zero norm"),
  ("zero atom", dict(dictionary=_with(C, 5, 0.0)), "dictionary row 5 has zero norm"),
  ("width", dict(embeddings=Z[:, :5]), "width mismatch: embeddings (4, 5) vs dictionary (20, 6)"),
  ("negative lam", dict(l1_penalty=-0.1), "l1_penalty must be finite and >= 0, got -0.1"),
  ("nan lam", dict(l1_penalty=np.array([0.1, np.nan, 0.2, 0.3])), "got nan"),
  ("lam shape", dict(l1_penalty=np.ones(3)), "l1_penalty must be a scalar or shape (4,), got (3,)"),
  ("empty dictionary", dict(dictionary=np.zeros((0, 6))), "empty dictionary: shape (0, 6)"),
  ("1-D dictionary", dict(dictionary=np.ones(6)), "dictionary must be 2-D (c, d), got shape (6,)"),
  (
    "solver",
    dict(solver="lars"),
    "unknown solver 'lars'; known solvers: auto, working_set, fista, admm, omp",
  ),
  ("omp without k", dict(solver="omp"), "solver='omp' needs target_l0"),
  ("k too large", dict(target_l0=7), "target_l0 must be an integer in [1, min(c, d) = 6], got 7"),
  ("k zero", dict(target_l0=0), "got 0"),
  ("tol", dict(tol=0.0), "tol must be finite and > 0, got 0.0"),
]


@pytest.mark.parametrize("name,kwargs,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_error(name, kwargs, message):
  args = dict(dictionary=C, embeddings=Z, l1_penalty=0.25)
  args.update(kwargs)
  with pytest.raises(InputError) as err:
    sparse.nonneg_lasso(args.pop("dictionary"), args.pop("embeddings"), args.pop("l1_penalty"), **args)
  text = str(err.value)
  assert message in text
  assert "\n" not in text


def test_good_input_passes_validation():
  res = sparse.nonneg_lasso(C, Z[0], 0.25)  # a single [d] row is accepted
  assert res.indices.shape[0] == 1 and bool(res.converged[0])
