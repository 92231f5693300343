"""Encoding directions as signal vectors, and signal values.

For a detector with decoding direction ``w_i`` and filter output ``z_i = w_i . x``, the signal vector is the
regression of the patch on the filter output over the concept's positives only:
``s_i = cov(x, z_i) / var(z_i)`` over patches with ``y_i > threshold``. If ``x = S a + Dist b`` with
independent coordinates on the positives and ``w_i`` is the dual of ``s_i``, this recovers ``s_i`` exactly;
over all patches the coordinates correlate through the concept labels and the estimate is biased.

References:
  EDDP, arXiv 2509.23926, encoding directions = signal vectors; Kindermans et al. 2018 (PatternNet).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def signal_vectors(
  weight: jax.Array,
  x: jax.Array,
  positive: jax.Array,
  sample_weight: jax.Array | None = None,
) -> jax.Array:
  """s_i = cov(x, z_i) / var(z_i) over the positives of each detector.

  Args:
    weight: [I, D] decoding directions w_i (any scale; s_i scales as 1/|w_i| so that w_i . s_i = 1).
    x: [N, D] patches.
    positive: [N, I] bool or [0, 1] weights: which patches count as positives of detector i.
    sample_weight: [N] optional per-patch weights (0 for padding).

  Returns:
    [I, D] signal vectors (rows).
  """
  p = positive.astype(x.dtype)
  if sample_weight is not None:
    p = p * sample_weight[:, None]
  cnt = jnp.maximum(jnp.sum(p, axis=0), 1e-12)  # [I]
  z = x @ weight.T  # [N, I]
  mz = jnp.sum(p * z, axis=0) / cnt  # [I]
  zc = z - mz  # [N, I]
  cov = jnp.einsum("ni,nd->id", p * zc, x) / cnt[:, None]  # zc has weighted mean 0 over the positives
  var = jnp.sum(p * zc**2, axis=0) / cnt
  return cov / jnp.maximum(var, 1e-12)[:, None]


def signal_values(weight: jax.Array, signal: jax.Array, x: jax.Array, mean: jax.Array) -> jax.Array:
  """(w_i . x - w_i . E[x]) / (w_i . s_i) with unit s_i: how far along s_i a patch sits, from the mean patch.

  The signal vectors are normalised first, so the value is in the units of the activations along the unit
  encoding direction and does not depend on the scale of w_i.

  Args:
    weight: [I, D]; signal: [I, D]; x: [..., D]; mean: [D] E[x].

  Returns:
    [..., I].
  """
  unit = signal / jnp.linalg.norm(signal, axis=-1, keepdims=True)
  return ((x - mean) @ weight.T) / jnp.sum(weight * unit, axis=-1)


def project_to_data_span(weight: jax.Array, x: jax.Array, sample_weight: jax.Array | None = None, rtol=1e-4):
  """Removes the components of filters that no patch varies along (they change no detector output).

  A filter's component orthogonal to every centred patch is arbitrary (it only shifts the bias); the
  canonical decoding direction is the projection onto the span of the centred patches (the minimum-norm
  filter with the same outputs up to a constant).

  Args:
    weight: [I, D] filters. x: [N, D] patches. sample_weight: [N] optional (0 for padding).
    rtol: singular values below rtol * largest count as zero.

  Returns:
    [I, D] projected filters.
  """
  sw = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
  mean = (sw @ x) / jnp.sum(sw)
  xc = (x - mean) * jnp.sqrt(sw)[:, None]
  _, sv, vt = jnp.linalg.svd(xc, full_matrices=False)
  keep = (sv > rtol * sv[0]).astype(x.dtype)
  return ((weight @ vt.T) * keep) @ vt
