"""Signal vectors recover planted encoding directions; URA lands on the hyperplane intersection."""

import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import directions as dr


@pytest.fixture(scope="module")
def data():
  return dr.make_synthetic(0, dr.SyntheticConfig(images_per_class=1000, head_steps=300))


def test_synthetic_ground_truth_is_consistent(data):
  c = data.encoding.shape[0]
  np.testing.assert_allclose(data.decoding @ data.encoding.T, np.eye(c), atol=1e-5)
  np.testing.assert_allclose(data.decoding @ data.distractors.T, 0.0, atol=1e-5)
  flat = data.x.reshape(-1, data.x.shape[-1])
  a = data.concept_values.reshape(-1, c)
  # decoding directions read the planted concept values exactly (up to the constant offset)
  z = flat @ data.decoding.T
  np.testing.assert_allclose(z - z.mean(0), a - a.mean(0), atol=1e-3)
  assert data.head_accuracy > 0.85


def test_signal_formula_with_oracle_filter_recovers_encoding(data):
  flat = data.x.reshape(-1, data.x.shape[-1])
  lab = data.labels.reshape(-1)
  pos = lab[:, None] == np.arange(3)[None, :]
  s = np.asarray(dr.signal_vectors(jnp.asarray(data.decoding), jnp.asarray(flat), jnp.asarray(pos)))
  cos = dr.scoring.abs_cos(data.encoding, s)
  assert np.all(np.diag(cos) >= 0.99), np.diag(cos)
  # over all patches (not only the positives) the estimate is biased
  s_all = np.asarray(dr.signal_vectors(jnp.asarray(data.decoding), jnp.asarray(flat), jnp.ones_like(pos)))
  assert np.diag(dr.scoring.abs_cos(data.encoding, s_all)).min() < 0.95
  # signal values along the true encoding direction are the centred concept values
  sv = np.asarray(
    dr.signal_values(jnp.asarray(data.decoding), jnp.asarray(s), jnp.asarray(flat), flat.mean(0))
  )
  a = data.concept_values.reshape(-1, 3)
  assert np.sqrt(np.mean((sv - (a - a.mean(0))) ** 2)) < 0.1


@pytest.mark.parametrize("span", [False, True])
def test_ura_shift_with_kappa_one_lands_on_the_intersection(span):
  rng = np.random.default_rng(1)
  w = rng.normal(size=(3, 8))
  b = rng.normal(size=3)
  s = rng.normal(size=(3, 8)) if span else None
  x = rng.normal(size=(10, 2, 8))
  dx = np.asarray(
    dr.ura_shift(jnp.asarray(w), jnp.asarray(b), jnp.asarray(x), None if s is None else jnp.asarray(s))
  )
  np.testing.assert_allclose((x - dx) @ w.T, np.broadcast_to(b, (10, 2, 3)), atol=1e-4)
  if span:  # the step lies in the span of the signal vectors
    coef, *_ = np.linalg.lstsq(s.T, dx.reshape(-1, 8).T, rcond=None)
    np.testing.assert_allclose(s.T @ coef, dx.reshape(-1, 8).T, atol=1e-4)
  else:  # the minimum-norm step lies in the span of the filters
    coef, *_ = np.linalg.lstsq(w.T, dx.reshape(-1, 8).T, rcond=None)
    np.testing.assert_allclose(w.T @ coef, dx.reshape(-1, 8).T, atol=1e-4)


def test_ura_entropy_is_maximal_when_the_head_reads_only_the_removed_directions():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(2, 6))
  b = rng.normal(size=2)
  head = dr.LinearHead(kernel=jnp.asarray(w.T), bias=jnp.zeros(2))
  head_b = dr.LinearHead(kernel=jnp.asarray(w.T), bias=-jnp.asarray(b))
  x = jnp.asarray(rng.normal(size=(5, 1, 6)))
  h = dr.ura_entropy(dr.linear_head, head_b, jnp.asarray(w), jnp.asarray(b), x, jnp.ones((5, 1)))
  np.testing.assert_allclose(np.asarray(h), 1.0, atol=1e-5)  # logits all equal -> uniform
  h_half = dr.ura_entropy(dr.linear_head, head, jnp.asarray(w), jnp.asarray(b), x, jnp.full((5, 1), 0.5))
  assert np.all(np.asarray(h_half) < 1.0)


def test_project_to_data_span_removes_null_components():
  rng = np.random.default_rng(4)
  basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
  x = rng.normal(size=(50, 3)) @ basis[:, :3].T + 5.0
  w = rng.normal(size=(2, 6))
  p = np.asarray(dr.project_to_data_span(jnp.asarray(w), jnp.asarray(x)))
  np.testing.assert_allclose(p @ basis[:, 3:], 0.0, atol=1e-4)
  np.testing.assert_allclose(p @ basis[:, :3], w @ basis[:, :3], atol=1e-4)
