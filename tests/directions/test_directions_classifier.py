"""The small CNN: the feature-layer split recomposes the logits; a few steps learn a separable toy task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def _np_conv_relu(x, kernel, bias):
  """SAME 3x3 convolution + ReLU in numpy loops (the oracle). x: [B, H, W, C]; kernel: [3, 3, C, O]."""
  b, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      out += xp[:, dy : dy + h, dx : dx + w] @ kernel[dy, dx]
  return np.maximum(out + bias, 0.0)


def test_max_pooling_variant_matches_a_numpy_forward_pass():
  cfg = clf.ClassifierConfig(num_classes=3, widths=(4, 5), feature_block=0, pool="max", global_pool="max")
  images = np.random.default_rng(1).uniform(size=(2, 6, 6, 3)).astype(np.float32)
  state = clf.create_train_state(jax.random.key(1), cfg, (6, 6, 3))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params["params"])
  h = _np_conv_relu(images.astype(np.float64), p["conv0"]["kernel"], p["conv0"]["bias"])
  feats = h.reshape(2, 3, 2, 3, 2, 4).max(axis=(2, 4))  # 2x2 max pool
  h = _np_conv_relu(feats, p["conv1"]["kernel"], p["conv1"]["bias"])
  want = h.max(axis=(1, 2)) @ p["dense"]["kernel"] + p["dense"]["bias"]
  logits, f = clf.predict(state.params, jnp.asarray(images), cfg=cfg)
  np.testing.assert_allclose(f, feats, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
  head = clf.head_fn(cfg)  # URA's head recomposes the logits from the feature layer
  np.testing.assert_allclose(head(state.params, f.reshape(2, 9, 4)), logits, rtol=1e-5, atol=1e-5)


def test_unknown_pooling_is_an_input_error():

  from conceptjax.errors import InputError

  with pytest.raises(InputError, match="pool"):
    clf.ClassifierConfig(num_classes=2, pool="median")


@pytest.mark.slow  # ~1-2 min of CPU: trains the eddp_shapesworld classifier on real ShapesWorld images
def test_shapesworld_classifier_learns_shape_on_held_out_images():
  from conceptjax.data import shapesworld as sw
  from experiments import run as runner
  from experiments.tasks import eddp_shapesworld as task

  config = runner.load_config("experiments/configs/eddp_shapesworld.py")
  config.classifier_steps = 400
  world = sw.WorldConfig(image_size=config.image_size, max_objects=config.max_objects)
  train = sw.generate(world, 2000, seed=0, split="train")
  test = sw.generate(world, 300, seed=0, split="test")
  params, curve = task.train_classifier(
    config, train.images / np.float32(255), train.label, jax.random.key(0)
  )
  logits, _ = clf.predict(
    params, jnp.asarray(test.images, jnp.float32) / 255, cfg=task.classifier_config(config)
  )
  accuracy = np.mean(np.argmax(np.asarray(logits), -1) == test.label)
  assert curve[-1]["loss"] < 0.5 * curve[0]["loss"]
  assert accuracy >= 0.85  # chance is 1/6
