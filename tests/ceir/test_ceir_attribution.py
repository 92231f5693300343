"""Integrated gradients on closed forms, label-free target, open-world label counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import ceir


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_ig_exact_for_quadratic_and_complete(method, x64):
  rng = np.random.default_rng(0)
  b = rng.normal(size=(5, 5))
  x, base = rng.normal(size=(3, 5)), rng.normal(size=(5,))
  fn = lambda xp, _: xp @ b @ xp  # gradient is linear along the path: every rule above is exact
  att = ceir.integrated_gradients(
    fn, jnp.asarray(x), jnp.asarray(base), ceir.IGConfig(steps=8, method=method)
  )
  mid = (
    x + base
  ) / 2  # integral of the linear gradient (B + B^T) (b + a (x - b)) over a is its midpoint value
  want = (x - base) * (mid @ (b + b.T).T)
  np.testing.assert_allclose(att.values, want, rtol=1e-10)
  gain = np.einsum("bi,ij,bj->b", x, b, x) - base @ b @ base
  np.testing.assert_allclose(att.gain, gain, rtol=1e-10)
  np.testing.assert_allclose(att.delta, 0.0, atol=1e-10)


def test_label_free_ig_smooth_encoder_completeness_eager_equals_jit():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(6, 3)) / 2, jnp.float32)
  encode = lambda row: jnp.tanh(row @ w)
  x = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  g = ceir.label_free_target(encode)
  run = jax.jit(lambda x: ceir.integrated_gradients(g, x, None, ceir.IGConfig(steps=50)))
  att = run(x)
  with jax.disable_jit():
    eager = ceir.integrated_gradients(g, x, None, ceir.IGConfig(steps=50))
  np.testing.assert_allclose(eager.values, att.values, rtol=1e-4, atol=1e-6)
  f = np.tanh(np.asarray(x) @ np.asarray(w))
  np.testing.assert_allclose(att.gain, (f * f).sum(1), rtol=1e-5)  # g(x) - g(0) with encode(0) = 0
  np.testing.assert_allclose(att.values.sum(1), att.gain, atol=1e-3)  # completeness within 1e-3


def test_open_world_labels_count_and_order():
  contrib = np.array([[0.5, -0.2, 0.01, 0.0], [0.04, -0.06, 0.9, 0.0], [0.3, 0.02, -0.5, 0.051]])
  labels = ceir.open_world_labels(contrib, threshold=0.05)
  np.testing.assert_array_equal(labels.counts, [2, 2, 2, 1])
  np.testing.assert_array_equal(labels.order, [0, 1, 2, 3])
  assert ceir.label_names(labels, ["a", "b", "c", "d"], top=2) == [("a", 2), ("b", 2)]
  norm = np.asarray(ceir.normalize_contributions(contrib, "max"))
  np.testing.assert_allclose(norm, contrib / np.abs(contrib).max(1, keepdims=True))
  np.testing.assert_array_equal(ceir.top_concepts(jnp.asarray(contrib), 2), [[0, 2], [2, 0], [0, 3]])
