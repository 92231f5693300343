"""The CEIR concept VAE (Flax linen) and its loss.

References:
  Cui et al., "CEIR: Concept-based Explainable Image Representation Learning", 2023, Sec. 3.2 (encoder
  Linear-BatchNorm-ReLU-Linear to mean/log-variance, decoder Linear-BatchNorm-ReLU-Linear-Sigmoid, hidden 256,
  latent 128, loss = reconstruction + KL).
  Kingma and Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (reparameterisation, Gaussian KL).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

RECON_LOSSES = ("mse", "bce")
DECODER_OUTPUTS = ("auto", "sigmoid", "linear")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Static VAE settings.

  Attributes:
    hidden: hidden width of encoder and decoder (authors: 256; 512 on ImageNet).
    latent: latent width (authors: 128; 256 on ImageNet).
    recon: "mse" (default; the paper's L2) or "bce" (the authors' code: summed BCE with torch's log clamp at
      -100, applied to z-scored targets that leave [0, 1]).
    kl_weight: weight of the KL term (authors: 1).
    decoder_output: "sigmoid" (the authors' decoder), "linear" (no final activation; only with "mse") or
      "auto" (default): sigmoid for "bce", linear for "mse". MSE against z-scored scores needs the linear
      output: a sigmoid cannot reach the negative half of the targets (its best MSE is ~0.58 per concept
      for standard-normal targets).
    bn_momentum: BatchNorm running-average decay (torch momentum 0.1 == 0.9 here).
  """

  hidden: int = 256
  latent: int = 128
  recon: str = "mse"
  kl_weight: float = 1.0
  decoder_output: str = "auto"
  bn_momentum: float = 0.9

  def __post_init__(self):
    from conceptjax.errors import check

    check(self.recon in RECON_LOSSES, f"VAEConfig.recon must be one of {RECON_LOSSES}, got {self.recon!r}")
    check(
      self.decoder_output in DECODER_OUTPUTS,
      f"VAEConfig.decoder_output must be one of {DECODER_OUTPUTS}, got {self.decoder_output!r}",
    )
    check(
      not (self.recon == "bce" and self.decoder_output == "linear"),
      "VAEConfig: recon='bce' needs decoder_output='sigmoid' (or 'auto')",
    )
    check(
      self.hidden > 0 and self.latent > 0, f"VAEConfig: bad sizes hidden={self.hidden} latent={self.latent}"
    )
    check(self.kl_weight >= 0, f"VAEConfig.kl_weight must be >= 0, got {self.kl_weight}")

  @property
  def sigmoid_output(self) -> bool:
    """Whether the decoder ends with a sigmoid (``decoder_output`` with "auto" resolved)."""
    return self.decoder_output == "sigmoid" or (self.decoder_output == "auto" and self.recon == "bce")


class _Block(nn.Module):
  """Linear -> BatchNorm -> ReLU.

  The Linear has no bias: BatchNorm subtracts the batch mean, so a bias there has an exactly zero gradient
  in exact arithmetic and Adam would turn its rounding noise into +-lr steps (the function class is the same
  as the authors' Linear with bias).
  """

  features: int
  momentum: float

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(self.features, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5)(x)
    return nn.relu(x)


class VAE(nn.Module):
  """Concept VAE. ``__call__(x, key, train) -> (decoder logits [B, c], mean [B, k], logvar [B, k])``.

  With a sigmoid output (``VAEConfig.sigmoid_output``) the reconstruction is ``sigmoid(logits)`` (see
  ``reconstruction``).
  """

  input_dim: int
  config: VAEConfig

  def setup(self):
    cfg = self.config
    self.enc = _Block(cfg.hidden, cfg.bn_momentum)
    self.enc_mean = nn.Dense(cfg.latent)
    self.enc_logvar = nn.Dense(cfg.latent)
    self.dec = _Block(cfg.hidden, cfg.bn_momentum)
    self.dec_out = nn.Dense(self.input_dim)

  def encode(self, x, train: bool = False):
    """[B, c] concept scores -> (mean [B, k], logvar [B, k])."""
    h = self.enc(x, train)
    return self.enc_mean(h), self.enc_logvar(h)

  def decode_logits(self, z, train: bool = False):
    """[B, k] latent -> [B, c] pre-activation outputs."""
    return self.dec_out(self.dec(z, train))

  def __call__(self, x, key, train: bool = True):
    mean, logvar = self.encode(x, train)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    return self.decode_logits(z, train), mean, logvar


def reconstruction(logits: jax.Array, config: VAEConfig) -> jax.Array:
  """Decoder output from its logits: sigmoid or identity."""
  return jax.nn.sigmoid(logits) if config.sigmoid_output else logits


@jax.custom_vjp
def clamped_bce(p: jax.Array, target: jax.Array) -> jax.Array:
  """Elementwise BCE exactly as torch's ``binary_cross_entropy`` computes it, for probabilities ``p``.

  Forward: ``-(y * max(log p, -100) + (1 - y) * max(log(1 - p), -100))``; targets outside [0, 1] (z-scored
  concept scores, as in the authors' code) give a finite, possibly negative, loss. Backward: torch's formula
  ``(p - y) / max(p (1 - p), 1e-12)``, which ignores the clamp (so a saturated ``p`` still gets a gradient).
  """
  log_p = jnp.maximum(jnp.log(p), -100.0)
  log_1mp = jnp.maximum(jnp.log1p(-p), -100.0)
  return -(target * log_p + (1.0 - target) * log_1mp)


def _bce_fwd(p, target):
  return clamped_bce(p, target), (p, target)


def _bce_bwd(res, g):
  p, target = res
  grad_p = g * (p - target) / jnp.maximum(p * (1.0 - p), 1e-12)
  grad_t = g * (jnp.maximum(jnp.log1p(-p), -100.0) - jnp.maximum(jnp.log(p), -100.0))
  return grad_p, grad_t


clamped_bce.defvjp(_bce_fwd, _bce_bwd)


def vae_loss_terms(
  logits: jax.Array, mean: jax.Array, logvar: jax.Array, x: jax.Array, config: VAEConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Per-batch VAE loss: mean over rows of (summed reconstruction + kl_weight * summed KL).

  Args:
    logits: [B, c] decoder pre-activations; mean, logvar: [B, k]; x: [B, c] targets.

  Returns:
    (loss [], {"recon": [], "kl": []}), each the batch mean of the per-row sum.
  """
  if config.recon == "bce":
    recon = jnp.sum(clamped_bce(jax.nn.sigmoid(logits), x), axis=-1)
  else:
    recon = jnp.sum((reconstruction(logits, config) - x) ** 2, axis=-1)
  kl = -0.5 * jnp.sum(1.0 + logvar - mean**2 - jnp.exp(logvar), axis=-1)
  recon, kl = jnp.mean(recon), jnp.mean(kl)
  return recon + config.kl_weight * kl, {"recon": recon, "kl": kl}


def vae_loss(
  params: Any, batch_stats: Any, x: jax.Array, key: jax.Array, model: VAE
) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
  """Training-mode loss for ``jax.value_and_grad(..., has_aux=True)``.

  Returns:
    (loss, ({"recon", "kl"}, updated batch_stats)).
  """
  (logits, mean, logvar), updates = model.apply(
    {"params": params, "batch_stats": batch_stats}, x, key, train=True, mutable=["batch_stats"]
  )
  loss, terms = vae_loss_terms(logits, mean, logvar, x, model.config)
  return loss, (terms, updates["batch_stats"])
