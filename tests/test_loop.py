"""The shared loop helper: convergence, per-row freezing, history, and eager == jit."""

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.loop import fixed_point_loop


def _halving(x0, tol, max_iter, check_every=1, min_iter=0):
  # x_{k+1} = x_k / 2 per row; error = |x|: row i converges after ceil(log2(x0_i / tol)) steps.
  return fixed_point_loop(
    lambda x, _: x / 2.0,
    x0,
    jnp.abs,
    tol=tol,
    max_iter=max_iter,
    check_every=check_every,
    min_iter=min_iter,
  )


def test_rows_converge_at_their_own_iteration_and_are_frozen():
  x0 = jnp.array([1.0, 8.0, 1024.0])
  x, info = jax.jit(_halving, static_argnums=(2, 3))(x0, 1.0, 100)
  np.testing.assert_array_equal(info.iterations, [1, 3, 10])
  assert bool(info.converged.all())
  # Frozen at the first iterate below tol, not halved further while row 3 finished.
  np.testing.assert_allclose(x, [0.5, 1.0, 1.0])
  hist = np.asarray(info.history)
  assert hist[0] == 512.0 and hist[9] == 1.0 and (hist[10:] == -1).all()


def test_max_iter_reports_non_convergence():
  x, info = _halving(jnp.array([1e6, 1.0]), 0.1, 5)
  np.testing.assert_array_equal(info.converged, [False, True])
  np.testing.assert_array_equal(info.iterations, [5, 4])
  np.testing.assert_allclose(x[0], 1e6 / 32)


def test_check_every_and_min_iter():
  _, info = _halving(jnp.array([1.0]), 10.0, 20, check_every=4, min_iter=8)
  np.testing.assert_array_equal(info.iterations, [8])


def test_eager_equals_jit():
  x0 = jnp.array([3.0, 7.0, 300.0])
  with jax.disable_jit():
    xe, ie = _halving(x0, 0.1, 50)
  xj, ij = jax.jit(_halving, static_argnums=(2, 3))(x0, 0.1, 50)
  np.testing.assert_allclose(xe, xj)
  np.testing.assert_array_equal(ie.iterations, ij.iterations)
