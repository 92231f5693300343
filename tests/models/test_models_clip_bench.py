"""benchmarks/clip_throughput.py at its tiny preset: runs, records, and the two encoders agree."""

import json

import pytest

from benchmarks import clip_throughput


def test_tiny_preset_record(tmp_path):
  out = tmp_path / "clip.json"
  assert clip_throughput.main(["--preset", "tiny", "--rounds", "2", "--out", str(out)]) == 0
  record = json.loads(out.read_text())
  (row,) = record["rows"]
  assert record["preset"] == "tiny" and row["batch"] == 8 and len(row["jax_times_s"]) == 2
  assert row["jax_images_per_s"] == pytest.approx(8 / row["jax_median_s"])
  assert record["environment"]["jax"] and record["environment"]["device_count"] >= 1
  if "torch_images_per_s" in row:  # torch installed: the same weights give the same features
    assert row["max_abs_diff"] < 1e-5 and len(row["torch_times_s"]) == 2
