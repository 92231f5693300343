"""Spherical k-means in JAX: cosine distance as squared Euclidean distance between normalised points.

Points are normalised to unit length; Lloyd iterations (``conceptjax.loop.fixed_point_loop``, stopping when
the relative objective change is below ``tol``) assign each point to its nearest centroid and move each
centroid to the mean of its points (``unit_centroids=True`` renormalises the means, the classic spherical
k-means of Dhillon & Modha). Restarts run as a ``vmap`` over PRNG keys, each seeded by k-means++, and the
restart with the lowest objective is kept (as in ott-jax).

References:
  Dhillon & Modha 2001, "Concept decompositions for large sparse text data using clustering";
  Arthur & Vassilvitskii 2007, "k-means++".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.errors import check
from conceptjax.loop import fixed_point_loop


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
  """Static settings."""

  num_clusters: int
  restarts: int = 8
  max_iter: int = 100
  tol: float = 1e-6
  unit_centroids: bool = False


class KMeansResult(NamedTuple):
  """The best restart."""

  centroids: jax.Array  # [k, D]
  assignment: jax.Array  # [N] int32
  objective: jax.Array  # [] sum of squared distances of normalised points to their centroids
  iterations: jax.Array  # [] Lloyd iterations of the best restart
  converged: jax.Array  # [] bool
  restart_objectives: jax.Array  # [R]


def normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit length (zero rows stay zero)."""
  n = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(n > 0, n, 1.0)


def _sq_dist(x: jax.Array, c: jax.Array) -> jax.Array:
  """[N, k] squared distances (x rows unit)."""
  return jnp.maximum(1.0 - 2.0 * x @ c.T + jnp.sum(c**2, -1)[None, :], 0.0)


def _kmeans_pp(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  n = x.shape[0]
  k0, key = jax.random.split(key)
  first = x[jax.random.randint(k0, (), 0, n)]
  cent = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  d2 = _sq_dist(x, first[None])[:, 0]

  def body(i, carry):
    cent, d2, key = carry
    key, sub = jax.random.split(key)
    p = d2 / jnp.maximum(jnp.sum(d2), 1e-30)
    idx = jax.random.choice(sub, n, p=jnp.where(jnp.sum(d2) > 0, p, 1.0 / n))
    c = x[idx]
    return cent.at[i].set(c), jnp.minimum(d2, _sq_dist(x, c[None])[:, 0]), key

  cent, _, _ = jax.lax.fori_loop(1, k, body, (cent, d2, key))
  return cent


class _State(NamedTuple):
  centroids: jax.Array  # [k, D]
  objective: jax.Array  # [1]
  previous: jax.Array  # [1]


def _lloyd(x: jax.Array, cent: jax.Array, unit: bool) -> tuple[jax.Array, jax.Array]:
  d = _sq_dist(x, cent)
  a = jnp.argmin(d, axis=1)
  onehot = jax.nn.one_hot(a, cent.shape[0], dtype=x.dtype)
  cnt = onehot.sum(0)
  mean = (onehot.T @ x) / jnp.maximum(cnt, 1.0)[:, None]
  if unit:
    mean = normalize(mean)
  new = jnp.where(cnt[:, None] > 0, mean, cent)
  return new, jnp.sum(jnp.min(_sq_dist(x, new), axis=1))


def _one_restart(key: jax.Array, x: jax.Array, cfg: KMeansConfig):
  cent = _kmeans_pp(key, x, cfg.num_clusters)
  if cfg.unit_centroids:
    cent = normalize(cent)
  obj0 = jnp.sum(jnp.min(_sq_dist(x, cent), axis=1))
  init = _State(cent, obj0[None], jnp.full((1,), jnp.inf, x.dtype))

  def step(s: _State, _):
    c, obj = _lloyd(x, s.centroids, cfg.unit_centroids)
    return _State(c, obj[None], s.objective)

  def error(s: _State):
    return jnp.abs(s.previous - s.objective) / jnp.maximum(s.objective, 1e-30)

  state, info = fixed_point_loop(step, init, error, tol=cfg.tol, max_iter=cfg.max_iter, min_iter=1)
  return state.centroids, state.objective[0], info.iterations[0], info.converged[0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _kmeans(key: jax.Array, x: jax.Array, cfg: KMeansConfig) -> KMeansResult:
  x = normalize(x)
  keys = jax.random.split(key, cfg.restarts)
  cents, objs, iters, conv = jax.vmap(lambda k: _one_restart(k, x, cfg))(keys)
  best = jnp.argmin(objs)
  cent = cents[best]
  return KMeansResult(
    centroids=cent,
    assignment=jnp.argmin(_sq_dist(x, cent), axis=1).astype(jnp.int32),
    objective=objs[best],
    iterations=iters[best],
    converged=conv[best],
    restart_objectives=objs,
  )


def spherical_kmeans(
  key: jax.Array,
  x: jax.Array,
  num_clusters: int,
  *,
  restarts: int = 8,
  max_iter: int = 100,
  tol: float = 1e-6,
  unit_centroids: bool = False,
) -> KMeansResult:
  """Clusters the directions of the rows of x [N, D] into ``num_clusters`` groups.

  Args:
    key: PRNG key (k-means++ seeding; one sub-key per restart).
    x: [N, D] points (normalised here; zero rows are rejected).
    num_clusters: k.
    restarts: independent k-means++ starts run in parallel (vmap); the lowest objective wins.
    max_iter: Lloyd iterations cap. tol: relative objective change that counts as converged.
    unit_centroids: renormalise centroids (classic spherical k-means) instead of plain means.

  Returns:
    KMeansResult of the best restart.
  """
  xa = np.asarray(x)
  check(xa.ndim == 2, f"k-means input must be [N, D], got shape {xa.shape}")
  check(1 <= num_clusters <= xa.shape[0], f"num_clusters={num_clusters} must be in [1, N={xa.shape[0]}]")
  check(bool(np.all(np.isfinite(xa))), "k-means input contains NaN or Inf")
  bad = np.flatnonzero(np.linalg.norm(xa, axis=1) == 0)
  check(bad.size == 0, f"k-means input row {bad[0] if bad.size else -1} has zero norm (no direction)")
  cfg = KMeansConfig(num_clusters, restarts, max_iter, float(tol), unit_centroids)
  return _kmeans(key, jnp.asarray(x), cfg)
