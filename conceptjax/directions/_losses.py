"""EDDP losses as pure functions in a registry, composable by name from a config.

Every loss has the signature ``loss(inputs: LossInputs, cfg: LossConfig) -> scalar``. To add one, decorate a
function with ``@register_loss("name")``; a stage of the schedule then names it as an objective term or as a
constraint with a threshold (``Stage(objective=(("name", 1.0),), constraints=(("other", 0.1),))``).

Notation: y [B, P, I] detector activations, q_p = y_p / |y_p|_1, expectations E_p are over the (weighted)
patches, logarithms base 2. R(L) = sum L^(v+1) / sum L^v is the self-weighted soft maximum.

References:
  EDDP, arXiv 2509.23926, losses L_s, L_ma, L_mm, L_ic, L_eac, L_sb, filter-signal orthogonality, URA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from conceptjax.directions._detectors import Detectors
from conceptjax.directions._ura import ura_entropy

_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Static hyper-parameters shared by the losses.

  Attributes:
    gamma: exponent in E_p[y^gamma] (inactive / excessively active classifier).
    tau: inactive-classifier level; nu = tau / I is the least mean activation a detector must reach.
    rho: excessively-active level: the most mean activation a detector may reach.
    power: v of the self-weighted soft maximum R.
    head_fn: ``(head_params, x [B, P, D]) -> logits [B, K]``, the frozen rest of the network (URA only).
    kappa_range: URA step fraction kappa ~ U[low, high].
  """

  gamma: float = 1.0
  tau: float = 0.5
  rho: float = 0.5
  power: float = 4.0
  head_fn: Callable[[Any, jax.Array], jax.Array] | None = None
  kappa_range: tuple[float, float] = (0.5, 0.9)


class LossInputs(NamedTuple):
  """What a loss may read. Raw-space quantities act on the patches as the network sees them."""

  detectors: Detectors  # in the training space (standardised or raw): margins are measured there
  raw: Detectors  # the same detectors expressed on raw patches
  signal: jax.Array  # [I, D] signal vectors (raw space)
  x: jax.Array  # [B, P, D] raw patches
  logits: jax.Array  # [B, P, I] detector logits; activations y = sigmoid(logits)
  weight: jax.Array  # [B] image weights (0 = padding)
  key: jax.Array  # PRNG key for stochastic losses
  head_params: Any  # parameters of LossConfig.head_fn (or None)


LossFn = Callable[[LossInputs, LossConfig], jax.Array]
LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
  """Decorator adding ``fn`` to the registry under ``name``."""

  def deco(fn: LossFn) -> LossFn:
    LOSSES[name] = fn
    return fn

  return deco


def get_loss(name: str) -> LossFn:
  if name not in LOSSES:
    from conceptjax.errors import InputError

    raise InputError(f"unknown EDDP loss {name!r}; registered: {sorted(LOSSES)}")
  return LOSSES[name]


def patch_mean(inputs: LossInputs, values: jax.Array) -> jax.Array:
  """Weighted mean over images and patches of values [B, P, ...] -> [...]."""
  return jnp.einsum("b,bp...->...", inputs.weight, values) / (jnp.sum(inputs.weight) * values.shape[1])


def soft_max(values: jax.Array, power: float, weights: jax.Array | None = None) -> jax.Array:
  """R(L) = sum w L^(v+1) / sum w L^v over all entries (L >= 0): a smooth maximum weighted by itself."""
  w = jnp.ones_like(values) if weights is None else weights
  lv = values**power
  return jnp.sum(w * lv * values) / (jnp.sum(w * lv) + _EPS)


def _log_q(logits: jax.Array) -> jax.Array:
  """log q = log(y / |y|_1) computed stably from logits (never 0/0 when every detector is off)."""
  return jax.nn.log_softmax(jax.nn.log_sigmoid(logits), axis=-1)


def patch_entropy(logits: jax.Array) -> jax.Array:
  """[..., I] detector logits -> [...] entropy (bits) of q = y / |y|_1."""
  lq = _log_q(logits)
  return -jnp.sum(jnp.exp(lq) * lq, axis=-1) / jnp.log(2.0)


def mean_activation(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """[I] E_p[y_i^gamma]."""
  return patch_mean(inputs, jnp.exp(cfg.gamma * jax.nn.log_sigmoid(inputs.logits)))


@register_loss("sparsity")
def sparsity(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """L_s = E_p[entropy(q_p)]."""
  return patch_mean(inputs, patch_entropy(inputs.logits))


@register_loss("max_activation")
def max_activation(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """L_ma = E_p[-sum_i q_pi log2 y_pi]."""
  q = jnp.exp(_log_q(inputs.logits))
  return patch_mean(inputs, -jnp.sum(q * jax.nn.log_sigmoid(inputs.logits), axis=-1) / jnp.log(2.0))


@register_loss("max_margin")
def max_margin(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """L_mm = mean_i 1 / M_i (margins in the training space)."""
  return jnp.mean(1.0 / inputs.detectors.margin)


@register_loss("inactive")
def inactive(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """L_ic = mean_i relu(nu - E_p[y_i^gamma]) / nu with nu = tau / I."""
  nu = cfg.tau / inputs.logits.shape[-1]
  return jnp.mean(jax.nn.relu(nu - mean_activation(inputs, cfg)) / nu)


@register_loss("excessive")
def excessive(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """L_eac = R_i(relu(E_p[y_i^gamma] - rho) / (1 - rho))."""
  per = jax.nn.relu(mean_activation(inputs, cfg) - cfg.rho) / (1.0 - cfg.rho)
  return soft_max(per, cfg.power)


@register_loss("sparsity_bound")
def sparsity_bound(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """L_sb = R over patches of entropy(q_p): bounds the worst patches rather than the mean."""
  h = patch_entropy(inputs.logits)
  w = jnp.broadcast_to(inputs.weight[:, None], h.shape)
  return soft_max(h, cfg.power, w)


@register_loss("filter_signal")
def filter_signal(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """sqrt(mean_{i != j} (u_i . s_j / |s_j|)^2): each filter blind to the other concepts' signals.

  Directions and signals are normalised (an open choice: with w_i = u_i / M_i the raw product would shrink
  with the margins instead of measuring blindness).
  """
  u = inputs.raw.unit
  s = inputs.signal / (jnp.linalg.norm(inputs.signal, axis=-1, keepdims=True) + _EPS)
  g = u @ s.T
  i = g.shape[0]
  off = g * (1.0 - jnp.eye(i, dtype=g.dtype))
  return jnp.sqrt(jnp.sum(off**2) / max(i * (i - 1), 1) + _EPS)


@register_loss("orthogonality")
def orthogonality(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """|U U^T - I|_F^2 / I^2 for the unit directions in the training space (orthogonal warm-start step)."""
  u = inputs.detectors.unit
  i = u.shape[0]
  return jnp.sum((u @ u.T - jnp.eye(i, dtype=u.dtype)) ** 2) / i**2


def _ura(inputs: LossInputs, cfg: LossConfig, signal: jax.Array | None) -> jax.Array:
  if cfg.head_fn is None:
    raise ValueError("URA needs LossConfig.head_fn")
  lo, hi = cfg.kappa_range
  kappa = jax.random.uniform(inputs.key, inputs.x.shape[:2], inputs.x.dtype, lo, hi)
  h = ura_entropy(
    cfg.head_fn, inputs.head_params, inputs.raw.weight, inputs.raw.bias, inputs.x, kappa, signal
  )
  return 1.0 - jnp.sum(inputs.weight * h) / jnp.sum(inputs.weight)


@register_loss("ura")
def ura(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """1 - mean normalised entropy of the head on patches moved toward the hyperplanes (unconstrained)."""
  return _ura(inputs, cfg, None)


@register_loss("ura_signal")
def ura_signal(inputs: LossInputs, cfg: LossConfig) -> jax.Array:
  """As ``ura`` with the shift restricted to the span of the signal vectors."""
  return _ura(inputs, cfg, inputs.signal)
