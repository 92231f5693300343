"""Teacher similarities P (image x concept) and filter A.

References:
  Oikarinen et al., "Label-Free Concept Bottleneck Models", ICLR 2023 (teacher similarities, filter on the
  mean of the top-5 activations, cutoff 0.25).
  Cui et al., "CEIR: Concept-based Explainable Image Representation Learning", 2023, Sec. 3.1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.errors import InputError, check, check_rows


def read_concepts(path: str | os.PathLike) -> list[str]:
  """Reads a concept list: one concept per line, blank lines and ``#`` comments skipped.

  Raises:
    InputError: unreadable file, no concepts, or a duplicate concept (naming its line).
  """
  path = Path(path)
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except OSError as e:
    raise InputError(f"cannot read concept list {path}: {e.strerror}") from e
  concepts: list[str] = []
  seen: dict[str, int] = {}
  for i, raw in enumerate(lines, 1):
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    key = line.lower()
    if key in seen:
      raise InputError(f"{path}:{i}: duplicate concept {line!r} (first on line {seen[key]})")
    seen[key] = i
    concepts.append(line)
  check(bool(concepts), f"concept list {path} has no concepts")
  return concepts


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def check_embeddings(x: np.ndarray, name: str) -> None:
  """Raises ``InputError`` for a non-2-D, non-finite or zero-norm embedding matrix (naming the row)."""
  check_rows(x, name)


@jax.jit
def teacher_similarities(image_emb: jax.Array, text_emb: jax.Array) -> jax.Array:
  """Cosine similarity of every image with every concept text.

  Args:
    image_emb: [N, d] image embeddings of the teacher CLIP.
    text_emb: [c, d] text embeddings of the concept strings (same CLIP).

  Returns:
    P: [N, c] cosine similarities.
  """
  return _l2_normalize(image_emb) @ _l2_normalize(text_emb).T


def clip_teacher_similarities(model, images: np.ndarray, concepts: Sequence[str], batch_size: int = 256):
  """P from a CLIP model (``conceptjax.models.clip``): a thin wrapper over ``teacher_similarities``.

  Args:
    model: object with ``encode_images(uint8 [n, H, W, 3]) -> [n, d]`` and ``encode_texts(list) -> [c, d]``.
    images: uint8 [N, H, W, 3].
    concepts: c concept strings.

  Returns:
    (P [N, c], image embeddings [N, d]) as numpy arrays.
  """
  text = np.asarray(model.encode_texts(list(concepts)))
  img = np.concatenate(
    [np.asarray(model.encode_images(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
  )
  return np.asarray(teacher_similarities(img, text)), img


def filter_a(p: jax.Array, cutoff: float = 0.25, top_k: int = 5) -> jax.Array:
  """Filter A: keep concept k if the mean of its ``top_k`` highest image similarities exceeds ``cutoff``.

  Args:
    p: [N, c] teacher similarities.

  Returns:
    [c] bool mask of kept concepts.
  """
  top = jax.lax.top_k(jnp.asarray(p).T, min(top_k, p.shape[0]))[0]  # [c, top_k]
  return jnp.mean(top, axis=1) > cutoff
