"""The CEIR authors' PyTorch VAE training loop, as a timing peer for ``benchmarks/ceir_vae.py``.

Faithful to the authors' ``train_vae.py`` / ``components/vae.py`` (github.com/ShuhongLL/CEIR): a
``TensorDataset`` of float32 concept scores behind ``DataLoader(batch_size=256, shuffle=True)`` (default
collation, last partial batch kept), the model cast with ``.double()`` (float64, their setting; float32 as an
option), each batch cast with ``.double()``, ``optimizer.zero_grad()``, forward, summed BCE + KL,
``backward()``, ``loss.item()``, ``Adam.step()``. The model: encoder Linear(c, hidden) -> BatchNorm1d ->
ReLU -> Linear(hidden, 2 * latent), split into mean and log-variance; decoder Linear(latent, hidden) ->
BatchNorm1d -> ReLU -> Linear(hidden, c) -> Sigmoid.

torch is optional (``requirements-bench.txt``); importing this module raises ImportError without it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class AuthorsVAE(nn.Module):
  """The authors' ``VAE_base`` with batch norm on and dropout off (their training configuration)."""

  def __init__(self, input_dim: int, hidden: int, latent: int):
    super().__init__()
    self.encoder = nn.Sequential(
      nn.Linear(input_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent)
    )
    self.decoder = nn.Sequential(
      nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, input_dim), nn.Sigmoid()
    )

  def forward(self, x):
    mu, logvar = self.encoder(x).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    return self.decoder(z), mu, logvar


def authors_loss(recon, x, mu, logvar):
  """Summed BCE (torch clamps its logs at -100) + summed KL, as the authors' ``vae_loss``."""
  bce = F.binary_cross_entropy(recon, x, reduction="sum")
  kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
  return bce + kld


class TorchEpochs:
  """Holds the authors' model, optimiser and DataLoader; ``epoch()`` runs one training epoch.

  Args:
    data: [N, c] float32 concept scores (kept float32 in the dataset, cast per batch as the authors do).
    hidden, latent: VAE sizes; batch: DataLoader batch size; dtype: "float64" (authors) or "float32".
    threads: ``torch.set_num_threads``.
  """

  def __init__(
    self,
    data: np.ndarray,
    hidden: int,
    latent: int,
    batch: int = 256,
    dtype: str = "float64",
    threads: int = 2,
    seed: int = 0,
  ):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    self.dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    self.loader = DataLoader(
      TensorDataset(torch.from_numpy(np.asarray(data, np.float32))), batch, shuffle=True
    )
    self.model = AuthorsVAE(data.shape[1], hidden, latent).to(self.dtype)
    self.opt = torch.optim.Adam(self.model.parameters(), lr=5e-5)

  def epoch(self) -> float:
    """One epoch of the authors' loop; returns the summed loss divided by N (their printed figure)."""
    self.model.train()
    total = 0.0
    for (x,) in self.loader:
      x = x.to(self.dtype)
      self.opt.zero_grad()
      recon, mu, logvar = self.model(x)
      loss = authors_loss(recon, x, mu, logvar)
      loss.backward()
      total += loss.item()
      self.opt.step()
    return total / len(self.loader.dataset)


def time_epochs(runner: TorchEpochs, repeats: int) -> dict:
  """A first (warm-up) epoch, then ``repeats`` timed epochs: wall and process CPU seconds each."""
  t0 = time.perf_counter()
  first_loss = runner.epoch()
  first = time.perf_counter() - t0
  walls, cpus, losses = [], [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    losses.append(runner.epoch())
    walls.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  return {"first_s": first, "times_s": walls, "cpu_s": cpus, "losses": [first_loss, *losses]}


def version() -> str:
  return torch.__version__
