"""The small problems of the working set and OMP (``sparse._gram``): the accelerated projected-gradient
solve and the restart ladder (projected gradient, then interior point), against scikit-learn's lasso
restricted to each row's candidate atoms."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

from conceptjax.sparse import _gram

LAM = 0.05


def _rows(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _small_problems(b=6, k=12, d=24, coherence=0.0, seed=0):
  """[b, k, d] unit atoms per row (``coherence`` > 0: near-duplicates of a few shared directions) and
  [b, d] unit embeddings from 3 non-negative atoms + 10% noise."""
  rng = np.random.default_rng(seed)
  atoms = _rows(rng.normal(size=(b, k, d)))
  if coherence:
    family = _rows(rng.normal(size=(b, 3, d)))[:, rng.integers(0, 3, k)]
    atoms = _rows(np.sqrt(coherence) * family + np.sqrt(1 - coherence) * atoms)
  w = np.zeros((b, k))
  for i in range(b):
    w[i, rng.choice(k, 3, replace=False)] = rng.uniform(0.2, 1.0, 3)
  z = _rows(_rows(np.einsum("bk,bkd->bd", w, atoms)) + 0.1 * _rows(rng.normal(size=(b, d))))
  return atoms, z


def _qp(atoms, z, valid=None):
  valid = np.ones(atoms.shape[:2], bool) if valid is None else valid
  lam = jnp.full((atoms.shape[0],), LAM)
  return _gram.gram_qp(jnp.asarray(atoms), jnp.asarray(z), lam, jnp.asarray(valid))


def _sklearn(atoms, z, valid):
  """Per row, scikit-learn's positive lasso on the valid atoms (``alpha = lam / (2 d)`` gives SpLiCE's
  ``||w A - z||^2 + lam sum(w)``), scattered back to [b, k]."""
  d = z.shape[1]
  out = np.zeros(atoms.shape[:2])
  for i in range(len(z)):
    fit = Lasso(alpha=LAM / (2 * d), positive=True, fit_intercept=False, tol=1e-12, max_iter=200000)
    out[i, valid[i]] = fit.fit(atoms[i, valid[i]].T, z[i]).coef_
  return out


def _objective(atoms, z, w):
  return np.sum((np.einsum("bk,bkd->bd", w, atoms) - z) ** 2, axis=-1) + LAM * np.sum(w, axis=-1)


def test_rough_solve_converges_to_the_restricted_lasso(x64):
  """Given enough steps, the projected-gradient solve reaches scikit-learn's objective on every row, and
  slots marked invalid stay exactly 0."""
  atoms, z = _small_problems()
  valid = np.ones(atoms.shape[:2], bool)
  valid[:, -3:] = False
  w = np.asarray(_gram.rough_solve(_qp(atoms, z, valid), iters=3000))
  ref = _sklearn(atoms, z, valid)
  assert np.all(w[~valid] == 0) and np.all(w >= 0)
  np.testing.assert_allclose(_objective(atoms, z, w), _objective(atoms, z, ref), rtol=1e-9)
  np.testing.assert_allclose(w, ref, atol=1e-5)


@pytest.mark.parametrize(("pg_iter", "polish_iter"), [(100, 6), (0, 6), (2, 1)])
def test_restart_ladder_solves_every_row(x64, pg_iter, polish_iter):
  """From a cold start the small problems restart from projected gradient; the rows still unsolved after
  ``polish_iter`` active-set steps restart from the interior point: every row ends at scikit-learn's
  solution. With 2 projected-gradient steps and 1 active-set step the interior point must take over
  (checked); with ``pg_iter=0`` it does all the restarting."""
  atoms, z = _small_problems(b=8, coherence=0.9, seed=1)
  qp = _qp(atoms, z)
  tol = 1e-10
  if pg_iter == 2:
    first, _ = _gram._active_set(qp, _gram.rough_solve(qp, iters=pg_iter), tol=tol, max_iter=polish_iter)
    assert np.any(np.asarray(_gram.qp_kkt(qp, first)) > tol)  # the fallback has rows to solve
  w, _ = _gram.solve_gram_qp(
    qp, jnp.zeros(atoms.shape[:2]), tol=tol, max_iter=60, polish_iter=polish_iter, pg_iter=pg_iter
  )
  assert np.all(np.asarray(_gram.qp_kkt(qp, w)) <= tol)
  ref = _sklearn(atoms, z, np.ones(atoms.shape[:2], bool))
  np.testing.assert_allclose(_objective(atoms, z, np.asarray(w)), _objective(atoms, z, ref), rtol=1e-9)
