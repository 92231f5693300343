"""The synthetic EDDP experiment at CI size: runs end to end and its scores are consistent with the truth."""

import json

import pytest

from experiments import run as runner


@pytest.mark.slow  # ~11 min wall at load average 20 on 2 cores (compiles three stages); est. ~1 min idle
def test_eddp_synthetic_runlocal(tmp_path):
  config = runner.load_config("experiments/configs/eddp_synthetic.py:runlocal=True,seed=1")
  metrics = runner.run(config, tmp_path)
  for key in ("iou", "decoding_cos", "encoding_cos", "pattern_cav_cos", "pca_cos", "seconds"):
    assert key in metrics
  for key in ("iou", "decoding_cos", "encoding_cos", "pattern_cav_cos", "pca_cos", "fastica_cos", "nmf_cos"):
    assert 0.0 <= metrics[key] <= 1.0 + 1e-6, (key, metrics[key])
  # the calibration of the planted data: the oracle filter + formula on positives is near exact,
  # Pattern-CAV (mean difference) is biased by the correlated directions
  assert metrics["oracle_encoding_cos"] > 0.95
  assert metrics["pattern_cav_cos"] < 0.85
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved["iou"] == metrics["iou"]
  assert (tmp_path / "directions.npz").exists()
