"""Uncertainty Region Alignment: move patches onto the detectors' hyperplanes and read the frozen head.

With ``W = [w_1 .. w_I]`` ([D, I]) and logits ``W^T x - b``, the shift ``dx`` is the smallest step (or the
step along the signal vectors ``S``) that sets every logit to zero:
  unconstrained:  dx = pinv(W^T) (W^T x - b) = W (W^T W)^-1 (W^T x - b)
  signal span:    dx = S (W^T S)^-1 (W^T x - b)        (S columns are the signal vectors)
(linear solves: the detectors, and W^T S, are assumed non-singular, which holds for distinct directions).
and ``x' = x - kappa * dx``. With ``kappa = 1`` every patch lands on the intersection of the hyperplanes. URA
feeds the shifted patches to the frozen rest of the network and maximises the entropy of its predictions,
so that the directions become the ones its decision depends on.

References:
  EDDP, arXiv 2509.23926, Uncertainty Region Alignment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ura_shift(weight: jax.Array, bias: jax.Array, x: jax.Array, signal: jax.Array | None = None) -> jax.Array:
  """The displacement dx that moves x onto the intersection of the hyperplanes w_i . x = b_i.

  Args:
    weight: [I, D] rows w_i. bias: [I]. x: [..., D].
    signal: optional [I, D] signal vectors; when given, dx lies in their span (signal-span variant).

  Returns:
    [..., D] dx (so that ``weight @ (x - dx) == bias``).
  """
  r = x @ weight.T - bias  # [..., I]
  # One inverse of the small [I, I] system for all patches (not a factorisation per patch, and not a
  # triangular solve with N right-hand sides, both slow on CPU): a c_p = r_p, so C = R a^-T.
  if signal is None:
    # pinv(W^T) = W (W^T W)^-1 for linearly independent detectors: dx = r (W^T W)^-1 W^T (rows).
    a, basis = weight @ weight.T, weight
  else:
    a, basis = weight @ signal.T, signal  # [I, I] = W^T S
  return (r @ jnp.linalg.inv(a).T) @ basis


def ura_entropy(
  head_fn,
  head_params,
  weight: jax.Array,
  bias: jax.Array,
  x: jax.Array,
  kappa: jax.Array,
  signal: jax.Array | None = None,
) -> jax.Array:
  """Mean normalised entropy (in [0, 1]) of the head's predictions on shifted patches.

  Args:
    head_fn: ``(head_params, x [B, P, D]) -> logits [B, K]``, the frozen rest of the network.
    weight, bias, signal: as in ``ura_shift``.
    x: [B, P, D] patches of B images.
    kappa: [B, P] or [B, 1] step fractions.

  Returns:
    [B] entropy of softmax(head(x - kappa dx)) divided by log K.
  """
  dx = ura_shift(weight, bias, x, signal)
  logits = head_fn(head_params, x - kappa[..., None] * dx)
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1) / jnp.log(logits.shape[-1])
