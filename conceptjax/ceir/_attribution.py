"""Label-free integrated gradients of the VAE latent w.r.t. the concept scores, and open-world labels.

Label-free feature importance explains a representation ``f`` at ``x`` through the scalar
``g_x(x') = <f(x'), f(x)>``; integrated gradients of ``g_x`` from a baseline ``b`` give per-concept
contributions that sum to ``g_x(x) - g_x(b)`` (completeness).

References:
  Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017 (integrated gradients,
  completeness, Eq. 1 and the Riemann approximation Eq. 3).
  Crabbe and van der Schaar, "Label-Free Explainability for Unsupervised Models", ICML 2022, Eq. 2.
  Cui et al., "CEIR", 2023, Sec. 3.3 (zero baseline, 50 steps; open-world labels from concepts whose
  contribution exceeds 0.05).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.errors import check

IG_METHODS = ("riemann_middle", "riemann_trapezoid", "gausslegendre")


@dataclasses.dataclass(frozen=True)
class IGConfig:
  """Static settings of integrated gradients.

  Attributes:
    steps: points on the straight path from the baseline to the input (CEIR: 50).
    method: quadrature rule: "gausslegendre" (captum's default), "riemann_middle" or "riemann_trapezoid".
  """

  steps: int = 50
  method: str = "gausslegendre"

  def __post_init__(self):
    check(self.method in IG_METHODS, f"IGConfig.method must be one of {IG_METHODS}, got {self.method!r}")
    check(self.steps >= 2, f"IGConfig.steps must be >= 2, got {self.steps}")


class Attribution(NamedTuple):
  """Integrated-gradients output.

  Attributes:
    values: [B, c] per-concept contributions.
    delta: [B] completeness gap ``sum(values) - (g(x) - g(baseline))`` (0 for the exact integral).
    gain: [B] ``g(x) - g(baseline)``.
  """

  values: jax.Array
  delta: jax.Array
  gain: jax.Array


def _quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
  """Nodes in [0, 1] and weights summing to 1."""
  if method == "riemann_middle":
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
  if method == "riemann_trapezoid":
    w = np.ones(steps)
    w[[0, -1]] = 0.5
    return np.linspace(0.0, 1.0, steps), w / w.sum()
  nodes, weights = np.polynomial.legendre.leggauss(steps)
  return (nodes + 1.0) / 2.0, weights / 2.0


def integrated_gradients(
  fn: Callable[[jax.Array, jax.Array], jax.Array],
  x: jax.Array,
  baseline: jax.Array | None = None,
  config: IGConfig = IGConfig(),
) -> Attribution:
  """Integrated gradients of ``fn(x_path, x_row) -> scalar`` along the path baseline -> x, for each row.

  ``fn`` receives the path point and the (fixed) input row, so label-free targets ``<f(x'), f(x)>`` can be
  written directly. Traceable (call it under jit).

  Args:
    fn: ``(x' [c], x [c]) -> []``.
    x: [B, c] inputs.
    baseline: [B, c] or [c] (default zeros).
    config: static settings.

  Returns:
    Attribution with values [B, c].
  """
  baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
  alphas, weights = _quadrature(config.steps, config.method)
  alphas, weights = jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype)
  grad = jax.grad(fn)

  def one(xr, br):
    path = br + alphas[:, None] * (xr - br)  # [steps, c]
    grads = jax.vmap(grad, in_axes=(0, None))(path, xr)  # [steps, c]
    values = (xr - br) * jnp.tensordot(weights, grads, axes=1)
    gain = fn(xr, xr) - fn(br, xr)
    return values, jnp.sum(values) - gain, gain

  values, delta, gain = jax.vmap(one)(x, baseline)
  return Attribution(values, delta, gain)


def label_free_target(
  encode: Callable[[jax.Array], jax.Array],
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``g(x', x) = <encode(x'), stop_gradient(encode(x))>`` for a row encoder ``[c] -> [k]``."""

  def g(xp, x):
    return jnp.dot(encode(xp), jax.lax.stop_gradient(encode(x)))

  return g


def normalize_contributions(values: jax.Array, how: str = "max") -> jax.Array:
  """Per-row scaling of contributions [B, c]: "max" (divide by the largest |value|), "l1" (by the sum of
  |values|) or "none"."""
  check(how in ("max", "l1", "none"), f"normalisation must be max, l1 or none, got {how!r}")
  values = jnp.asarray(values)
  if how == "none":
    return values
  scale = (
    jnp.max(jnp.abs(values), -1, keepdims=True)
    if how == "max"
    else jnp.sum(jnp.abs(values), -1, keepdims=True)
  )
  return values / jnp.where(scale > 0, scale, 1.0)


@functools.partial(jax.jit, static_argnames=("k",))
def top_concepts(contributions: jax.Array, k: int) -> jax.Array:
  """[B, k] indices of each row's ``k`` largest (signed) contributions, best first."""
  return jax.lax.top_k(contributions, k)[1]


class OpenWorldLabels(NamedTuple):
  """Concept counts over a set of new images.

  Attributes:
    counts: [c] images in which each concept's |contribution| exceeds the threshold.
    order: [c] concept indices by decreasing count (the candidate labels first).
  """

  counts: np.ndarray
  order: np.ndarray


def open_world_labels(contributions, threshold: float = 0.05) -> OpenWorldLabels:
  """Per concept, the images with ``|contribution| > threshold`` ([B, c] -> [c]); most frequent first."""
  counts = np.sum(np.abs(np.asarray(contributions)) > threshold, axis=0)
  return OpenWorldLabels(counts, np.argsort(-counts, kind="stable"))


def label_names(labels: OpenWorldLabels, concepts: Sequence[str], top: int = 10) -> list[tuple[str, int]]:
  """The ``top`` most frequent concepts as (name, count) pairs."""
  return [(concepts[i], int(labels.counts[i])) for i in labels.order[:top]]


@functools.partial(jax.jit, static_argnames=("model_config", "ig_config"))
def _vae_attributions(x, params, batch_stats, *, model_config, ig_config: IGConfig) -> Attribution:
  from conceptjax.ceir._vae import VAE

  model = VAE(x.shape[1], model_config)
  variables = {"params": params, "batch_stats": batch_stats}
  encode = lambda row: model.apply(variables, row[None], method=VAE.encode)[0][0]
  return integrated_gradients(label_free_target(encode), x, None, ig_config)


def vae_attributions(state, x, model_config, ig_config: IGConfig = IGConfig(), *, mesh=None) -> Attribution:
  """Label-free IG of the VAE latent mean (eval mode) w.r.t. the concept scores, zero baseline.

  Args:
    state: a trained ``TrainState`` (params, batch_stats).
    x: [B, c] z-scored concept scores (rows sharded over all devices of ``mesh``).
    model_config: the VAE's ``VAEConfig``.

  Returns:
    Attribution (values [B, c], delta [B], gain [B]).
  """
  from conceptjax import parallel

  fn = functools.partial(_vae_attributions, model_config=model_config, ig_config=ig_config)
  return parallel.map_batched(
    fn, (jnp.asarray(x, jnp.float32),), (state.params, state.batch_stats), mesh=mesh
  )
