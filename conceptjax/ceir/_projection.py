"""The linear concept projection (Label-free CBM step 3): cos^3 loss, early stopping, filter B, z-scoring.

References:
  Oikarinen et al., "Label-Free Concept Bottleneck Models", ICLR 2023, Sec. 3 (cos^3 similarity, Eq. 2;
  projection trained with Adam lr 1e-3 for up to 1000 steps, validation every 50 steps, interpretability
  cutoff 0.45).
  Cui et al., "CEIR: Concept-based Explainable Image Representation Learning", 2023, Sec. 3.1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax import errors, parallel
from conceptjax.loop import fixed_point_loop


@dataclasses.dataclass(frozen=True)
class ProjectionConfig:
  """Static settings of the projection training.

  Attributes:
    learning_rate: Adam step size.
    max_steps: step cap (rounded up to a multiple of ``check_every``).
    check_every: steps between validation checks; training stops at the first check whose validation loss
      is not better than the best so far and the best weights are kept (LF-CBM's rule).
    batch_size: rows sampled (without replacement) per step; None = the full training set.
    cutoff: filter B keeps concepts whose validation cos^3 similarity exceeds this.
  """

  learning_rate: float = 1e-3
  max_steps: int = 1000
  check_every: int = 50
  batch_size: int | None = None
  cutoff: float = 0.45


class ProjectionState(NamedTuple):
  weight: jax.Array  # [c, d] current W
  opt_state: optax.OptState
  best_weight: jax.Array  # [c, d] W at the best validation check
  best_loss: jax.Array  # [] best validation loss so far
  best_step: jax.Array  # [] int32, step of best_weight
  stopped: jax.Array  # [] bool, validation got worse at the last check
  key: jax.Array  # PRNG key for mini-batches


class ProjectionResult(NamedTuple):
  """Output of :func:`train_projection`.

  Attributes:
    weight: [c, d] the projection W (no bias) at the best validation check; scores are ``features @ W.T``.
    val_similarity: [c] cos^3 similarity of each concept on the validation split (filter B's input).
    kept: [c] bool, filter B (``val_similarity > cutoff``).
    best_step: [] int32, training steps behind ``weight``.
    steps: [] int32, steps run before stopping.
  """

  weight: jax.Array
  val_similarity: jax.Array
  kept: jax.Array
  best_step: jax.Array
  steps: jax.Array


def cos3_similarity(target: jax.Array, pred: jax.Array, rows: jax.Array | None = None) -> jax.Array:
  """Column-wise cos^3 similarity: centre each column over the batch, cube, L2-normalise, dot.

  Equals 1 for a column of ``pred`` that is a positive affine map of the same column of ``target``.

  Args:
    target: [N, c] teacher similarities P.
    pred: [N, c] projected features.
    rows: optional [N] 0/1 weights: rows with weight 0 (padding) take no part in the column statistics.

  Returns:
    [c] similarities in [-1, 1].
  """

  def prep(x):
    if rows is None:
      x = x - jnp.mean(x, axis=0, keepdims=True)
      x = x**3
    else:
      w = rows.astype(x.dtype)[:, None]
      x = (x - jnp.sum(w * x, axis=0, keepdims=True) / jnp.sum(w)) ** 3 * w
    return x / jnp.linalg.norm(x, axis=0, keepdims=True)

  return jnp.sum(prep(target) * prep(pred), axis=0)


def cos3_loss(
  weight: jax.Array, features: jax.Array, target: jax.Array, rows: jax.Array | None = None
) -> jax.Array:
  """Negative mean cos^3 similarity of ``features @ weight.T`` ([N, c]) with ``target`` ([N, c])."""
  return -jnp.mean(cos3_similarity(target, features @ weight.T, rows))


def init_projection(key: jax.Array, num_concepts: int, feature_dim: int) -> jax.Array:
  """W [c, d] drawn like torch.nn.Linear's default: uniform in +-1/sqrt(d)."""
  bound = 1.0 / jnp.sqrt(feature_dim)
  return jax.random.uniform(key, (num_concepts, feature_dim), jnp.float32, -bound, bound)


def train_projection(
  key: jax.Array,
  train_features: jax.Array,
  train_target: jax.Array,
  val_features: jax.Array,
  val_target: jax.Array,
  config: ProjectionConfig = ProjectionConfig(),
  *,
  mesh: jax.sharding.Mesh | None = None,
) -> ProjectionResult:
  """Trains W to maximise the cos^3 similarity, early-stopped on the validation split; applies filter B.

  Args:
    key: PRNG key (initialisation and mini-batches).
    train_features: [N, d] backbone image features.
    train_target: [N, c] teacher similarities P of the same images.
    val_features: [M, d]; val_target: [M, c].
    config: static settings.
    mesh: a mesh over several processes' devices (``jax.distributed``) splits the rows over all of them:
      every process passes all rows and contributes its block (``parallel.process_slice``), padded to one
      common size with rows of weight 0, so the column statistics and the result are those of one process
      (to float rounding). Full batches only (``config.batch_size`` None). Default: this process alone.

  Returns:
    ProjectionResult.
  """
  if mesh is None or not parallel.spans_processes(mesh):
    return _train_projection(key, train_features, train_target, val_features, val_target, None, None, config)
  errors.check(
    config.batch_size is None, "a projection over several processes trains on full batches (batch_size None)"
  )
  train = _global_rows(mesh, train_features, train_target)
  val = _global_rows(mesh, val_features, val_target)
  res = _train_projection(key, train[0], train[1], val[0], val[1], train[2], val[2], config)
  return parallel.to_host(res)


def _global_rows(mesh: jax.sharding.Mesh, *arrays):
  """This process's block of the rows of ``arrays``, padded to the largest block (rounded to its device
  count) with weight-0 rows, as global arrays sharded over every process's devices; and the row weights."""
  n = len(arrays[0])
  local = len(jax.local_devices())
  block_rows = -(-n // jax.process_count())
  per = -(-block_rows // local) * local
  block = parallel.process_slice(n)
  out = []
  for a in (*arrays, np.ones(n, np.float32)):
    mine = np.asarray(a)[block]
    pad = np.zeros((per - len(mine), *mine.shape[1:]), mine.dtype)
    out.append(np.concatenate([mine, pad]))
  sharded, _ = parallel.shard_batch(tuple(out), mesh)
  return sharded


@functools.partial(jax.jit, static_argnames="config")
def _train_projection(
  key, train_features, train_target, val_features, val_target, train_rows, val_rows, config
) -> ProjectionResult:
  n, d = train_features.shape
  c = train_target.shape[1]
  init_key, key = jax.random.split(key)
  w0 = init_projection(init_key, c, d).astype(train_features.dtype)
  opt = optax.adam(config.learning_rate)
  val_loss_fn = lambda w: cos3_loss(w, val_features, val_target, val_rows)
  grad_fn = jax.grad(cos3_loss)

  def step(state: ProjectionState, it) -> ProjectionState:
    key, sub = jax.random.split(state.key)
    if config.batch_size is None or config.batch_size >= n:
      x, y, r = train_features, train_target, train_rows
    else:
      idx = jax.random.choice(sub, n, (config.batch_size,), replace=False)
      x, y, r = train_features[idx], train_target[idx], None
    updates, opt_state = opt.update(grad_fn(state.weight, x, y, r), state.opt_state, state.weight)
    weight = optax.apply_updates(state.weight, updates)
    state = state._replace(weight=weight, opt_state=opt_state, key=key)

    def check(s: ProjectionState) -> ProjectionState:
      loss = val_loss_fn(s.weight)
      better = loss < s.best_loss
      return s._replace(
        best_weight=jnp.where(better, s.weight, s.best_weight),
        best_loss=jnp.where(better, loss, s.best_loss),
        best_step=jnp.where(better, it + 1, s.best_step),
        stopped=~better,
      )

    return jax.lax.cond((it + 1) % config.check_every == 0, check, lambda s: s, state)

  init = ProjectionState(
    weight=w0,
    opt_state=opt.init(w0),
    best_weight=w0,
    best_loss=val_loss_fn(w0),
    best_step=jnp.int32(0),
    stopped=jnp.bool_(False),
    key=key,
  )
  state, info = fixed_point_loop(
    step,
    init,
    lambda s: 1.0 - s.stopped.astype(jnp.float32),
    tol=0.5,
    max_iter=config.max_steps,
    check_every=config.check_every,
  )
  sim = cos3_similarity(val_target, val_features @ state.best_weight.T, val_rows)
  return ProjectionResult(
    weight=state.best_weight,
    val_similarity=sim,
    kept=sim > config.cutoff,
    best_step=state.best_step,
    steps=info.iterations[0],
  )


class Standardizer(NamedTuple):
  """Per-concept z-scoring with training statistics."""

  mean: jax.Array  # [c]
  std: jax.Array  # [c]


def fit_standardizer(scores: jax.Array, eps: float = 1e-8) -> Standardizer:
  """Mean and (population) standard deviation of each column of ``scores`` [N, c]."""
  scores = jnp.asarray(scores)
  return Standardizer(jnp.mean(scores, axis=0), jnp.maximum(jnp.std(scores, axis=0), eps))


def standardize(scores: jax.Array, stats: Standardizer) -> jax.Array:
  """(scores - mean) / std with training statistics; [N, c] -> [N, c]."""
  return (scores - stats.mean) / stats.std


def concept_scores(features: jax.Array, weight: jax.Array, stats: Standardizer | None = None) -> jax.Array:
  """Concept scores ``features @ weight.T`` ([N, d] -> [N, c]), z-scored when ``stats`` is given."""
  s = jnp.asarray(features) @ jnp.asarray(weight).T
  return s if stats is None else standardize(s, stats)
