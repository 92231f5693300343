"""The TExplain translator: frozen classifier features -> a prefix of k LM input embeddings.

References:
  TExplain (docs/texplain.md): "a trained translator (3 linear layers, no non-linearity) maps [the
  classifier's features] into the input of a frozen language model". The prefix form follows ClipCap
  (Mokady et al., 2021) and DeViL (Dani et al., 2023).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class TranslatorConfig:
  """Static settings of the translator.

  Attributes:
    prefix_len: k, number of LM input embeddings produced per image.
    embed_dim: E, the LM's embedding width.
    hidden_dims: widths of the hidden layers; ``len(hidden_dims) + 1`` linear layers in all (default 3).
    activation: None (the paper: a purely linear map) or "relu" / "gelu" / "tanh" between layers.
  """

  prefix_len: int = 4
  embed_dim: int = 64
  hidden_dims: tuple[int, ...] = (256, 256)
  activation: str | None = None

  def __post_init__(self):
    if self.activation is not None and self.activation not in _ACTIVATIONS:
      raise ValueError(f"unknown translator activation {self.activation!r}; known: {sorted(_ACTIVATIONS)}")


class Translator(nn.Module):
  """Linear layers [B, F] -> [B, k, E] (optionally with a non-linearity between them)."""

  config: TranslatorConfig

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    cfg = self.config
    x = features
    for i, width in enumerate(cfg.hidden_dims):
      x = nn.Dense(width, name=f"linear_{i}")(x)
      if cfg.activation is not None:
        x = _ACTIVATIONS[cfg.activation](x)
    x = nn.Dense(cfg.prefix_len * cfg.embed_dim, name=f"linear_{len(cfg.hidden_dims)}")(x)
    return x.reshape(*features.shape[:-1], cfg.prefix_len, cfg.embed_dim)


def init_translator(key: jax.Array, config: TranslatorConfig, feature_dim: int) -> Any:
  """Random translator parameters for features of width ``feature_dim`` (explicit key)."""
  return Translator(config).init(key, jnp.zeros((1, feature_dim), jnp.float32))["params"]


def translate(config: TranslatorConfig, params: Any, features: jax.Array) -> jax.Array:
  """The prefix embeddings: features [B, F] -> [B, k, E]."""
  return Translator(config).apply({"params": params}, features)
