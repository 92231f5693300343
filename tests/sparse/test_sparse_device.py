"""The working set's device path and the chunked, memory-bounded ``nonneg_lasso``, on CPU.

What an accelerator needs, checked without one: the device path's chunk computation makes no host transfer
(``jax.transfer_guard``, and no callback in its program); a call of several chunks compiles each program
once; results equal scikit-learn's (float64) and the host path's, on one device and sharded over the 8 fake
devices; the memory budget sets the chunk size, and a budget too small for one row is one line of error.
"""

import collections
import contextlib
import functools
import logging
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

from conceptjax import parallel, sparse
from conceptjax.errors import InputError
from conceptjax.sparse import _api, _device, synthetic
from conceptjax.sparse._problem import Problem

LAM = 0.25


@functools.cache
def _data(c: int, d: int, b: int, seed: int = 0, kind: str = "coherent"):
  """(dictionary [c, d], embeddings [b, d]) float32 numpy, from conceptjax.sparse.synthetic."""
  k_dict, k_emb = jax.random.split(jax.random.key(seed))
  make = synthetic.coherent_dictionary if kind == "coherent" else synthetic.gaussian_dictionary
  dictionary = make(k_dict, c, d, dtype=jnp.float32)
  z = synthetic.sparse_embeddings(k_emb, dictionary, b).embeddings
  return np.asarray(dictionary), np.asarray(z)


def _objective(dictionary, z, w, lam=LAM):
  dictionary, z, w = (np.asarray(a, np.float64) for a in (dictionary, z, w))
  return np.sum((w @ dictionary - z) ** 2, axis=-1) + lam * np.sum(w, axis=-1)


def _kkt64(dictionary, z, w, lam=LAM):
  """float64 numpy KKT violation of dense weights [b, c] (the independent recomputation)."""
  dictionary, z, w = (np.asarray(a, np.float64) for a in (dictionary, z, w))
  g = 2 * (w @ dictionary - z) @ dictionary.T + lam
  return np.maximum(np.max(np.maximum(-g, 0), axis=1), np.max(np.where(w > 0, np.abs(g), 0), axis=1))


@functools.cache
def _sklearn(c, d, b, seed=0, kind="coherent", lam=LAM):
  dictionary, z = _data(c, d, b, seed, kind)
  lasso = Lasso(alpha=lam / (2 * d), positive=True, fit_intercept=False, tol=1e-12, max_iter=200_000)
  w = np.stack([lasso.fit(dictionary.T.astype(np.float64), row.astype(np.float64)).coef_ for row in z])
  return _objective(dictionary, z, w, lam)


# c, d, B of the shared problem. The host path's programs for these shapes are the ones
# test_sparse_solvers.py's sharded-vs-single test compiles: the suite compiles them once.
SHAPE = (500, 32, 11)
ONE = parallel.data_mesh(jax.devices()[:1])


@contextlib.contextmanager
def _compile_log():
  """Yields a Counter, filled on exit with the programs compiled inside, by name (``jax.log_compiles``)."""
  lines, counts = [], collections.Counter()
  handler = logging.Handler(logging.WARNING)
  handler.emit = lambda record: lines.append(record.getMessage())
  logger = logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      yield counts
  finally:
    logger.removeHandler(handler)
    counts.update(re.findall(r"Finished XLA compilation of jit\((\w+)\)", "\n".join(lines)))


@pytest.fixture(scope="module")
def solved():
  """The shared problem solved by the device path (one device, eight devices) and the host path, with the
  programs compiled by the first device-path call."""
  dictionary, z = _data(*SHAPE)
  out = {}
  with _compile_log() as out["compiles"]:
    out["device1"] = sparse.nonneg_lasso(dictionary, z, LAM, path="device", mesh=ONE)
  out["device8"] = sparse.nonneg_lasso(dictionary, z, LAM, path="device")
  out["host"] = sparse.nonneg_lasso(dictionary, z, LAM, path="host", mesh=ONE)
  return out


@pytest.mark.parametrize("name", ["device1", "device8"])
def test_device_path_matches_sklearn_and_host_path(solved, name):
  dictionary, z = _data(*SHAPE)
  res, host = solved[name], solved["host"]
  assert np.all(res.converged) and np.all(np.asarray(res.kkt_violation) <= 1e-5)
  w = np.asarray(res.to_dense())
  np.testing.assert_allclose(_objective(dictionary, z, w), _sklearn(*SHAPE), rtol=2e-6)
  np.testing.assert_allclose(res.objective, host.objective, rtol=1e-5)
  assert np.all(_kkt64(dictionary, z, w) <= 1.5e-5)
  np.testing.assert_array_equal(res.l0, np.sum(w > 0, axis=1))


def test_device_path_sharded_equals_one_device(solved):
  one, eight = solved["device1"], solved["device8"]
  np.testing.assert_array_equal(np.sort(one.indices, axis=1), np.sort(eight.indices, axis=1))
  np.testing.assert_allclose(one.values, eight.values, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(one.objective, eight.objective, rtol=1e-6)


def test_retry_phase_solves_stuck_and_slow_rows(x64):
  """With 8 candidates and one main-phase iteration, most rows are stuck (support > 8) or unfinished: the
  retry phase solves them, R = 4 rows a round on 32 candidates, to scikit-learn's objective (float64)."""
  c, d, b = 200, 24, 12
  dictionary, z = _data(c, d, b, seed=3, kind="gaussian")
  lam = 0.05  # supports of 10-20 concepts
  config = sparse.WorkingSetConfig(
    working_size=8, max_active=32, tol=1e-9, device_iter=1, retry_size=32, retry_fraction=1 / 3
  )
  assert _device.retry_rows(b, config) == 4 and _device.retry_size(c, config) == 32
  problem = Problem(jnp.asarray(dictionary, jnp.float64), jnp.asarray(z, jnp.float64), jnp.full((b,), lam))
  res = jax.jit(lambda p: sparse.working_set_device(p, config))(problem)
  assert np.all(res.converged) and np.all(np.asarray(res.l0) > 8) and np.all(np.asarray(res.iterations) > 1)
  w = np.asarray(res.to_dense())
  best = _sklearn(c, d, b, 3, "gaussian", lam)
  np.testing.assert_allclose(_objective(dictionary, z, w, lam), best, rtol=1e-9)
  assert np.all(_kkt64(dictionary, z, w, lam) <= 1e-8)


def _callbacks(jaxpr_text: str) -> list[str]:
  return re.findall(r"\b\w*(?:callback|infeed|outfeed)\w*\b", jaxpr_text)


def test_device_chunk_makes_no_host_transfer():
  """The device path's chunk computation runs with host transfers disallowed, and its program has no
  callback to the host (so no host round trip per iteration either)."""
  dictionary, z = _data(*SHAPE)
  calls, solve = [], _api._device_solve

  def spy(*args, **kwargs):
    calls.append((args, kwargs))
    return solve(*args, **kwargs)

  with mock.patch.object(_api, "_device_solve", spy):
    sparse.nonneg_lasso(dictionary, z, LAM, path="device", mesh=ONE)
  assert len(calls) == 1
  args, kwargs = calls[0]
  assert all(isinstance(a, jax.Array) for a in args)
  with jax.transfer_guard("disallow"):
    out = jax.block_until_ready(solve(*args, **kwargs))
  assert np.all(np.asarray(out.converged))
  assert _callbacks(str(jax.make_jaxpr(functools.partial(solve, **kwargs))(*args))) == []
  assert _callbacks("x = io_callback[...] y") == ["io_callback"]  # the check can see one


def test_multi_chunk_call_compiles_each_program_once(solved):
  """The first device-path call compiled its program once (and every other program at most once per input
  shape it saw); a call of 4 chunks of the same size (the last one padded) compiles nothing more. Its
  results equal scikit-learn's on every row (float64 objective)."""
  first = solved["compiles"]
  assert first["_device_solve"] == 1, first
  assert max(first.values()) <= 2, first  # e.g. _row_summary: the dictionary's shape and a chunk's
  c, d, b = SHAPE
  dictionary, z = _data(c, d, 40, seed=1)
  budget = b * sparse.row_bytes("working_set", c, d, 48)  # chunks of B rows: 0, 11, 22, 33 (7 + 4 padded)
  with _compile_log() as compiles:
    res = sparse.nonneg_lasso(dictionary, z, LAM, path="device", mesh=ONE, memory_budget=budget)
  assert compiles == {}, compiles  # the chunks are assembled on the host
  assert isinstance(res.values, np.ndarray) and res.indices.shape == (40, 64)
  assert np.all(res.converged)
  objective = _objective(dictionary, z, np.asarray(res.to_dense()))
  np.testing.assert_allclose(objective, _sklearn(c, d, 40, 1), rtol=2e-6)


def test_chunks_follow_the_memory_budget():
  """``nonneg_lasso_chunks`` yields ceil(N / rows) chunks of budget // row_bytes rows (a multiple of the
  device count), in order, covering every row once; the assembled host-path result equals the one-chunk
  call's."""
  dictionary, z = _data(*SHAPE)
  c, d, b = SHAPE
  per_row = sparse.row_bytes("working_set", c, d, 48)
  assert per_row == 4 * (2 * c + 2 * 48 * d + 8 * 48 * 48 + 4 * d)
  assert _api.chunk_rows(30, per_row, 10 * per_row + 5, 8) == 8
  assert _api.chunk_rows(30, per_row, 5 * per_row, 8) == 5  # fewer rows than devices: kept
  assert _api.chunk_rows(30, per_row, 100 * per_row, 8) == 30
  dictionary, more = _data(c, d, 30, seed=2)
  budget = b * per_row + per_row // 2
  chunks = sparse.nonneg_lasso_chunks(dictionary, more, LAM, path="host", mesh=ONE, memory_budget=budget)
  chunks = list(chunks)
  assert [start for start, _ in chunks] == [0, 11, 22]
  assert [len(part.l0) for _, part in chunks] == [11, 11, 8]
  whole = np.concatenate([np.asarray(part.objective) for _, part in chunks])
  np.testing.assert_allclose(whole, _sklearn(c, d, 30, 2), rtol=2e-6)
  first = sparse.nonneg_lasso(dictionary, more[:b], LAM, path="host", mesh=ONE)  # one chunk: the same
  np.testing.assert_allclose(chunks[0][1].objective, first.objective, rtol=1e-6)


def test_budget_too_small_for_one_row_is_one_line():
  dictionary, z = _data(*SHAPE)
  with pytest.raises(InputError) as err:
    sparse.nonneg_lasso(dictionary, z, LAM, memory_budget=1000)
  assert "memory_budget=1000 bytes is too small for one row (about" in str(err.value)
  assert "\n" not in str(err.value)
  with pytest.raises(InputError, match="unknown path 'gpu'; known paths: auto, host, device"):
    sparse.nonneg_lasso(dictionary, z, LAM, path="gpu")


def test_bad_row_named_in_a_later_chunk():
  dictionary, z = _data(*SHAPE)
  z = z.copy()
  z = np.concatenate([z, z])
  z[17, 3] = np.nan
  budget = SHAPE[2] * sparse.row_bytes("working_set", *SHAPE[:2], 48)
  with pytest.raises(InputError, match="embeddings row 17 contains NaN or Inf"):
    sparse.nonneg_lasso(dictionary, z, LAM, path="device", mesh=ONE, memory_budget=budget)


def _fake_devices(platform, count=1, limit=None):
  stats = {} if limit is None else {"bytes_limit": limit}
  device = type("Device", (), {"platform": platform, "memory_stats": lambda self: stats})()
  return lambda mesh: [device] * count


def test_auto_path_and_budget_by_platform():
  """``path="auto"``: the host loop on CPU devices, the device path on GPUs and TPUs; the default budget:
  1 GiB on CPU, 8 GiB per accelerator, at most a quarter of its memory."""
  assert sparse.choose_path(ONE) == "host" and sparse.default_memory_budget(ONE) == 1 << 30
  for platform, path in (("gpu", "device"), ("tpu", "device"), ("cpu", "host")):
    with mock.patch.object(_api, "_mesh_devices", _fake_devices(platform)):
      assert sparse.choose_path() == path
  with mock.patch.object(_api, "_mesh_devices", _fake_devices("gpu", 2, 80 << 30)):
    assert sparse.default_memory_budget() == 2 * (8 << 30)
  with mock.patch.object(_api, "_mesh_devices", _fake_devices("gpu", 1, 16 << 30)):
    assert sparse.default_memory_budget() == 4 << 30
  with mock.patch.object(_api, "_mesh_devices", _fake_devices("tpu", 4)):
    assert sparse.default_memory_budget() == 4 * (8 << 30)


@pytest.mark.slow
def test_row_bytes_bounds_xla_buffer_analysis():
  """The per-row estimate the chunks are sized with holds XLA's own count of the device path's temporary
  buffers (CPU compiler) per row."""
  c, d, b = SHAPE
  config = sparse.WorkingSetConfig(max_active=64)
  args = (jax.ShapeDtypeStruct((c, d), jnp.float32), jax.ShapeDtypeStruct((b, d), jnp.float32))
  solve = jax.jit(lambda a, z: sparse.working_set_device(Problem(a, z, jnp.full((b,), LAM)), config))
  temp = solve.lower(*args).compile().memory_analysis().temp_size_in_bytes
  assert 0 < temp / b <= sparse.row_bytes("working_set", c, d, 48)


@pytest.mark.parametrize("precision", ["highest", "default", "bfloat16"])
def test_screened_certificate_bounds_float64_kkt(precision):
  """``certify`` with a low-precision screen reports an upper bound of the KKT violation recomputed in
  float64 numpy (up to float32 rounding), on solutions far from and at the optimum; at HIGHEST it is the
  float32 value itself."""
  from conceptjax.sparse import _working_set as ws

  dictionary, z = _data(*SHAPE)
  c, d, b = SHAPE
  rng = np.random.default_rng(4)
  k = 16
  indices = np.stack([rng.choice(c, k, replace=False) for _ in range(b)]).astype(np.int32)
  w = np.where(rng.uniform(size=(b, k)) < 0.5, rng.uniform(0.0, 0.2, (b, k)), 0.0).astype(np.float32)
  config = sparse.WorkingSetConfig(working_size=k, max_active=k, screen_precision=precision)
  problem = Problem(jnp.asarray(dictionary), jnp.asarray(z), jnp.full((b,), LAM, jnp.float32))
  out = jax.jit(lambda i, w: ws.certify(problem, i, w, config))(jnp.asarray(indices), jnp.asarray(w))
  dense = np.zeros((b, c))
  np.put_along_axis(dense, indices, w, axis=1)
  exact = _kkt64(dictionary, z, dense)
  kkt = np.asarray(out.kkt, np.float64)
  assert np.all(kkt >= exact - 1e-6)
  if precision == "highest":
    np.testing.assert_allclose(kkt, exact, atol=1e-6)
  else:  # the largest violations are among the concepts recomputed exactly
    np.testing.assert_allclose(kkt, exact, rtol=1e-5, atol=1e-6)


def test_bfloat16_screen_certifies_in_float32():
  """The device path with a bfloat16 screen: every row reported converged has a float64 KKT violation
  within ``tol`` (plus float32 rounding), at scikit-learn's objective."""
  dictionary, z = _data(*SHAPE)
  res = sparse.nonneg_lasso(dictionary, z, LAM, path="device", mesh=ONE, screen_precision="bfloat16")
  assert np.all(res.converged)
  w = np.asarray(res.to_dense())
  assert np.all(_kkt64(dictionary, z, w) <= 1e-5 + 1e-6)
  np.testing.assert_allclose(_objective(dictionary, z, w), _sklearn(*SHAPE), rtol=2e-6)
