"""Solvers of conceptjax.sparse against independent oracles (sklearn, scipy nnls, closed forms)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import nnls
from sklearn.linear_model import Lasso

from conceptjax import parallel, sparse

LAM = 0.25


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@functools.cache
def _problem(kind: str, c: int = 300, d: int = 32, b: int = 8, seed: int = 0):
  """Float64 numpy problem: 'gaussian' unit-norm rows, or 'coherent' near-duplicate families + a common
  offset, mean-centred and renormalised (SpLiCE); embeddings from 3-8 non-negative atoms + 10% noise."""
  rng = np.random.default_rng(seed)
  if kind == "gaussian":
    dictionary = _normalize(rng.normal(size=(c, d)))
  else:
    spectrum = np.arange(1, d + 1) ** -0.5
    centres = _normalize(rng.normal(size=(c // 4, d)) * spectrum)
    own = _normalize(rng.normal(size=(c, d)) * spectrum)
    raw = (
      np.sqrt(0.9) * centres[rng.integers(0, c // 4, c)] + np.sqrt(0.1) * own + _normalize(rng.normal(size=d))
    )
    raw = _normalize(raw)
    dictionary = _normalize(raw - raw.mean(0))
  z = np.zeros((b, d))
  for i in range(b):
    atoms = rng.choice(c, rng.integers(3, 9), replace=False)
    z[i] = _normalize(rng.uniform(0.1, 1.0, atoms.size) @ dictionary[atoms])
  z = _normalize(z + 0.1 * _normalize(rng.normal(size=(b, d))))
  return dictionary, z


def _objective(dictionary, z, w, lam):
  return np.sum((w @ dictionary - z) ** 2, axis=-1) + lam * np.sum(w, axis=-1)


@functools.cache
def _sklearn(kind: str):
  dictionary, z = _problem(kind)
  d = dictionary.shape[1]
  w = np.stack(
    [
      Lasso(alpha=LAM / (2 * d), positive=True, fit_intercept=False, tol=1e-10, max_iter=100000)
      .fit(dictionary.T, row)
      .coef_
      for row in z
    ]
  )
  return w, _objective(dictionary, z, w, LAM)


def _kkt(dictionary, z, w, lam):
  g = 2 * (w @ dictionary - z) @ dictionary.T + np.reshape(lam, (-1, 1))
  return np.maximum(np.max(np.maximum(-g, 0), axis=1), np.max(np.where(w > 0, np.abs(g), 0), axis=1))


@pytest.mark.parametrize("kind", ["gaussian", "coherent"])
@pytest.mark.parametrize("solver", sparse.LASSO_SOLVERS)
def test_lasso_matches_sklearn_float64(x64, solver, kind):
  dictionary, z = _problem(kind)
  _, best = _sklearn(kind)
  res = sparse.nonneg_lasso(dictionary, z, LAM, solver=solver, tol=1e-9, max_iter=20000)
  assert res.values.dtype == jnp.float64
  w = np.asarray(res.to_dense())
  assert np.all(w >= 0)
  np.testing.assert_allclose(res.objective, best, rtol=1e-6)
  np.testing.assert_allclose(_objective(dictionary, z, w, LAM), best, rtol=1e-6)
  kkt = _kkt(dictionary, z, w, LAM)  # independent recomputation of the certificate
  assert np.all(kkt <= 1e-8)
  np.testing.assert_allclose(res.kkt_violation, kkt, atol=1e-10)
  assert np.all(res.converged)
  np.testing.assert_array_equal(res.l0, np.sum(w > 0, axis=1))


@pytest.mark.parametrize("solver", sparse.LASSO_SOLVERS)
def test_orthonormal_dictionary_soft_threshold(x64, solver):
  rng = np.random.default_rng(3)
  q, _ = np.linalg.qr(rng.normal(size=(24, 24)))
  dictionary = q[:16]  # orthonormal rows
  z = _normalize(rng.normal(size=(5, 24)))
  lam = np.array([0.0, 0.1, 0.25, 0.4, 3.0])
  res = sparse.nonneg_lasso(dictionary, z, lam, solver=solver, tol=1e-10)
  expected = np.maximum(z @ dictionary.T - lam[:, None] / 2, 0)
  np.testing.assert_allclose(res.to_dense(), expected, atol=1e-8)
  assert np.all(res.to_dense()[-1] == 0)  # lam above lam_max: the zero solution


def test_working_set_float32_default_precision():
  dictionary, z = _problem("coherent", c=2000, d=64, b=16, seed=1)
  res = sparse.nonneg_lasso(dictionary, z, LAM)
  assert res.values.dtype == jnp.float32
  assert np.all(res.converged)
  w = np.asarray(res.to_dense(), np.float64)
  assert np.all(_kkt(dictionary, z, w, LAM) <= 2e-5)  # float64 recheck of the float32 certificate
  best = [
    _objective(dictionary, z[i : i + 1], w_i[None], LAM)[0]
    for i, w_i in enumerate(
      Lasso(alpha=LAM / 128, positive=True, fit_intercept=False, tol=1e-10, max_iter=100000)
      .fit(dictionary.T, z[i])
      .coef_
      for i in range(16)
    )
  ]
  np.testing.assert_allclose(res.objective, best, rtol=1e-5)


def test_working_set_grows_when_support_fills_candidates(x64):
  dictionary, z = _problem("gaussian")
  _, best = _sklearn("gaussian")
  with pytest.warns(UserWarning, match=r"of 8 rows have more active concepts than max_active=8"):
    res = sparse.nonneg_lasso(dictionary, z, LAM, tol=1e-9, max_active=8)  # 8 candidates, then 16
  assert res.indices.shape == (8, 8)
  assert np.all(res.converged) and np.any(res.l0 > 8)
  np.testing.assert_allclose(res.objective, best, rtol=1e-6)
  top = np.sort(_sklearn("gaussian")[0], axis=1)[:, ::-1][:, :8]  # the 8 largest weights are kept
  np.testing.assert_allclose(res.values, top, atol=1e-7)


def test_omp_matches_nnls_on_its_support(x64):
  dictionary, z = _problem("coherent")
  k = 6
  res = sparse.nonneg_lasso(dictionary, z, solver="omp", target_l0=k)
  assert res.indices.shape == (8, k)
  for i in range(z.shape[0]):
    sel = np.asarray(res.indices[i])
    sel = sel[sel >= 0]
    assert len(set(sel.tolist())) == len(sel)
    w, _ = nnls(dictionary[sel].T, z[i])
    np.testing.assert_allclose(res.values[i, : len(sel)], w, atol=1e-9)
    assert np.argmax(z[i] @ dictionary.T) in sel  # the first greedy pick
  np.testing.assert_allclose(res.l0, np.sum(res.values > 0, axis=1))
  assert np.all(res.l0 <= k) and np.all(res.converged)


@pytest.mark.parametrize("solver", ["working_set", pytest.param("fista", marks=pytest.mark.slow)])
def test_target_l0_lands_within_one(x64, solver):
  dictionary, z = _problem("coherent")
  k = 5
  res = sparse.nonneg_lasso(dictionary, z, solver=solver, target_l0=k, tol=1e-9)
  assert np.all(np.abs(np.asarray(res.l0) - k) <= 1)
  assert np.all(res.converged)
  again = sparse.nonneg_lasso(dictionary, z, res.l1_penalty, solver=solver, tol=1e-9)  # chosen lam is real
  np.testing.assert_array_equal(again.l0, res.l0)
  np.testing.assert_allclose(again.objective, res.objective, rtol=1e-9)


def _tiny_problem():
  dictionary, z = _problem("coherent", c=40, d=8, b=3, seed=5)
  return sparse.Problem(jnp.asarray(dictionary), jnp.asarray(z), jnp.asarray([0.1, 0.25, 0.5]))


@pytest.mark.parametrize(
  "solve",
  [
    lambda p: sparse.working_set(p, sparse.WorkingSetConfig(working_size=8, max_active=8, tol=1e-9)),
    pytest.param(
      lambda p: sparse.fista(p, sparse.FistaConfig(max_active=8, tol=1e-6, check_every=20)),
      marks=pytest.mark.slow,
    ),
    pytest.param(
      lambda p: sparse.admm(p, sparse.AdmmConfig(max_active=8, tol=1e-6, check_every=20)),
      marks=pytest.mark.slow,
    ),
    pytest.param(lambda p: sparse.omp(p, sparse.OmpConfig(n_atoms=4)), marks=pytest.mark.slow),
  ],
  ids=["working_set", "fista", "admm", "omp"],
)
def test_eager_equals_jit(x64, solve):
  problem = _tiny_problem()
  jitted = jax.jit(solve)(problem)
  with jax.disable_jit():
    eager = solve(problem)
  np.testing.assert_array_equal(eager.indices, jitted.indices)
  np.testing.assert_allclose(eager.values, jitted.values, rtol=1e-9, atol=1e-12)
  np.testing.assert_array_equal(eager.iterations, jitted.iterations)


@pytest.mark.parametrize(
  "solver,target", [("working_set", None), pytest.param("omp", 4, marks=pytest.mark.slow)]
)
def test_sharded_equals_single_device(solver, target):
  assert jax.device_count() == 8
  dictionary, z = _problem("gaussian", c=500, d=32, b=11, seed=2)  # 11 rows: padded to 16
  kw = dict(solver=solver, target_l0=target)
  one = sparse.nonneg_lasso(dictionary, z, LAM, mesh=parallel.data_mesh(jax.devices()[:1]), **kw)
  eight = sparse.nonneg_lasso(dictionary, z, LAM, mesh=parallel.data_mesh(), **kw)
  assert eight.indices.shape[0] == 11
  np.testing.assert_array_equal(one.indices, eight.indices)
  np.testing.assert_allclose(one.values, eight.values, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(one.objective, eight.objective, rtol=1e-6)


def test_supports_wider_than_the_candidates_are_solved_again(x64):
  """The working set solves on 48 candidates per row; rows whose support fills them are solved again on
  twice as many, and come back complete in the wider output, at sklearn's objective."""
  rng = np.random.default_rng(0)
  dictionary = _normalize(rng.normal(size=(400, 128)))
  z = _normalize(
    np.stack([rng.uniform(0.1, 1, 60) @ dictionary[rng.choice(400, 60, replace=False)] for _ in range(4)])
  )
  lam = 0.1
  res = sparse.nonneg_lasso(dictionary, z, lam, tol=1e-9, max_active=96)
  assert res.indices.shape == (4, 96)
  assert np.all(np.asarray(res.l0) > 48) and np.all(res.converged)
  best = np.stack(
    [
      Lasso(alpha=lam / (2 * 128), positive=True, fit_intercept=False, tol=1e-12, max_iter=200000)
      .fit(dictionary.T, row)
      .coef_
      for row in z
    ]
  )
  w = np.asarray(res.to_dense())
  np.testing.assert_array_equal(np.sum(w > 0, axis=1), np.sum(best > 0, axis=1))
  np.testing.assert_allclose(
    _objective(dictionary, z, w, lam), _objective(dictionary, z, best, lam), rtol=1e-9
  )
  assert np.all(_kkt(dictionary, z, w, lam) <= 1e-8)


def test_second_call_does_not_recompile():
  from conceptjax.sparse import _api

  dictionary, z = _problem("gaussian", c=500, d=32, b=8, seed=3)
  sparse.nonneg_lasso(dictionary, z, LAM)
  size = _api._solve._cache_size()
  res = sparse.nonneg_lasso(dictionary * 1.0, z[::-1].copy(), 0.3)  # new values, same shapes
  assert _api._solve._cache_size() == size
  assert np.all(res.converged)


def test_split_host_driver_matches_sklearn(x64, kind="coherent"):
  """The host-driven working set with its split step (interior point only on the rows whose warm start
  failed; the default uses it for buckets of >= 64 rows, so the small default tests run the fused step)
  reaches sklearn's objective."""
  from conceptjax.sparse import _api

  dictionary, z = _problem(kind)
  _, best = _sklearn(kind)
  config = sparse.WorkingSetConfig(working_size=64, max_active=64, tol=1e-9, first_size=16)
  args = (
    jnp.asarray(dictionary),
    jnp.asarray(z),
    jnp.full((z.shape[0],), LAM),
    parallel.data_mesh(jax.devices()[:1]),
  )
  res = _api._working_set_compacted(config, *args, split_min_rows=0)
  assert np.all(res.converged)
  np.testing.assert_allclose(res.objective, best, rtol=1e-6)
  w = np.asarray(res.to_dense())
  assert np.all(_kkt(dictionary, z, w, LAM) <= 1e-8)


def test_host_streams_match_one_stream_and_sklearn(x64):
  """On one CPU device ``nonneg_lasso`` runs its host loop on two halves of the batch in two threads: the
  result is the single loop's (same supports and weights, rows in order) and at sklearn's objective."""
  from unittest import mock

  from conceptjax.sparse import _api

  dictionary, z = _problem("coherent", b=130)
  d = dictionary.shape[1]
  lasso = Lasso(alpha=LAM / (2 * d), positive=True, fit_intercept=False, tol=1e-10, max_iter=100000)
  best = _objective(dictionary, z, np.stack([lasso.fit(dictionary.T, row).coef_ for row in z]), LAM)
  mesh = parallel.data_mesh(jax.devices()[:1])
  assert _api._host_streams(mesh, z.shape[0], sparse.WorkingSetConfig.streams) == 2
  calls, compacted = [], _api._working_set_compacted

  def spy(config, dictionary, embeddings, *args, **kwargs):
    calls.append((embeddings.shape[0], config.serial_lapack))
    return compacted(config, dictionary, embeddings, *args, **kwargs)

  def solve():
    return sparse.nonneg_lasso(dictionary, z, LAM, tol=1e-9, mesh=mesh)

  with mock.patch.object(_api, "_working_set_compacted", spy):
    two = solve()
    with mock.patch.object(_api, "_host_streams", lambda *_: 1):
      one = solve()
  assert sorted(calls) == [(65, True), (65, True), (130, False)]  # two threads, LAPACK one matrix a call
  np.testing.assert_array_equal(two.indices, one.indices)
  np.testing.assert_allclose(two.values, one.values, rtol=1e-9, atol=1e-12)
  assert np.all(two.converged)
  np.testing.assert_allclose(two.objective, best, rtol=1e-6)


def test_host_streams_rule():
  """Threads on one CPU device only, at most one per 64 rows; several devices already run side by side."""
  from conceptjax.sparse import _api

  one = parallel.data_mesh(jax.devices()[:1])
  assert [_api._host_streams(one, b, 2) for b in (8, 127, 128, 1024)] == [1, 1, 2, 2]
  assert _api._host_streams(one, 1024, 3) == 3
  assert _api._host_streams(parallel.data_mesh(), 1024, 2) == (1 if jax.device_count() > 1 else 2)


@pytest.mark.parametrize("kind", ["gaussian", "coherent"])
def test_certify_matches_numpy(x64, kind):
  """``certify`` (the host driver's per-iteration certificate) against numpy: KKT violation over all
  concepts, the support kept first, the most violating concepts after it, and the overflow flag (more
  violators than free slots, which sends a row to the rough solve)."""
  from conceptjax.sparse import _working_set as ws
  from conceptjax.sparse._problem import Problem

  dictionary, z = _problem(kind)
  b, k = z.shape[0], 12
  rng = np.random.default_rng(1)
  indices = np.stack([rng.choice(dictionary.shape[0], k, replace=False) for _ in range(b)])
  w = np.where(rng.uniform(size=(b, k)) < 0.5, rng.uniform(0.0, 0.3, (b, k)), 0.0)
  w[0] = 0.0  # a row without support: every slot is free
  best, _ = _sklearn(kind)
  for i in (1, 2):  # rows at the optimum (no violators), support in the first slots
    support = np.nonzero(best[i] > 0)[0]
    others = np.setdiff1d(indices[i], support)[: k - support.size]
    indices[i] = np.concatenate([support, others])
    w[i] = np.concatenate([best[i, support], np.zeros(k - support.size)])
  lam = np.full((b,), LAM)
  config = sparse.WorkingSetConfig(working_size=k, max_active=k)
  problem = Problem(jnp.asarray(dictionary), jnp.asarray(z), jnp.asarray(lam))
  out = ws.certify(problem, jnp.asarray(indices, jnp.int32), jnp.asarray(w), config)
  dense = np.zeros((b, dictionary.shape[0]))
  np.put_along_axis(dense, indices, w, axis=1)
  np.testing.assert_allclose(out.kkt, _kkt(dictionary, z, dense, LAM), rtol=1e-9, atol=1e-14)
  g = 2 * (dense @ dictionary - z) @ dictionary.T + LAM
  for i in range(b):
    support = indices[i][w[i] > 0]
    outside = np.setdiff1d(np.arange(dictionary.shape[0]), support)
    violators = outside[g[i, outside] < -config.tol]
    free = k - support.size
    assert set(np.asarray(out.indices[i, : support.size])) == set(support)
    ranked = outside[np.argsort(g[i, outside], kind="stable")][:free]
    np.testing.assert_array_equal(np.asarray(out.indices[i, support.size :]), ranked)
    assert bool(out.overflow[i]) == (violators.size > free)
  assert np.any(np.asarray(out.overflow)) and not np.all(np.asarray(out.overflow))


@pytest.mark.parametrize("n", [5000, 4999, 300])  # two rounds (a partial last block), one lax.top_k
def test_top_k_matches_lax(n):
  """``_problem.top_k`` (the working set's candidate pick: block maxima, then the best blocks' entries)
  gives lax.top_k's values, sorted, with indices of those values, none repeated; masked (-inf) entries
  and equal values included."""
  from conceptjax.sparse._problem import top_k

  rng = np.random.default_rng(n)
  x = rng.normal(size=(6, n)).astype(np.float32)
  x[0, rng.choice(n, n - 30, replace=False)] = -np.inf  # fewer finite entries than k
  x[1, : n // 2] = x[1, n // 2 : 2 * (n // 2)]  # every value twice
  x[2, -5:] = 10.0  # the largest ones in the partial last block
  k = 40
  values, indices = jax.jit(lambda x: top_k(x, k, block=16))(x)
  expected, _ = jax.lax.top_k(x, k)
  np.testing.assert_array_equal(values, expected)
  np.testing.assert_array_equal(np.take_along_axis(x, np.asarray(indices), axis=1), values)
  assert all(len(set(row)) == k for row in np.asarray(indices)) and np.all(np.asarray(indices) < n)
