"""Concept dictionaries and embedding means, and their on-disk cache.

Dictionary (docs/splice.md): embed each concept as-is with the CLIP text encoder, L2-normalise the rows,
subtract the mean concept (mean over the kept concepts), L2-normalise again -> ``C`` [c, d]. The image side
is centred with ``mu_img``, the mean of unit-normalised image embeddings of a reference set (not unit norm).

Both are cached on disk: a dictionary is keyed by the model name and the exact concept list (so a different
``vocabulary_size`` or an edited vocabulary file gives a new entry); an image mean by the model name and a
fingerprint of the reference set. Every cache file is written atomically (``conceptjax.io``).

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024, Sec. 3-4.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from conceptjax import io
from conceptjax.errors import InputError, check, check_finite, check_rows
from conceptjax.sparse.synthetic import center_normalize, normalize_rows


class ConceptDictionary(NamedTuple):
  """A SpLiCE concept dictionary.

  Attributes:
    concepts: the c concept strings, in vocabulary order (most frequent last).
    matrix: float32 [c, d] centred, unit-norm concept rows ``C``.
    text_mean: float32 [d] mean of the unit-normalised concept embeddings (the text-side ``mu``).
    model_name: name of the CLIP that embedded the concepts.
  """

  concepts: tuple[str, ...]
  matrix: np.ndarray  # [c, d]
  text_mean: np.ndarray  # [d]
  model_name: str

  @property
  def dim(self) -> int:
    return int(self.matrix.shape[1])

  def index(self, names: Iterable[str]) -> list[int]:
    """Concept indices of ``names``; an unknown name raises InputError."""
    pos = {c: i for i, c in enumerate(self.concepts)}
    out = []
    for n in names:
      check(n in pos, f"concept {n!r} is not in the dictionary ({len(self.concepts)} concepts)")
      out.append(pos[n])
    return out


def default_cache_dir() -> Path:
  """``$CONCEPTJAX_CACHE`` or ``~/.cache/conceptjax``."""
  return Path(os.environ.get("CONCEPTJAX_CACHE") or Path.home() / ".cache" / "conceptjax")


def fingerprint(*parts: str | bytes) -> str:
  """A 16-hex-digit key from text parts (sha256)."""
  h = hashlib.sha256()
  for p in parts:
    h.update(p.encode("utf-8") if isinstance(p, str) else p)
    h.update(b"\0")
  return h.hexdigest()[:16]


def dictionary_from_embeddings(
  text_embeddings: Any, concepts: Sequence[str], model_name: str = ""
) -> ConceptDictionary:
  """Builds ``C`` from raw text embeddings [c, d]: normalise, mean-centre, renormalise."""
  raw = jnp.asarray(text_embeddings, jnp.float32)
  check(
    raw.ndim == 2 and raw.shape[0] == len(concepts),
    f"text embeddings {raw.shape} vs {len(concepts)} concepts",
  )
  check_finite(np.asarray(raw), "concept text embeddings")
  return ConceptDictionary(
    concepts=tuple(concepts),
    matrix=np.asarray(center_normalize(raw), np.float32),
    text_mean=np.asarray(jnp.mean(normalize_rows(raw), axis=0), np.float32),
    model_name=model_name,
  )


def build_dictionary(model: Any, concepts: Sequence[str], batch_size: int = 256) -> ConceptDictionary:
  """Embeds ``concepts`` with ``model.encode_texts`` (as-is, no template) and builds the dictionary."""
  return dictionary_from_embeddings(model.encode_texts(list(concepts), batch_size), concepts, model.name)


def save_dictionary(path: str | os.PathLike, dictionary: ConceptDictionary) -> None:
  """Writes a dictionary to one .npz (atomically)."""
  io.save_npz(
    path,
    concepts=np.asarray(dictionary.concepts, dtype=str),
    matrix=dictionary.matrix,
    text_mean=dictionary.text_mean,
    model_name=np.asarray(dictionary.model_name),
  )


def load_dictionary(path: str | os.PathLike, dim: int | None = None) -> ConceptDictionary:
  """Reads a dictionary written by ``save_dictionary``; ``dim`` checks the width against a model's."""
  path = Path(path)
  check(path.is_file(), f"dictionary file not found: {path}")
  try:
    f = io.load_npz(path)
    d = ConceptDictionary(
      tuple(str(c) for c in f["concepts"]), f["matrix"], f["text_mean"], str(f["model_name"])
    )
  except (OSError, ValueError, KeyError) as e:
    raise InputError(f"dictionary file {path} is unreadable ({type(e).__name__}: {e})") from None
  check(
    d.matrix.ndim == 2 and d.matrix.shape[0] == len(d.concepts),
    f"dictionary file {path}: matrix {d.matrix.shape} does not match {len(d.concepts)} concepts",
  )
  if dim is not None:
    check(
      d.dim == dim,
      f"dictionary {path} has width {d.dim} but the model embeds into width {dim}; "
      "it was built by another model: delete it (or pass another --cache-dir) to rebuild",
    )
  return d


def cached_dictionary(
  model: Any, concepts: Sequence[str], cache_dir: str | os.PathLike | None = None
) -> ConceptDictionary:
  """The dictionary of ``concepts`` under ``model``, from the cache or built and cached.

  The cache key is the model (its name and, for a local directory, the size and modification time of its
  weight and config files, so a model retrained into the same directory gets a new entry) and the exact
  concept list; a cached file whose width differs from the model's is an InputError naming the file.
  """
  cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
  path = Path(cache_dir) / f"dictionary-{fingerprint(*_model_key(model), *concepts)}.npz"
  if path.is_file():
    return load_dictionary(path, dim=model.dim)
  dictionary = build_dictionary(model, concepts)
  save_dictionary(path, dictionary)
  return dictionary


def _model_key(model: Any) -> tuple[str, ...]:
  """The model's name, plus its files' sizes and modification times when the name is a local directory."""
  path = Path(model.name)
  if not path.is_dir():
    return (model.name,)
  files = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".msgpack", ".json"))
  return (model.name, *(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files))


def check_embeddings(x: Any, dim: int, what: str = "embeddings") -> np.ndarray:
  """Validates a [B, d] embedding batch: 2-D, width ``dim``, finite, no zero-norm row. Returns float32."""
  x = check_rows(x, what)
  check(x.shape[1] == dim, f"{what} have width {x.shape[1]} but the dictionary has width {dim}")
  return x


class MeanAccumulator:
  """Streaming mean of unit-normalised rows (the SpLiCE image mean), fed chunk by chunk."""

  def __init__(self) -> None:
    self.total: np.ndarray | None = None
    self.count = 0

  def add(self, embeddings: Any) -> None:
    e = np.asarray(embeddings, np.float64)
    s = (e / np.linalg.norm(e, axis=1, keepdims=True)).sum(axis=0)
    self.total = s if self.total is None else self.total + s
    self.count += e.shape[0]

  def mean(self) -> np.ndarray:
    check(self.count > 0, "no reference embeddings to average")
    return (self.total / self.count).astype(np.float32)


def embedding_mean(embeddings: Any) -> np.ndarray:
  """``mu``: mean of the unit-normalised rows of [N, d] embeddings -> [d] (not unit norm)."""
  acc = MeanAccumulator()
  acc.add(check_embeddings(embeddings, np.shape(embeddings)[-1], "reference embeddings"))
  return acc.mean()


def save_mean(path: str | os.PathLike, mean: np.ndarray, **meta: Any) -> None:
  """Writes a mean vector [d] (plus string metadata) atomically."""
  io.save_npz(path, mean=np.asarray(mean, np.float32), **{k: np.asarray(str(v)) for k, v in meta.items()})


def load_mean(path: str | os.PathLike, dim: int | None = None) -> np.ndarray:
  """Reads a mean written by ``save_mean``; ``dim`` checks its width."""
  path = Path(path)
  check(path.is_file(), f"mean file not found: {path}")
  try:
    mean = io.load_npz(path)["mean"]
  except (OSError, ValueError, KeyError) as e:
    raise InputError(f"mean file {path} is unreadable ({type(e).__name__}: {e})") from None
  check(mean.ndim == 1, f"mean file {path} holds shape {mean.shape}; expected [d]")
  if dim is not None:
    check(mean.shape[0] == dim, f"mean file {path} has width {mean.shape[0]} but the model embeds into {dim}")
  check_finite(mean[None], f"mean file {path}")
  return mean


def cached_store_mean(
  store_dir: str | os.PathLike, model_name: str, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
  """The image mean of every embedding in a store (``conceptjax.data.store``), cached.

  The key is the model name and the store's manifest (its chunk list), so a changed store gives a new mean.
  """
  from conceptjax.data.store import Store

  store = Store.read_only(store_dir)
  check(store.complete, f"reference store {store_dir} is unfinished ({store.next_row}/{store.num_rows} rows)")
  cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
  key = fingerprint(model_name, io.to_jsonable(store.manifest).__repr__())
  path = cache_dir / f"image-mean-{key}.npz"
  if path.is_file():
    return load_mean(path)
  acc = MeanAccumulator()
  for start, arrays in store.iter_chunks(["embeddings"]):
    acc.add(
      check_embeddings(arrays["embeddings"], arrays["embeddings"].shape[1], f"{store_dir} rows {start}+")
    )
  mean = acc.mean()
  save_mean(path, mean, model=model_name, reference=str(Path(store_dir).resolve()))
  return mean
