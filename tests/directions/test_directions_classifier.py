"""The small CNN: the feature-layer split recomposes the logits; a few steps learn a separable toy task."""

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.models import classifier as clf


def test_from_features_recomposes_logits_and_training_learns():
  cfg = clf.ClassifierConfig(num_classes=2, widths=(4, 8), feature_block=0, learning_rate=1e-2)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=32)
  images = rng.uniform(0, 0.2, size=(32, 8, 8, 3)).astype(np.float32)
  images[labels == 1, :4] += 0.8  # class 1: bright top half
  state = clf.create_train_state(jax.random.key(0), cfg, (8, 8, 3))
  logits, feats = clf.predict(state.params, jnp.asarray(images), cfg=cfg)
  assert feats.shape == (32, 4, 4, 4)
  head = clf.head_fn(cfg)
  np.testing.assert_allclose(head(state.params, feats.reshape(32, 16, 4)), logits, rtol=1e-5, atol=1e-5)
  first = None
  for _ in range(60):
    state, m = clf.train_step(state, jnp.asarray(images), jnp.asarray(labels), cfg=cfg)
    first = float(m["loss"]) if first is None else first
  assert float(m["loss"]) < 0.5 * first
  assert float(m["accuracy"]) == 1.0
