"""The augmented-Lagrangian trainer and the four-step EDDP schedule.

A stage minimises a weighted sum of registered losses subject to ``loss_k <= threshold_k`` with the
Powell-Hestenes-Rockafellar augmented Lagrangian
  L(theta) = f(theta) + sum_k (relu(lam_k + mu (g_k - c_k))^2 - lam_k^2) / (2 mu),
optimised by optax for ``steps_per_update`` steps between multiplier updates
``lam_k <- relu(lam_k + mu (g_k - c_k))``. As a fixed weighted sum the losses degenerate (every detector
always on); as constraints they do not. The whole stage (all updates and steps) is one jit-compiled
``lax.scan``; the patches are sharded over the devices by image (``conceptjax.parallel``) and padded images
carry weight 0.

The schedule is a tuple of stages (config): (a) warm start in standardised space with orthogonality;
(b) raw space, add the sparsity bound and the excessive-activation constraint; (c) signal vectors by the
formula; (d) joint step with URA and filter-signal orthogonality. Signals are recomputed by the formula at
the end.

References:
  EDDP, arXiv 2509.23926; Nocedal & Wright, Numerical Optimization, 17.4 (augmented Lagrangian, inequality).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax import parallel
from conceptjax.directions._detectors import (
  Detectors,
  Standardizer,
  activations,
  centring,
  fit_standardizer,
  from_raw,
  logits,
  to_raw,
)
from conceptjax.directions._losses import LossConfig, LossInputs, get_loss
from conceptjax.directions._signal import signal_vectors
from conceptjax.errors import check


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of the schedule (static: hashable, passed to jit).

  Attributes:
    name: label for logs.
    objective: ((loss name, weight), ...) minimised.
    constraints: ((loss name, threshold), ...) enforced as loss <= threshold.
    updates: number of multiplier updates.
    steps_per_update: optimiser steps between multiplier updates.
    learning_rate: Adam learning rate.
    penalty: mu of the augmented Lagrangian.
    standardised: detectors act on per-dimension standardised patches; otherwise on centred patches (raw
      distances, the mean removed for conditioning).
    init_signal: set the signal vectors by the formula before the stage.
    train_signal: the signal vectors are free parameters in this stage.
    train_directions: the directions are trained; False trains only the margins and offsets (a final
      offsets-only stage that places the half-spaces once the directions are right).
    positive_threshold: activation above which a patch is a positive (signal formula).
    losses: hyper-parameters of the losses.
  """

  name: str
  objective: tuple[tuple[str, float], ...]
  constraints: tuple[tuple[str, float], ...] = ()
  updates: int = 20
  steps_per_update: int = 50
  learning_rate: float = 0.01
  penalty: float = 10.0
  standardised: bool = False
  init_signal: bool = False
  train_signal: bool = False
  train_directions: bool = True
  positive_threshold: float = 0.5
  losses: LossConfig = LossConfig()

  def validate(self) -> None:
    for name, _ in self.objective + self.constraints:
      get_loss(name)
    check(all(t > 0 for _, t in self.constraints), f"stage {self.name}: constraint thresholds must be > 0")
    check(self.updates > 0 and self.steps_per_update > 0, f"stage {self.name}: updates/steps must be > 0")


class Params(NamedTuple):
  """What the trainer optimises."""

  detectors: Detectors  # in the stage's space
  signal: jax.Array  # [I, D] raw-space signal vectors


class StageInfo(NamedTuple):
  """Trace of a stage, one row per multiplier update."""

  losses: jax.Array  # [U, L] value of every objective then constraint loss (in stage order)
  multipliers: jax.Array  # [U, C] lambda after each update
  lagrangian: jax.Array  # [U] augmented Lagrangian at the last step before each update


def _inputs(params: Params, x, weight, space: Standardizer, key, head_params):
  det = params.detectors
  raw = to_raw(det, space)
  return LossInputs(
    detectors=det,
    raw=raw,
    signal=params.signal,
    x=x,
    logits=logits(raw, x),
    weight=weight,
    key=key,
    head_params=head_params,
  )


def loss_values(stage: Stage, params: Params, x, weight, space, key, head_params) -> jax.Array:
  """[L] values of the stage's objective terms then constraint terms (detectors in ``space``)."""
  inp = _inputs(params, x, weight, space, key, head_params)
  names = [n for n, _ in stage.objective] + [n for n, _ in stage.constraints]
  keys = jax.random.split(key, len(names))
  return jnp.stack([get_loss(n)(inp._replace(key=k), stage.losses) for n, k in zip(names, keys, strict=True)])


def _lagrangian(stage: Stage, values: jax.Array, lam: jax.Array) -> jax.Array:
  n_obj = len(stage.objective)
  f = sum(w * values[i] for i, (_, w) in enumerate(stage.objective))
  if not stage.constraints:
    return f
  thr = jnp.asarray([t for _, t in stage.constraints], values.dtype)
  h = values[n_obj:] - thr
  mu = stage.penalty
  return f + jnp.sum(jax.nn.relu(lam + mu * h) ** 2 - lam**2) / (2 * mu)


@functools.partial(jax.jit, static_argnames=("stage",))
def train_stage(
  params: Params,
  x: jax.Array,
  weight: jax.Array,
  space: Standardizer,
  key: jax.Array,
  head_params: Any = None,
  *,
  stage: Stage,
) -> tuple[Params, StageInfo]:
  """Runs one stage of augmented-Lagrangian training.

  Args:
    params: starting parameters (detectors in the stage's space).
    x: [B, P, D] raw patches (shard over B for data parallelism). weight: [B] (0 for padded images).
    space: the stage's input transform (standardiser, or ``centring(std)`` for raw-distance stages); the
      detectors act on ``space(x)``.
    key: PRNG key (URA's kappa).
    head_params: parameters of ``stage.losses.head_fn``.
    stage: static settings.

  Returns:
    (trained params, StageInfo).
  """
  opt = optax.adam(stage.learning_rate)
  n_obj, n_con = len(stage.objective), len(stage.constraints)

  def objective(p, lam, k):
    if not stage.train_signal:
      p = p._replace(signal=jax.lax.stop_gradient(p.signal))
    if not stage.train_directions:
      p = p._replace(detectors=p.detectors._replace(direction=jax.lax.stop_gradient(p.detectors.direction)))
    values = loss_values(stage, p, x, weight, space, k, head_params)
    return _lagrangian(stage, values, lam), values

  def step(carry, k):
    p, s, lam = carry
    (lag, values), g = jax.value_and_grad(objective, has_aux=True)(p, lam, k)
    upd, s = opt.update(g, s, p)
    return (optax.apply_updates(p, upd), s, lam), (lag, values)

  def update(carry, k):
    p, s, lam = carry
    (p, s, lam), (lag, values) = jax.lax.scan(step, (p, s, lam), jax.random.split(k, stage.steps_per_update))
    values = loss_values(stage, p, x, weight, space, k, head_params)
    if n_con:
      thr = jnp.asarray([t for _, t in stage.constraints], values.dtype)
      lam = jax.nn.relu(lam + stage.penalty * (values[n_obj:] - thr))
    return (p, s, lam), (values, lam, lag[-1])

  lam0 = jnp.zeros((n_con,), x.dtype)
  (params, _, _), (values, lams, lags) = jax.lax.scan(
    update, (params, opt.init(params), lam0), jax.random.split(key, stage.updates)
  )
  return params, StageInfo(losses=values, multipliers=lams, lagrangian=lags)


@functools.partial(jax.jit, static_argnames=("threshold",))
def formula_signals(det: Detectors, x: jax.Array, weight: jax.Array, *, threshold: float = 0.5) -> jax.Array:
  """[I, D] signal vectors of raw-space detectors over their positives (y > threshold). x: [B, P, D]."""
  flat = x.reshape(-1, x.shape[-1])
  y = activations(det, flat)
  sw = jnp.repeat(weight, x.shape[1])
  return signal_vectors(det.weight, flat, y > threshold, sw)


class FitResult(NamedTuple):
  """Output of ``fit``: raw-space detectors, signal vectors and the per-stage traces."""

  detectors: Detectors
  signal: jax.Array  # [I, D] encoding directions (formula over positives)
  infos: tuple[StageInfo, ...]


def shard_images(x: np.ndarray, mesh=None) -> tuple[jax.Array, jax.Array]:
  """Pads images [B, P, D] to a multiple of the device count and shards them; returns (x, weight [B'])."""
  mesh = parallel.data_mesh() if mesh is None else mesh
  weight = np.ones(x.shape[0], np.float32)
  (xs, ws), n = parallel.pad_to_multiple((np.asarray(x), weight), mesh.size)
  ws = ws.copy()
  ws[n:] = 0.0
  return parallel.shard_batch((xs, ws), mesh)[0]


def selection_score(stage: Stage, info: StageInfo) -> jax.Array:
  """[...] how good a restart ended: objective plus 10x the summed relative constraint violations."""
  values = info.losses[..., -1, :]
  n_obj = len(stage.objective)
  f = sum(w * values[..., i] for i, (_, w) in enumerate(stage.objective))
  for k, (_, t) in enumerate(stage.constraints):
    f = f + 10.0 * jax.nn.relu(values[..., n_obj + k] - t) / t
  return f


def _convert(det: Detectors, src: Standardizer, dst: Standardizer) -> Detectors:
  return from_raw(to_raw(det, src), dst)


def _init_signal(det: Detectors, xs, ws, space: Standardizer, threshold: float) -> jax.Array:
  return formula_signals(to_raw(det, space), xs, ws, threshold=threshold)


def fit(
  x: np.ndarray,
  init: Detectors,
  schedule: Sequence[Stage],
  key: jax.Array,
  *,
  std: Standardizer | None = None,
  head_params: Any = None,
  mesh=None,
  select_after: int = 0,
) -> FitResult:
  """Runs a schedule of stages from a warm start (or several, keeping the best after stage ``select_after``).

  Args:
    x: [B, P, D] raw patches of B images.
    init: warm-start detectors, on standardised patches when the first stage is standardised (else on
      centred patches). With a
      leading restart axis ([R, I, D] directions) stages ``0 .. select_after`` run all R restarts at once
      (vmap) and the one with the lowest ``selection_score`` of stage ``select_after`` (label-free: its own
      objective and constraint violations) continues.
    schedule: stages run in order; a change from standardised to raw converts the detectors.
    key: PRNG key.
    std: the standardiser the warm start was built with (default: fitted to x).
    head_params: parameters of the head used by URA losses.
    mesh: device mesh (default: all devices).
    select_after: index of the stage whose end selects the restart (with restarts only).

  Returns:
    FitResult with raw-space detectors and formula signal vectors; ``infos[0 .. select_after]`` have the
    restart axis.
  """
  check(np.ndim(x) == 3, f"patches must be [B, P, D], got shape {np.shape(x)}")
  check(bool(np.all(np.isfinite(x))), "patches contain NaN or Inf")
  check(len(schedule) > 0, "empty schedule")
  check(
    np.ndim(init.direction) in (2, 3),
    f"init directions must be [I, D] or [R, I, D], got {np.shape(init.direction)}",
  )
  check(
    np.shape(init.direction)[-1] == np.shape(x)[-1],
    f"init width {np.shape(init.direction)[-1]} != patch width {np.shape(x)[-1]}",
  )
  check(
    0 <= select_after < len(schedule),
    f"select_after={select_after} is not a stage index (0..{len(schedule) - 1})",
  )
  for st in schedule:
    st.validate()
  for prev, st in zip(schedule[:-1], schedule[1:], strict=True):
    check(st.standardised <= prev.standardised, f"stage {st.name}: cannot return to standardised space")
  mesh = parallel.data_mesh() if mesh is None else mesh
  xs, ws = shard_images(x, mesh)
  if std is None:
    std = fit_standardizer(xs.reshape(-1, xs.shape[-1]), jnp.repeat(ws, xs.shape[1]))
  rep = functools.partial(parallel.replicate, mesh=mesh)
  std = rep(std)
  spaces = {True: std, False: centring(std)}
  batched = np.ndim(init.direction) == 3
  params = rep(Params(detectors=init, signal=jnp.zeros_like(init.direction)))
  standardised = schedule[0].standardised
  infos = []
  for n, (st, k) in enumerate(zip(schedule, jax.random.split(key, len(schedule)), strict=True)):
    restarts = batched and n <= select_after
    if standardised != st.standardised:
      convert = functools.partial(_convert, src=spaces[standardised], dst=spaces[st.standardised])
      params = params._replace(detectors=(jax.vmap(convert) if restarts else convert)(params.detectors))
    standardised = st.standardised
    space = spaces[standardised]
    if st.init_signal:
      init_sig = functools.partial(_init_signal, xs=xs, ws=ws, space=space, threshold=st.positive_threshold)
      params = params._replace(signal=(jax.vmap(init_sig) if restarts else init_sig)(params.detectors))
    if restarts:
      run = jax.vmap(functools.partial(train_stage, stage=st), in_axes=(0, None, None, None, None, None))
      params, info = run(params, xs, ws, space, k, head_params)
      if n == select_after:
        best = int(jnp.argmin(selection_score(st, info)))
        params = jax.tree.map(lambda a, i=best: a[i], params)
    else:
      params, info = train_stage(params, xs, ws, space, k, head_params, stage=st)
    infos.append(info)
  det = to_raw(params.detectors, spaces[standardised])
  signal = formula_signals(det, xs, ws, threshold=schedule[-1].positive_threshold)
  return FitResult(detectors=det, signal=signal, infos=tuple(infos))
