"""Regression: the working set on several fake CPU devices must not deadlock (jaxlib's batched LAPACK
kernels wait for the XLA thread pool from inside it; ``nonneg_lasso`` feeds them one matrix at a time)."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conceptjax import parallel
from conceptjax.sparse import _api, _gram

# The reproducer of the hang (64 rows x 248 concepts x d=64 on 8 devices), run in a subprocess under a
# timeout so that a regression fails the suite instead of hanging it.
_SCRIPT = textwrap.dedent(
  """
  import numpy as np
  from conceptjax import splice
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((248, 64)).astype(np.float32)
  d = splice.dictionary_from_embeddings(emb, [f"c{i}" for i in range(248)])
  z = rng.standard_normal((64, 64)).astype(np.float32)
  out = splice.decompose(d, np.full(64, 0.01, np.float32), z)
  print("converged", float(np.mean(np.asarray(out.converged))), float(np.max(out.kkt_violation)))
  """
)


def test_serial_lapack_chosen_for_multi_device_cpu_mesh():
  assert jax.device_count() == 8 and jax.devices()[0].platform == "cpu"
  assert _api._serial_lapack(None)
  assert _api._serial_lapack(parallel.data_mesh())
  assert not _api._serial_lapack(parallel.data_mesh(jax.devices()[:1]))


def test_serial_cholesky_and_solve_match_numpy():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(5, 6, 6)).astype(np.float32)
  m = a @ a.transpose(0, 2, 1) + 6 * np.eye(6, dtype=np.float32)
  r = rng.normal(size=(5, 6)).astype(np.float32)
  for serial in (False, True):
    f = jax.jit(lambda m, r, s=serial: _gram.cho_solve(_gram.cholesky(m, serial=s), r, serial=s))
    np.testing.assert_allclose(f(m, r), np.linalg.solve(m, r[..., None])[..., 0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(_gram.cholesky(m, serial=True), np.linalg.cholesky(m), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_eight_cpu_devices_do_not_deadlock():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  try:
    out = subprocess.run(
      [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
  except subprocess.TimeoutExpired:
    pytest.fail(
      "nonneg_lasso on 8 fake CPU devices did not finish in 300 s (the LAPACK thread-pool deadlock)"
    )
  assert out.returncode == 0, out.stderr[-2000:]
  _, frac, kkt = out.stdout.split()[-3:]
  assert float(frac) == 1.0 and float(kkt) <= 1e-5
