"""The planted ground truth of the EDDP paper: patches built from known encoding directions.

Every patch is ``x_p = S a_p + Dist b_p + offset``: ``S`` holds one unit encoding direction per concept,
``Dist`` unit distractor directions. A patch's own concept value is ``U(own_low, own_high)``, the other
concepts ``U(0, own_low)``, distractors ``U(0, distractor_high)``. Images hold ``patches_per_image`` patches
of distinct concepts; the class of an image is its (sorted) tuple of concepts. The image head is average
pooling followed by a linear layer trained with softmax cross-entropy.

The true decoding directions are the dual basis of ``[S | Dist]``: ``w_i . s_j = delta_ij`` and ``w_i``
orthogonal to every distractor (the rows of ``pinv([S | Dist])`` belonging to concepts).

References:
  EDDP, arXiv 2509.23926, synthetic experiment (D=16, 3 concepts, 2 distractors, 1000 images per class).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax.errors import check


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Static settings of the generator (defaults = the paper's)."""

  dim: int = 16
  num_concepts: int = 3
  num_distractors: int = 2
  patches_per_image: int = 2
  images_per_class: int = 1000
  own_low: float = 2.5
  own_high: float = 5.0
  distractor_high: float = 5.0
  offset: float = 10.0
  shared: float = 0.8  # weight of a component shared by all directions (pairwise cos ~ shared^2/(1+shared^2))
  max_abs_cos: float = 0.55  # pairwise |cos| bound between all planted directions (rejection sampling)
  head_steps: int = 1000
  head_learning_rate: float = 0.05


class LinearHead(NamedTuple):
  """avgpool + Linear(D -> K): logits = mean_p(x_p) @ kernel + bias."""

  kernel: jax.Array  # [D, K]
  bias: jax.Array  # [K]


def linear_head(params: LinearHead, x: jax.Array) -> jax.Array:
  """The synthetic image head. x: [B, P, D] patches -> logits [B, K]."""
  return jnp.mean(x, axis=1) @ params.kernel + params.bias


class SyntheticData(NamedTuple):
  """A planted data set (numpy arrays) and its ground truth."""

  x: np.ndarray  # [B, P, D] float32 patch activations
  labels: np.ndarray  # [B, P] int32 concept of each patch
  concept_values: np.ndarray  # [B, P, C] float32 planted concept values a
  distractor_values: np.ndarray  # [B, P, K] float32 planted distractor values b
  classes: np.ndarray  # [B] int32 image class
  encoding: np.ndarray  # [C, D] unit encoding directions S (rows)
  distractors: np.ndarray  # [K, D] unit distractor directions (rows)
  decoding: (
    np.ndarray
  )  # [C, D] dual basis rows: decoding[i] . encoding[j] = delta_ij, orthogonal to distractors
  head: LinearHead  # trained head parameters
  head_accuracy: float


def _directions(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
  n = cfg.num_concepts + cfg.num_distractors
  for _ in range(10_000):
    g = rng.normal(size=(n + 1, cfg.dim))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    v = cfg.shared * g[:1] + g[1:]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cos = np.abs(v @ v.T)[np.triu_indices(n, 1)]
    if cos.max() <= cfg.max_abs_cos:
      return v
  raise RuntimeError("could not draw directions within the cosine bounds")  # pragma: no cover


def train_linear_head(
  x: np.ndarray, classes: np.ndarray, num_classes: int, *, steps: int = 1000, learning_rate: float = 0.05
) -> LinearHead:
  """Trains avgpool + Linear with Adam on softmax cross-entropy (full batch, standardised inputs folded back).

  Args:
    x: [B, P, D] patches. classes: [B] int labels in [0, num_classes).
  Returns:
    LinearHead acting on raw patches.
  """
  pooled = jnp.asarray(x).mean(axis=1)
  mu, sd = pooled.mean(0), pooled.std(0) + 1e-6
  z = (pooled - mu) / sd
  onehot = jax.nn.one_hot(jnp.asarray(classes), num_classes)
  opt = optax.adam(learning_rate)

  def loss(p):
    return optax.softmax_cross_entropy(z @ p[0] + p[1], onehot).mean()

  @jax.jit
  def fit(p):
    def body(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
    return p

  d = pooled.shape[1]
  w, b = fit((jnp.zeros((d, num_classes)), jnp.zeros((num_classes,))))
  kernel = w / sd[:, None]
  return LinearHead(kernel=kernel, bias=b - mu @ kernel)


def make_synthetic(seed: int, cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticData:
  """Draws the planted directions, the patches and the images, and trains the head.

  Args:
    seed: integer seed (numpy Generator for the data).
    cfg: generator settings.

  Returns:
    SyntheticData with ground truth.
  """
  check(cfg.patches_per_image <= cfg.num_concepts, "patches_per_image must be <= num_concepts")
  rng = np.random.default_rng(seed)
  v = _directions(rng, cfg)
  c = cfg.num_concepts
  enc, dist = v[:c], v[c:]
  dual = np.linalg.pinv(v.T)  # [C+K, D], dual @ v.T = I
  combos = list(itertools.combinations(range(c), cfg.patches_per_image))
  n = cfg.images_per_class
  classes = np.repeat(np.arange(len(combos)), n)
  labels = np.asarray([combos[k] for k in classes])  # [B, P]
  b, p = labels.shape
  a = rng.uniform(0.0, cfg.own_low, size=(b, p, c))
  own = rng.uniform(cfg.own_low, cfg.own_high, size=(b, p))
  np.put_along_axis(a, labels[..., None], own[..., None], axis=-1)
  d = rng.uniform(0.0, cfg.distractor_high, size=(b, p, cfg.num_distractors))
  x = a @ enc + d @ dist + cfg.offset
  order = rng.permutation(b)
  x, labels, a, d, classes = x[order], labels[order], a[order], d[order], classes[order]
  x = x.astype(np.float32)
  head = train_linear_head(
    x, classes, len(combos), steps=cfg.head_steps, learning_rate=cfg.head_learning_rate
  )
  acc = float(np.mean(np.argmax(np.asarray(linear_head(head, jnp.asarray(x))), -1) == classes))
  return SyntheticData(
    x=x,
    labels=labels.astype(np.int32),
    concept_values=a.astype(np.float32),
    distractor_values=d.astype(np.float32),
    classes=classes.astype(np.int32),
    encoding=enc.astype(np.float32),
    distractors=dist.astype(np.float32),
    decoding=dual[:c].astype(np.float32),
    head=head,
    head_accuracy=acc,
  )
