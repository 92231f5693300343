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
  # the PyTorch columns are measured when torch is importable, else skipped with a note
  assert row["torch"] or "torch_skipped" in row


def test_torch_peer_loss_equals_jax_bce_loss():
  """The PyTorch peer optimises the same objective as ``VAEConfig(recon="bce")`` (sum over the batch vs
  mean: a factor of the batch size). Skipped where torch is not installed (it is a benchmark-only peer)."""
  import numpy as np
  import pytest

  torch = pytest.importorskip("torch")
  from benchmarks import ceir_vae_torch
  from conceptjax import ceir

  rng = np.random.default_rng(0)
  logits, x = rng.normal(size=(7, 5)), rng.uniform(size=(7, 5))
  mean, logvar = rng.normal(size=(7, 3)), 0.3 * rng.normal(size=(7, 3))
  t = lambda a: torch.from_numpy(a)
  want = ceir_vae_torch.authors_loss(torch.sigmoid(t(logits)), t(x), t(mean), t(logvar)).item()
  got, _ = ceir.vae_loss_terms(logits, mean, logvar, x, ceir.VAEConfig(recon="bce"))
  np.testing.assert_allclose(float(got) * 7, want, rtol=1e-5)
