"""Problem generators: determinism in the key, unit rows, real coherence, a valid sparse ground truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax.errors import InputError
from conceptjax.sparse import synthetic

C, D, B = 600, 64, 40


def _coherence(dictionary):
  """(mean |cos| off the diagonal, share of the energy on the top singular value), numpy oracle."""
  x = np.asarray(dictionary, np.float64)
  gram = x @ x.T
  off = np.abs(gram[~np.eye(len(x), dtype=bool)])
  sv = np.linalg.svd(x, compute_uv=False)
  return off.mean(), sv[0] ** 2 / np.sum(sv**2)


@pytest.mark.parametrize("make", [synthetic.gaussian_dictionary, synthetic.coherent_dictionary])
def test_dictionary_deterministic_unit_rows(make):
  a = np.asarray(make(jax.random.key(1), C, D))
  b = np.asarray(make(jax.random.key(1), C, D))
  other = np.asarray(make(jax.random.key(2), C, D))
  assert a.shape == (C, D) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - other).max() > 0.1
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_dictionary_dtype_follows_x64(x64):
  assert synthetic.gaussian_dictionary(jax.random.key(0), 10, 4).dtype == jnp.float64


def test_coherent_is_coherent_and_centred():
  gauss = synthetic.gaussian_dictionary(jax.random.key(0), C, D)
  coh = synthetic.coherent_dictionary(jax.random.key(0), C, D)
  g_cos, g_top = _coherence(gauss)
  c_cos, c_top = _coherence(coh)
  assert c_cos > 1.8 * g_cos, (c_cos, g_cos)
  assert c_top > 3 * g_top, (c_top, g_top)
  # Near-duplicates: most rows have a neighbour with cosine > 0.7; a Gaussian dictionary has none.
  x = np.asarray(coh, np.float64)
  gram = x @ x.T - 2 * np.eye(C)
  assert np.median(gram.max(axis=1)) > 0.7
  assert np.asarray(gauss @ gauss.T - 2 * jnp.eye(C)).max() < 0.7
  # SpLiCE processing: mean row removed before the last normalisation (so the mean is small, not zero).
  assert np.linalg.norm(x.mean(axis=0)) < 0.1 * np.linalg.norm(x, axis=1).mean()


def test_center_normalize_matches_numpy():
  raw = np.random.default_rng(0).normal(size=(50, 8)) + 3.0
  rows = raw / np.linalg.norm(raw, axis=1, keepdims=True)
  centred = rows - rows.mean(axis=0)
  expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  np.testing.assert_allclose(synthetic.center_normalize(jnp.asarray(raw, jnp.float32)), expected, atol=1e-5)


def test_sparse_embeddings_ground_truth():
  dictionary = synthetic.gaussian_dictionary(jax.random.key(3), C, D)
  s1 = synthetic.sparse_embeddings(jax.random.key(4), dictionary, B)
  s2 = synthetic.sparse_embeddings(jax.random.key(4), dictionary, B)
  for a, b in zip(s1, s2, strict=True):
    np.testing.assert_array_equal(a, b)
  z, idx, val, n = (np.asarray(a) for a in s1)
  assert z.shape == (B, D) and idx.shape == val.shape == (B, 30)
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
  assert n.min() >= 10 and n.max() <= 30 and len(np.unique(n)) > 5
  dense = np.asarray(s1.to_dense(C))
  np.testing.assert_array_equal((dense > 0).sum(axis=1), n)
  assert (dense >= 0).all() and (val >= 0).all()
  for row in range(B):
    assert len(set(idx[row].tolist())) == 30  # distinct atoms
    assert (val[row, n[row] :] == 0).all() and (val[row, : n[row]] > 0).all()
  # The noiseless part has cosine ~ 1/sqrt(1 + 0.1^2) with the embedding; the residual norm is ~0.1/1.005.
  recon = dense @ np.asarray(dictionary)
  cos = np.sum(recon * z, axis=1) / np.linalg.norm(recon, axis=1)
  np.testing.assert_allclose(np.linalg.norm(z - recon, axis=1), 0.1 / np.sqrt(1.01), rtol=0.1)
  assert cos.min() > 0.97


def test_sparse_embeddings_no_noise_is_exact():
  dictionary = synthetic.coherent_dictionary(jax.random.key(0), C, D)
  s = synthetic.sparse_embeddings(jax.random.key(1), dictionary, B, noise=0.0)
  np.testing.assert_allclose(s.to_dense(C) @ dictionary, s.embeddings, atol=1e-5)


def test_sparse_embeddings_rejects_bad_counts():
  dictionary = synthetic.gaussian_dictionary(jax.random.key(0), C, D)
  with pytest.raises(InputError, match="max_atoms"):
    synthetic.sparse_embeddings(jax.random.key(0), dictionary, 4, min_atoms=5, max_atoms=C + 1)
  with pytest.raises(InputError, match="min_atoms"):
    synthetic.sparse_embeddings(jax.random.key(0), dictionary, 4, min_atoms=0)
