"""The CEIR benchmark runs at tiny size and writes a complete, consistent JSON and a plot."""

from benchmarks import ceir_vae
from conceptjax import io


def test_ceir_benchmark_tiny_preset(tmp_path):
  assert ceir_vae.main(["--preset", "tiny", "--out", str(tmp_path), "--repeats", "2"]) == 0
  res = io.read_json(tmp_path / "ceir_vae_tiny.json")
  assert (tmp_path / "ceir_vae_tiny.png").stat().st_size > 0
  (row,) = res["vae"]
  assert row["steps_per_epoch"] == row["n"] // row["batch"]
  assert (
    abs(row["samples_per_s"] - row["steps_per_epoch"] * row["batch"] / row["s_per_epoch"])
    < 1e-6 * row["samples_per_s"]
  )
  assert row["loss_finite_and_decreasing"]  # three epochs of training lower the loss
  assert len(row["epoch_times_s"]) == 2 and row["first_epoch_s"] >= row["compile_s"] >= 0
  assert res["projection"]["adam_step_s"] > 0 and res["environment"]["jax"]
