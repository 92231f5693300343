"""Pieces both of the project's transformers (CLIP, GPT-2) use: activations and scaled dot-product attention.

References:
  Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
  Hendrycks and Gimpel, "Gaussian Error Linear Units (GELUs)", 2016 (exact, tanh and sigmoid forms).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "attention"]

ACTIVATIONS = {
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
  "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP's
}


def attention(
  q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array | None, scale: float, dtype: Any
) -> jax.Array:
  """Softmax attention of queries over keys, scores and softmax in float32.

  Args:
    q: [B, T, H, D] queries; k, v: [B, S, H, D] keys and values.
    allowed: bool, broadcastable to [B, H, T, S] (False: masked out), or None for no mask.
    scale: multiplies the scores (``1 / sqrt(D)`` in both models).
    dtype: compute dtype of the weighted sum.

  Returns:
    [B, T, H * D].
  """
  b, t, h, d = q.shape
  scores = jnp.einsum("bthd,bshd->bhts", q, k.astype(q.dtype)).astype(jnp.float32) * scale
  if allowed is not None:
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
  return jnp.einsum("bhts,bshd->bthd", weights, v.astype(dtype)).reshape(b, t, h * d)
