"""CEIR concept side: cos^3 similarity, teacher similarities, filters A and B on planted concepts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import ceir
from conceptjax.ceir._synthetic import planted_concepts
from conceptjax.errors import InputError


def _cos3_numpy(a, b):
  def prep(x):
    x = x - x.mean(0)
    x = x**3
    return x / np.sqrt((x**2).sum(0))

  return (prep(a) * prep(b)).sum(0)


def test_cos3_is_one_under_positive_affine_map_and_matches_numpy(x64):
  rng = np.random.default_rng(0)
  p = rng.normal(size=(200, 7))
  scale = rng.uniform(0.1, 5.0, size=7)
  shift = rng.normal(size=7)
  np.testing.assert_allclose(ceir.cos3_similarity(p, p * scale + shift), 1.0, atol=1e-12)
  np.testing.assert_allclose(ceir.cos3_similarity(p, -p * scale + shift), -1.0, atol=1e-12)
  q = rng.normal(size=(200, 7)) + 0.3 * p
  np.testing.assert_allclose(ceir.cos3_similarity(p, q), _cos3_numpy(p, q), rtol=1e-10)
  w = rng.normal(size=(7, 5))
  f = rng.normal(size=(200, 5))
  np.testing.assert_allclose(ceir.cos3_loss(w, f, p), -_cos3_numpy(p, f @ w.T).mean(), rtol=1e-10)


def test_teacher_similarities_are_cosines_eager_equals_jit():
  rng = np.random.default_rng(1)
  img, txt = rng.normal(size=(9, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
  want = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (
    txt / np.linalg.norm(txt, axis=1, keepdims=True)
  ).T
  got = ceir.teacher_similarities(img, txt)
  with jax.disable_jit():
    eager = ceir.teacher_similarities(img, txt)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(eager, got, atol=1e-6)


def test_filter_a_uses_mean_of_top5():
  rng = np.random.default_rng(2)
  p = rng.uniform(0.0, 0.2, size=(50, 3)).astype(np.float32)
  p[:5, 0] = 0.3  # top-5 mean 0.3 > 0.25
  p[:4, 1] = 0.3  # top-5 mean < 0.3*4/5 + 0.2/5 = 0.28 ... but check against numpy
  want = np.sort(p, axis=0)[-5:].mean(0) > 0.25
  np.testing.assert_array_equal(ceir.filter_a(p), want)
  assert want[0] and not want[2]


def test_planted_concepts_filters_remove_exactly_dead_and_noise():
  d = planted_concepts(1600, feature_dim=24, num_true=12, num_dead=4, num_noise=4, seed=3)
  tr, va = slice(0, 1200), slice(1200, None)
  keep_a = np.asarray(ceir.filter_a(d.teacher[tr]))
  np.testing.assert_array_equal(keep_a, d.kind != 1)  # filter A removes exactly the dead concepts
  cfg = ceir.ProjectionConfig(max_steps=400)
  r = ceir.train_projection(
    jax.random.key(0), d.features[tr], d.teacher[tr][:, keep_a], d.features[va], d.teacher[va][:, keep_a], cfg
  )
  kept = np.asarray(r.kept)
  np.testing.assert_array_equal(kept, d.kind[keep_a] == 0)  # filter B removes exactly the noise concepts
  sim = np.asarray(r.val_similarity)
  np.testing.assert_allclose(
    sim, _cos3_numpy(d.teacher[va][:, keep_a], d.features[va] @ np.asarray(r.weight).T), atol=1e-4
  )
  assert sim[kept].min() > 0.6 and np.abs(sim[~kept]).max() < 0.3
  # early stopping keeps the best check: its validation loss is no worse than the initial W's.
  w0 = ceir._projection.init_projection(jax.random.split(jax.random.key(0))[0], keep_a.sum(), 24)
  assert ceir.cos3_loss(r.weight, d.features[va], d.teacher[va][:, keep_a]) < ceir.cos3_loss(
    w0, d.features[va], d.teacher[va][:, keep_a]
  )
  assert int(r.best_step) % cfg.check_every == 0 and int(r.best_step) <= int(r.steps) <= cfg.max_steps


def test_standardizer_uses_train_statistics():
  rng = np.random.default_rng(4)
  train, test = rng.normal(3.0, 2.0, size=(100, 5)), rng.normal(size=(10, 5))
  st = ceir.fit_standardizer(train)
  np.testing.assert_allclose(ceir.standardize(test, st), (test - train.mean(0)) / train.std(0), rtol=1e-5)


def test_read_concepts_rejects_duplicates_and_empty(tmp_path):
  p = tmp_path / "c.txt"
  p.write_text("red\n# comment\n\nstar\nRed\n")
  with pytest.raises(InputError, match=r"c.txt:5: duplicate concept 'Red'"):
    ceir.read_concepts(p)
  p.write_text("red\nstar\n")
  assert ceir.read_concepts(p) == ["red", "star"]
  p.write_text("\n# nothing\n")
  with pytest.raises(InputError, match="no concepts"):
    ceir.read_concepts(p)
  with pytest.raises(InputError, match="zero norm"):
    ceir.check_embeddings(jnp.zeros((2, 3)), "images")


def test_weight_zero_rows_take_no_part():
  """Padding rows of weight 0 (the per-process padding of a multi-process projection) change neither the
  cos^3 similarity (numpy oracle on the real rows) nor the trained projection."""
  d = planted_concepts(300, feature_dim=8, num_true=4, num_dead=0, num_noise=2, seed=5)
  f, t = d.features[:200], d.teacher[:200]
  pad = lambda a, k: np.concatenate([a, np.repeat(a[-1:] * 3.0, k, axis=0)])  # noqa: E731
  rows = np.r_[np.ones(200), np.zeros(7)].astype(np.float32)
  got = ceir.cos3_similarity(jnp.asarray(pad(t, 7)), jnp.asarray(pad(f[:, :6], 7)), jnp.asarray(rows))
  np.testing.assert_allclose(np.asarray(got), _cos3_numpy(t, f[:, :6]), atol=1e-5)
  cfg = ceir.ProjectionConfig(max_steps=100)
  key = jax.random.key(1)
  plain = ceir.train_projection(key, f, t, d.features[200:], d.teacher[200:], cfg)
  vrows = np.r_[np.ones(100), np.zeros(3)].astype(np.float32)
  padded = ceir._projection._train_projection(
    key, pad(f, 7), pad(t, 7), pad(d.features[200:], 3), pad(d.teacher[200:], 3), rows, vrows, cfg
  )
  np.testing.assert_allclose(np.asarray(padded.weight), np.asarray(plain.weight), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(padded.kept), np.asarray(plain.kept))
