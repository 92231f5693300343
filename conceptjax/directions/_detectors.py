"""Half-space concept detectors on per-patch activations, and their warm starts.

Detector ``i`` fires on patch ``x`` with ``y_i = sigmoid((u_i . x - t_i) / M_i)``: ``u_i`` is a unit direction
(the decoding direction), ``M_i > 0`` the margin and ``t_i`` the offset along ``u_i``; in the paper's notation
``w_i = u_i / M_i`` and ``b_i = t_i / M_i``. Parameters are stored unconstrained (a free direction normalised
on use, a log margin), so any optax optimiser can train them.

References:
  EDDP, arXiv 2509.23926, "directional clustering"; warm start as in UIBE/CBE (orthogonal detectors in
  standardised space).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Detectors(NamedTuple):
  """I half-space detectors in a D-dimensional activation space."""

  direction: jax.Array  # [I, D] free; the unit decoding direction is direction / |direction|
  log_margin: jax.Array  # [I] log M_i
  offset: jax.Array  # [I] t_i, the threshold along the unit direction

  @property
  def unit(self) -> jax.Array:
    """[I, D] unit decoding directions u_i."""
    return self.direction / jnp.linalg.norm(self.direction, axis=-1, keepdims=True)

  @property
  def margin(self) -> jax.Array:
    """[I] margins M_i."""
    return jnp.exp(self.log_margin)

  @property
  def weight(self) -> jax.Array:
    """[I, D] w_i = u_i / M_i."""
    return self.unit / self.margin[:, None]

  @property
  def bias(self) -> jax.Array:
    """[I] b_i = t_i / M_i, so that the logit is w_i . x - b_i."""
    return self.offset / self.margin


class Standardizer(NamedTuple):
  """Per-dimension standardisation x~ = (x - mean) / scale."""

  mean: jax.Array  # [D]
  scale: jax.Array  # [D]

  def __call__(self, x: jax.Array) -> jax.Array:
    return (x - self.mean) / self.scale


def fit_standardizer(x: jax.Array, weights: jax.Array | None = None) -> Standardizer:
  """Weighted per-dimension mean and standard deviation of patches. x: [N, D]; weights: [N] or None.

  The scale is floored at 1% of the root-mean-square scale: a dead (constant) unit, common after a ReLU,
  would otherwise be amplified ~1e6 times when detectors are converted back to raw space (``to_raw``),
  swamping the live units in float32.
  """
  w = jnp.ones(x.shape[0], x.dtype) if weights is None else weights
  w = w / jnp.sum(w)
  mean = w @ x
  var = w @ (x - mean) ** 2
  return Standardizer(mean=mean, scale=jnp.maximum(jnp.sqrt(var), 1e-2 * jnp.sqrt(jnp.mean(var))) + 1e-12)


def logits(det: Detectors, x: jax.Array) -> jax.Array:
  """Detector logits (u_i . x - t_i) / M_i. x: [..., D] -> [..., I]."""
  return (x @ det.unit.T - det.offset) / det.margin


def activations(det: Detectors, x: jax.Array) -> jax.Array:
  """Detector activations y = sigmoid(logits). x: [..., D] -> [..., I]."""
  return jax.nn.sigmoid(logits(det, x))


def to_raw(det: Detectors, std: Standardizer) -> Detectors:
  """Re-expresses detectors trained on standardised inputs as detectors on raw inputs (same activations)."""
  v = det.unit / std.scale
  n = jnp.linalg.norm(v, axis=-1)
  u = v / n[:, None]
  return Detectors(direction=u, log_margin=det.log_margin - jnp.log(n), offset=u @ std.mean + det.offset / n)


def from_raw(det: Detectors, std: Standardizer) -> Detectors:
  """Inverse of ``to_raw``: re-expresses raw-space detectors on standardised inputs (same activations)."""
  v = det.unit * std.scale
  n = jnp.linalg.norm(v, axis=-1)
  return Detectors(
    direction=v / n[:, None],
    log_margin=det.log_margin - jnp.log(n),
    offset=(det.offset - det.unit @ std.mean) / n,
  )


def centring(std: Standardizer) -> Standardizer:
  """The same mean with unit scale: a space that only centres the patches (distances stay raw)."""
  return Standardizer(mean=std.mean, scale=jnp.ones_like(std.scale))


def from_directions(
  directions: jax.Array, x: jax.Array, *, active_fraction: float, margin_fraction: float = 0.1
) -> Detectors:
  """Detectors along given directions, each thresholded to fire on ``active_fraction`` of the patches.

  Args:
    directions: [I, D] (any norm; normalised here).
    x: [N, D] patches (in the space the detectors will act on).
    active_fraction: fraction of patches each detector starts active on (its threshold is that quantile).
    margin_fraction: initial margin as a fraction of the standard deviation of u_i . x.

  Returns:
    Detectors.
  """
  u = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
  z = x @ u.T  # [N, I]
  t = jnp.quantile(z, 1.0 - active_fraction, axis=0)
  m = margin_fraction * jnp.std(z, axis=0) + 1e-6
  return Detectors(direction=u, log_margin=jnp.log(m), offset=t)


def orthogonal_directions(key: jax.Array, num: int, dim: int) -> jax.Array:
  """[num, dim] random orthonormal rows (QR of a Gaussian matrix, signs fixed)."""
  g = jax.random.normal(key, (dim, num))
  q, r = jnp.linalg.qr(g)
  return (q * jnp.sign(jnp.diag(r))).T


def pca_directions(x: jax.Array, num: int) -> jax.Array:
  """[num, D] leading principal directions of x [N, D] (centred), largest variance first."""
  xc = x - x.mean(0)
  _, _, vt = jnp.linalg.svd(xc, full_matrices=False)
  return vt[:num]


def ica_directions(x: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
  """[num, D] FastICA unmixing rows (scikit-learn) of x [N, D]: directions that read out independent sources.

  Runs outside jit (scikit-learn); use for warm starts only.
  """
  from sklearn.decomposition import FastICA

  ica = FastICA(n_components=num, random_state=seed, whiten="unit-variance", max_iter=1000)
  ica.fit(np.asarray(x, np.float64))
  return np.asarray(ica.components_, np.float32)


def stack_detectors(dets: list[Detectors]) -> Detectors:
  """Stacks detectors along a new leading restart axis."""
  return jax.tree.map(lambda *a: jnp.stack(a), *dets)


def warm_start(
  kind: str,
  key: jax.Array,
  x: np.ndarray,
  num: int,
  *,
  std: Standardizer,
  restarts: int = 1,
  seed: int = 0,
  active_fraction: float | None = None,
) -> Detectors:
  """Warm-start detectors in standardised space, thresholded to fire on ``1/num`` of the patches.

  Args:
    kind: "orthogonal" (random orthonormal directions, one draw per restart), "pca" (leading principal
      directions; further restarts rotate randomly within the top-2*num principal subspace) or "ica"
      (FastICA unmixing directions, one scikit-learn seed per restart).
    key: PRNG key. x: [N, D] raw patches. num: number of detectors I.
    std: standardiser (the detectors act on std(x)).
    restarts: R; with R > 1 every field gets a leading [R] axis (``fit`` runs them at once, keeps the best).
    seed: seed for scikit-learn (ica).
    active_fraction: starting fraction of patches each detector fires on (default 1/num).

  Returns:
    Detectors ([I, D] fields, or [R, I, D] with restarts).
  """
  from conceptjax.errors import check

  xs = std(jnp.asarray(x))
  frac = 1.0 / num if active_fraction is None else active_fraction
  keys = jax.random.split(key, restarts)
  if kind == "orthogonal":
    dirs = [orthogonal_directions(k, num, xs.shape[1]) for k in keys]
  elif kind == "pca":
    sub = pca_directions(xs, min(2 * num, xs.shape[1]))
    dirs = [sub[:num]] + [orthogonal_directions(k, num, sub.shape[0]) @ sub for k in keys[1:]]
  elif kind == "ica":
    dirs = [jnp.asarray(ica_directions(np.asarray(xs), num, seed=seed + r)) for r in range(restarts)]
  else:
    check(False, f"unknown warm start {kind!r}; use orthogonal, pca or ica")
  dets = [from_directions(d, xs, active_fraction=frac) for d in dirs]
  return dets[0] if restarts == 1 else stack_detectors(dets)
