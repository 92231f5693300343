"""Concept dictionaries and embedding means, and their on-disk cache.

Dictionary (docs/splice.md): embed each concept as-is with the CLIP text encoder, L2-normalise the rows,
subtract the mean concept (mean over the kept concepts), L2-normalise again -> ``C`` [c, d]. The image side
is centred with ``mu_img``, the mean of unit-normalised image embeddings of a reference set (not unit norm).

Both are cached on disk under content fingerprints (``conceptjax.provenance``): a dictionary under the
model's parameters and the exact concept list (so a retrained model, a different ``vocabulary_size`` or an
edited vocabulary file gives a new entry), an image mean under the reference store's rows. Each cache file
also records the fingerprints it was made from and is checked against them when read; a cache file that is
unreadable is rebuilt (with a one-line warning). Every cache file is written atomically (``conceptjax.io``).

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024, Sec. 3-4.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from conceptjax import io, provenance
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


fingerprint = provenance.fingerprint  # short cache keys (kept here for existing callers)


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


def save_dictionary(
  path: str | os.PathLike, dictionary: ConceptDictionary, model_fingerprint: str = ""
) -> None:
  """Writes a dictionary to one .npz (atomically), with the fingerprint of the model that embedded it."""
  io.save_npz(
    path,
    concepts=np.asarray(dictionary.concepts, dtype=str),
    matrix=dictionary.matrix,
    text_mean=dictionary.text_mean,
    model_name=np.asarray(dictionary.model_name),
    model_fingerprint=np.asarray(model_fingerprint),
  )


def load_dictionary(path: str | os.PathLike, dim: int | None = None) -> ConceptDictionary:
  """Reads a dictionary written by ``save_dictionary``; ``dim`` checks the width against a model's."""
  path = Path(path)
  check(path.is_file(), f"dictionary file not found: {path}")
  f = io.load_npz(path)
  try:
    d = ConceptDictionary(
      tuple(str(c) for c in f["concepts"]), f["matrix"], f["text_mean"], str(f["model_name"])
    )
  except KeyError as e:
    raise InputError(f"dictionary file {path} lacks the array {e}") from None
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

  The cache key is the content of the model's parameters and the exact concept list (never names, paths or
  file times). A cached file that is unreadable, or whose recorded model or concepts differ from the key's
  (a file copied in by hand), is rebuilt with a one-line warning naming it.
  """
  cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
  model_fp = provenance.model_fingerprint(model)
  path = Path(cache_dir) / f"dictionary-{fingerprint(model_fp, *concepts)}.npz"
  if path.is_file():
    try:
      d = load_dictionary(path, dim=model.dim)
      recorded = str(io.load_npz(path).get("model_fingerprint", model_fp))
      check(recorded == model_fp, f"cached dictionary {path} was built by model {provenance.short(recorded)}")
      check(list(d.concepts) == list(concepts), f"cached dictionary {path} holds other concepts")
      return d
    except InputError as e:
      warnings.warn(f"{e}; rebuilding it", stacklevel=2)
  dictionary = build_dictionary(model, concepts)
  save_dictionary(path, dictionary, model_fp)
  return dictionary


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
  return read_mean(path, dim)[0]


def read_mean(path: str | os.PathLike, dim: int | None = None) -> tuple[np.ndarray, dict[str, str]]:
  """(mean [d], the string metadata saved with it) from a file written by ``save_mean``."""
  path = Path(path)
  check(path.is_file(), f"mean file not found: {path}")
  data = io.load_npz(path)
  check("mean" in data, f"mean file {path} holds no 'mean' array (has {sorted(data)})")
  mean = data.pop("mean")
  check(mean.ndim == 1, f"mean file {path} holds shape {mean.shape}; expected [d]")
  if dim is not None:
    check(mean.shape[0] == dim, f"mean file {path} has width {mean.shape[0]} but the model embeds into {dim}")
  check_finite(mean[None], f"mean file {path}")
  return mean, {k: str(v) for k, v in data.items()}


def cached_store_mean(
  store_dir: str | os.PathLike, model_name: str, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
  """The image mean of every embedding in a store (``conceptjax.data.store``), cached.

  The key is the content fingerprint of the store's rows (``Store.fingerprint``), so re-embedding changed
  images under the same file names gives a new mean; an unreadable cache file is rebuilt with a warning.
  """
  from conceptjax.data.store import Store

  store = Store.read_only(store_dir)
  check(store.complete, f"reference store {store_dir} is unfinished ({store.next_row}/{store.num_rows} rows)")
  cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
  store_fp = store.fingerprint()
  path = cache_dir / f"image-mean-{fingerprint(store_fp)}.npz"
  if path.is_file():
    try:
      mean, meta = read_mean(path)
      check(meta.get("store", store_fp) == store_fp, f"cached image mean {path} is of another store")
      return mean
    except InputError as e:
      warnings.warn(f"{e}; rebuilding it", stacklevel=2)
  acc = MeanAccumulator()
  for start, arrays in store.iter_chunks(["embeddings"]):
    acc.add(
      check_embeddings(arrays["embeddings"], arrays["embeddings"].shape[1], f"{store_dir} rows {start}+")
    )
  mean = acc.mean()
  save_mean(path, mean, model=model_name, reference=str(Path(store_dir).resolve()), store=store_fp)
  return mean
