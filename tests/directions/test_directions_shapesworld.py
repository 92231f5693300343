"""EDDP ShapesWorld dissection: concept masks on the patch grid, IoU table, influence test, runlocal run."""

import json

import numpy as np
import pytest

from conceptjax.data import shapesworld as sw
from experiments.tasks import eddp_shapesworld as task


def test_concept_masks_pool_pixel_masks_onto_the_patch_grid():
  s = sw.generate(sw.WorldConfig(image_size=32), 6, seed=3)
  names, masks = task.concept_masks(s, 8, 0.5)
  assert masks.shape[:2] == (6, 64) and masks.shape[2] == len(names)
  # independent oracle: a patch is in a mask when >= half of its 4x4 pixels are
  for n in range(6):
    for cell in range(64):
      r, c = divmod(cell, 8)
      blk = np.s_[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4]
      assert masks[n, cell, names.index("background")] == (s.background_mask[n][blk].mean() >= 0.5)
      bg = sw.ATTRIBUTES["background"][s.background[n]]
      assert masks[n, cell, names.index(f"background:{bg}")] == (s.background_mask[n][blk].mean() >= 0.5)
      shape = sw.ATTRIBUTES["shape"][s.shape[n, 0]]
      own = s.object_masks[n, 0][blk].mean() >= 0.5
      if own:
        assert masks[n, cell, names.index(f"shape:{shape}")]
        assert masks[n, cell, names.index("object")]


def test_dissect_best_iou_matches_a_direct_count():
  rng = np.random.default_rng(0)
  masks = rng.random((200, 4)) < 0.3
  pos = np.stack([masks[:, 2] | (rng.random(200) < 0.05), rng.random(200) < 0.5], 1)
  rows = task.dissect(masks, pos, ["a", "b", "c", "d"])
  for i, row in enumerate(rows):
    ious = [(masks[:, c] & pos[:, i]).sum() / (masks[:, c] | pos[:, i]).sum() for c in range(4)]
    assert row["best_concept"] == "abcd"[int(np.argmax(ious))]
    assert row["iou"] == pytest.approx(max(ious), abs=1e-4)
  assert rows[0]["best_concept"] == "c" and rows[0]["iou"] > 0.8


def test_influence_detects_the_direction_a_linear_head_reads():
  import jax.numpy as jnp

  def head(params, x):
    return jnp.mean(x, axis=1) @ params

  d = 50
  kernel = np.zeros((d, 3), np.float32)
  kernel[0] = [1.0, -1.0, 0.0]  # only coordinate 0 moves the logits apart
  x = np.random.default_rng(0).normal(size=(8, 4, d)).astype(np.float32)
  shifts = np.zeros((2, d), np.float32)
  shifts[0, 0] = 3.0  # along the coordinate the head reads
  shifts[1, 5] = 3.0  # along one it ignores
  out = task.influence(head, jnp.asarray(kernel), x, shifts, permutations=30, seed=0)
  assert out[0]["logit_spread"] == pytest.approx(np.std([3.0, -3.0, 0.0]), rel=1e-4)
  # a shuffled copy ties only when the 3 lands on coordinate 0 again (probability 1/50 per copy)
  assert out[0]["p_value"] < 0.2
  assert out[1]["logit_spread"] == pytest.approx(0.0, abs=1e-6) and out[1]["p_value"] == 1.0


@pytest.mark.slow  # compiles the CNN and three EDDP stages: minutes on the shared 2-core machine
def test_eddp_shapesworld_runlocal(tmp_path):
  from experiments import run as runner

  config = runner.load_config("experiments/configs/eddp_shapesworld.py:runlocal=True")
  metrics = runner.run(config, tmp_path)
  for key in (
    "detectors_iou_gt_0_2",
    "mean_best_iou",
    "pca_mean_best_iou",
    "kmeans_mean_best_iou",
    "seconds",
  ):
    assert key in metrics
  assert 0 <= metrics["detectors_iou_gt_0_2"] <= metrics["num_detectors"]
  table = json.loads((tmp_path / "dissection.json").read_text())
  assert len(table["eddp"]) == metrics["num_detectors"]
  assert metrics["mean_best_iou"] == pytest.approx(np.mean([r["iou"] for r in table["eddp"]]), abs=1e-3)
