"""A chunked, resumable on-disk store of per-row arrays: embeddings, labels, sparse codes.

Layout of a store folder::

  manifest.json        {"version", "num_rows", "chunk_rows", "meta", "chunks": [{file, start, stop, sha256}]}
  chunk-000000.npz     rows [0, chunk_rows) of every field
  chunk-000001.npz     ...

Rows are written one chunk at a time, in order: first the chunk file (atomically), then the manifest
listing it (atomically). A job killed at any moment leaves a manifest that lists only complete chunks; the
next run with the same settings resumes at ``next_row`` (a half-written chunk is simply written again), so
no row is lost or duplicated. Each chunk's ``sha256`` is the fingerprint of its arrays
(``conceptjax.provenance.arrays_fingerprint``): reads check it, so a damaged, truncated, missing or swapped
chunk file is one InputError line naming the file and the fix (``--redo-chunk N``, or delete the file and
re-run: ``fill`` writes deleted chunks again), and ``Store.fingerprint`` identifies the rows by content.
Sparse codes are stored per row as fixed-width ``indices`` [n, k] (int32, -1 = unused) and ``values``
[n, k]; chunks may differ in ``k`` and ``read_sparse`` pads them to one width.

Several writers (processes of one multi-process job, ``conceptjax.parallel``): chunk ``i`` always holds rows
``[i * chunk_rows, (i + 1) * chunk_rows)`` and is named ``chunk-<i>.npz``, whoever writes it. ``fill`` splits
the pending chunks over the processes; each process records the chunks it finished in a manifest of its
own, ``manifest-p<I>.json`` (atomically, after each chunk), and never touches another's. Readers merge
``manifest.json`` with every ``manifest-p*.json`` (a chunk is identified by its first row, so a chunk
listed twice is one chunk, never doubled rows). When every process has finished, process 0 folds the
process manifests into ``manifest.json`` (one atomic write) and removes them. A killed process's unfinished
chunks are simply pending on the next run, whatever its process count: its finished ones are kept.

Typical use::

  store = Store.open(out, num_rows=len(source), chunk_rows=4096, meta={"model": model.name})
  fill(store, lambda start, stop: {"embeddings": ..., "labels": ...})
  emb = store.read("embeddings")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from conceptjax import io, provenance
from conceptjax.errors import InputError, check

MANIFEST = "manifest.json"
PART_GLOB = "manifest-p*.json"  # one per writing process (module docstring)
VERSION = 1
PAD_INDEX = -1


def _part_name(process: int) -> str:
  return f"manifest-p{process}.json"


def _merge_parts(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
  """``manifest`` with the chunks (and fields) of every process manifest in ``directory`` added, the chunks
  identified by their first row and sorted by it."""
  chunks = {int(c["start"]): c for c in manifest["chunks"]}
  fields = manifest.get("fields") or {}
  for path in sorted(directory.glob(PART_GLOB)):
    try:
      part = io.read_json(path)
    except (OSError, ValueError) as e:
      raise InputError(f"store manifest {path} is unreadable ({e})") from None
    fields = fields or part.get("fields") or {}
    for c in part.get("chunks", []):
      chunks.setdefault(int(c["start"]), c)
  return dict(manifest, fields=fields, chunks=[chunks[k] for k in sorted(chunks)])


class Store:
  """A chunked store folder (see the module docstring). Create or resume with :meth:`Store.open`."""

  def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
    self.directory = Path(directory)
    self.manifest = manifest
    self.writer: int | None = None  # set by ``fill`` on a multi-process job: chunks go to manifest-p<writer>

  # -- opening -------------------------------------------------------------------------------------------
  @classmethod
  def open(
    cls,
    directory: str | os.PathLike,
    *,
    num_rows: int,
    chunk_rows: int = 4096,
    meta: Mapping[str, Any] | None = None,
  ) -> Store:
    """Creates a store, or resumes the one in ``directory`` if it was created with the same settings.

    Raises:
      InputError: the folder holds a store with other ``num_rows``, ``chunk_rows`` or ``meta`` (a different
        job): resuming it would mix outputs.
    """
    check(num_rows >= 0, f"num_rows must be >= 0, got {num_rows}")
    check(chunk_rows >= 1, f"chunk_rows must be >= 1, got {chunk_rows}")
    directory = Path(directory)
    meta = io.to_jsonable(dict(meta or {}))
    if (directory / MANIFEST).is_file():
      store = cls.read_only(directory)
      m = store.manifest
      want = {"num_rows": num_rows, "chunk_rows": chunk_rows, "meta": meta}
      have = {k: m.get(k) for k in want}
      if have != want:
        diff = [k for k in want if have[k] != want[k]]
        raise InputError(
          f"store {directory} was made by another job ({', '.join(diff)} differ: {have[diff[0]]!r} vs "
          f"{want[diff[0]]!r}); use another output folder or delete it"
        )
      return store
    manifest = {
      "version": VERSION,
      "num_rows": num_rows,
      "chunk_rows": chunk_rows,
      "meta": meta,
      "fields": {},
      "chunks": [],
    }
    directory.mkdir(parents=True, exist_ok=True)
    io.write_json(directory / MANIFEST, manifest)
    return cls(directory, manifest)

  @classmethod
  def read_only(cls, directory: str | os.PathLike) -> Store:
    """Opens an existing store for reading."""
    directory = Path(directory)
    path = directory / MANIFEST
    check(path.is_file(), f"no store in {directory} (missing {MANIFEST})")
    try:
      manifest = io.read_json(path)
    except (OSError, ValueError) as e:
      raise InputError(f"store manifest {path} is unreadable ({e})") from None
    check(
      manifest.get("version") == VERSION, f"store {directory} has unknown version {manifest.get('version')}"
    )
    return cls(directory, _merge_parts(directory, manifest))

  def refresh(self) -> Store:
    """Re-reads the manifests from disk (other processes' finished chunks included); returns ``self``."""
    self.manifest = Store.read_only(self.directory).manifest
    return self

  def commit(self) -> None:
    """Folds the process manifests into ``manifest.json`` (one atomic write) and removes them.

    Only while no process writes this store (``fill`` calls it on process 0 after every process finished).
    """
    parts = sorted(self.directory.glob(PART_GLOB))
    if not parts:
      return
    self.refresh()
    io.write_json(self.directory / MANIFEST, self.manifest)
    for path in parts:
      path.unlink(missing_ok=True)

  # -- state ---------------------------------------------------------------------------------------------
  @property
  def num_rows(self) -> int:
    return int(self.manifest["num_rows"])

  @property
  def chunk_rows(self) -> int:
    return int(self.manifest["chunk_rows"])

  @property
  def meta(self) -> dict[str, Any]:
    return self.manifest["meta"]

  @property
  def fields(self) -> list[str]:
    return list(self.manifest["fields"])

  @property
  def next_row(self) -> int:
    """First row not yet stored (rows before it are all in finished chunks)."""
    return next((start for start, _ in self.pending()), self.num_rows)

  @property
  def stored_rows(self) -> int:
    """Rows in finished chunks (with several writers, finished chunks may follow unfinished ones)."""
    return sum(int(c["stop"]) - int(c["start"]) for c in self.manifest["chunks"])

  @property
  def complete(self) -> bool:
    return self.stored_rows >= self.num_rows

  def pending(self) -> Iterator[tuple[int, int]]:
    """(start, stop) of every chunk still to write, in order."""
    done = {int(c["start"]) for c in self.manifest["chunks"]}
    for start in range(0, self.num_rows, self.chunk_rows):
      if start not in done:
        yield start, min(start + self.chunk_rows, self.num_rows)

  # -- writing -------------------------------------------------------------------------------------------
  def write_chunk(self, start: int, arrays: Mapping[str, Any]) -> None:
    """Stores rows ``[start, start + n)`` of every field; ``start`` must begin a chunk not yet stored.

    Every array's leading axis is the chunk's row count (``chunk_rows``, fewer for the last chunk); fields
    and trailing shapes/dtypes must match earlier chunks (except the width of ``indices``/``values``). The
    chunk is recorded in ``manifest.json``, or with ``writer`` set in this process's own manifest.
    """
    pending = dict(self.pending())
    check(
      start in pending,
      f"store {self.directory}: no pending chunk starts at row {start} (next: {self.next_row})",
    )
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    check(len(arrays) > 0, "a chunk needs at least one field")
    sizes = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
    check(
      len(sizes) == 1, f"chunk fields have different row counts: { {k: a.shape for k, a in arrays.items()} }"
    )
    n = sizes.pop()
    check(1 <= n and start + n == pending[start], f"chunk of {n} rows at {start} out of range")
    fields = {k: {"dtype": str(a.dtype), "shape": list(a.shape[1:])} for k, a in arrays.items()}
    known = self.manifest["fields"]
    if known:
      check(
        set(known) == set(fields), f"chunk fields {sorted(fields)} differ from the store's {sorted(known)}"
      )
      for k, f in fields.items():
        same = f["dtype"] == known[k]["dtype"] and (
          k in ("indices", "values") or f["shape"] == known[k]["shape"]
        )
        check(same, f"field {k!r}: chunk has {f} but the store has {known[k]}")
    name = f"chunk-{start // self.chunk_rows:06d}.npz"
    io.save_npz(self.directory / name, **arrays)
    entry = {"file": name, "start": start, "stop": start + n, "sha256": provenance.arrays_fingerprint(arrays)}
    chunks = sorted([*self.manifest["chunks"], entry], key=lambda c: int(c["start"]))
    manifest = dict(self.manifest, fields=known or fields, chunks=chunks)
    if self.writer is None:
      io.write_json(self.directory / MANIFEST, manifest)
    else:
      path = self.directory / _part_name(self.writer)
      mine = io.read_json(path)["chunks"] if path.is_file() else []
      io.write_json(path, {"fields": manifest["fields"], "chunks": [*mine, entry]})
    self.manifest = manifest

  def rewrite_chunk(self, number: int, arrays: Mapping[str, Any]) -> None:
    """Writes chunk ``number`` (already listed in the manifest) again, e.g. after its file was damaged.

    The arrays must have the chunk's rows and the store's fields; the manifest's record of the chunk's
    content is updated, the rest is unchanged.
    """
    chunks = self.manifest["chunks"]
    check(0 <= number < len(chunks), f"store {self.directory} has no chunk {number} ({len(chunks)} chunks)")
    entry = chunks[number]
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    n = int(entry["stop"]) - int(entry["start"])
    check(
      set(arrays) == set(self.manifest["fields"]) and all(a.shape[:1] == (n,) for a in arrays.values()),
      f"chunk {number} of {self.directory} needs {n} rows of {sorted(self.manifest['fields'])}",
    )
    io.save_npz(self.directory / entry["file"], **arrays)
    manifest = dict(self.manifest)
    digest = provenance.arrays_fingerprint(arrays)
    manifest["chunks"] = [dict(c, sha256=digest) if i == number else c for i, c in enumerate(chunks)]
    io.write_json(self.directory / MANIFEST, manifest)
    self.manifest = manifest

  def missing_chunks(self) -> list[int]:
    """Numbers of the chunks the manifest lists whose files are gone (deleted to have them written again)."""
    return [i for i, c in enumerate(self.manifest["chunks"]) if not (self.directory / c["file"]).is_file()]

  # -- reading -------------------------------------------------------------------------------------------
  def load_chunk(self, number: int) -> dict[str, np.ndarray]:
    """The arrays of finished chunk ``number``, checked against the content the manifest records.

    Raises:
      InputError: one line naming the missing, truncated or corrupt file and how to write it again.
    """
    chunk = self.manifest["chunks"][number]
    path = self.directory / chunk["file"]
    recover = (
      f"re-run the command that wrote {self.directory} with --redo-chunk {number}, "
      "or delete the file and re-run it"
    )
    if not path.is_file():
      raise InputError(f"store chunk {path} is missing (chunk {number}): {recover}")
    try:
      data = io.load_npz(path)
    except InputError as e:
      raise InputError(f"{e}; chunk {number}: {recover}") from None
    digest = chunk.get("sha256")
    if digest is not None and provenance.arrays_fingerprint(data) != digest:
      raise InputError(
        f"store chunk {path} holds other data than the manifest records (chunk {number}): {recover}"
      )
    return data

  def iter_chunks(self, fields: list[str] | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yields (start row, {field: array}) for every finished chunk, in order (each checked as in
    :meth:`load_chunk`)."""
    for number, chunk in enumerate(self.manifest["chunks"]):
      data = self.load_chunk(number)
      yield int(chunk["start"]), {k: data[k] for k in (fields or data)}

  def fingerprint(self) -> str:
    """Content fingerprint of the rows: the same rows in the same chunks give the same fingerprint
    wherever the folder is (``conceptjax.provenance``). Chunks written before their content was recorded
    are read and hashed."""
    digests = [
      c.get("sha256") or provenance.arrays_fingerprint(self.load_chunk(i))
      for i, c in enumerate(self.manifest["chunks"])
    ]
    return provenance.combine(self.num_rows, self.manifest["fields"], digests)

  def read(self, field: str) -> np.ndarray:
    """All finished rows of one field, concatenated."""
    check(
      field in self.manifest["fields"], f"store {self.directory} has no field {field!r} (has {self.fields})"
    )
    parts = [arrays[field] for _, arrays in self.iter_chunks([field])]
    if not parts:
      f = self.manifest["fields"][field]
      return np.zeros((0, *f["shape"]), f["dtype"])
    return np.concatenate(parts)

  def read_sparse(self) -> tuple[np.ndarray, np.ndarray]:
    """(indices [N, k], values [N, k]) of all finished rows, padded to the widest chunk with (-1, 0)."""
    parts = [(a["indices"], a["values"]) for _, a in self.iter_chunks(["indices", "values"])]
    return pad_sparse(parts)


def pad_sparse(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates (indices, values) pairs of different widths, padding with (-1, 0)."""
  if not parts:
    return np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
  k = max(i.shape[1] for i, _ in parts)
  idx = [np.pad(i, ((0, 0), (0, k - i.shape[1])), constant_values=PAD_INDEX) for i, _ in parts]
  val = [np.pad(v, ((0, 0), (0, k - v.shape[1]))) for _, v in parts]
  return np.concatenate(idx), np.concatenate(val)


def fill(
  store: Store,
  produce: Callable[[int, int], Mapping[str, Any]],
  *,
  progress: bool = True,
  desc: str | None = None,
  redo: Iterable[int] = (),
) -> Store:
  """Writes every pending chunk of ``store`` with ``produce(start, stop) -> {field: [stop - start, ...]}``.

  Resumable: a store that already holds some chunks continues with the pending ones. Finished chunks listed
  in ``redo``, and those whose files were deleted, are written again first (``produce`` must be
  deterministic for the store to stay consistent). Shows a tqdm progress bar (on stderr) over rows unless
  ``progress`` is False; until the first chunk is done it says so (the first chunk pays the compilations).

  In a multi-process job (``jax.process_count() > 1``) every process calls ``fill`` on the same store: the
  pending chunks are split into contiguous blocks, one per process (``parallel.process_slice``), each
  process writes its block into its own manifest, process 0 writes the ``redo`` chunks, and process 0 folds
  the manifests into ``manifest.json`` once every process has finished (module docstring). ``produce`` is
  called on a process for its own chunks only.
  """
  import jax
  from tqdm.auto import tqdm

  from conceptjax import parallel

  index, count = jax.process_index(), jax.process_count()
  total = -(-store.num_rows // store.chunk_rows)
  for n in redo:
    check(0 <= n < total, f"--redo-chunk {n}: store {store.directory} has chunks 0-{total - 1}")
  tag = f"store {store.directory.resolve()}"
  if count > 1:
    # every process sees the same finished chunks: nobody writes before the barrier below
    store.refresh()
    store.writer = index
  elif index == 0:
    store.commit()  # one process holds the folder: fold a killed multi-process run's manifests now
  chunks = store.manifest["chunks"]
  redo = sorted(n for n in set(redo) | set(store.missing_chunks()) if n < len(chunks))  # the rest are pending
  todo = list(store.pending())
  mine = todo[parallel.process_slice(len(todo), index, count)]
  parallel.barrier(f"{tag}: start")
  with tqdm(
    total=sum(b - a for a, b in mine) + store.num_rows - sum(b - a for a, b in todo),
    initial=store.num_rows - sum(b - a for a, b in todo),
    unit="row",
    desc=(desc or store.directory.name) + (f" [p{index}]" if count > 1 else ""),
    disable=not progress,
  ) as bar:
    bar.set_postfix_str("first chunk (compiling)", refresh=True)
    for n in redo if index == 0 else ():
      store.rewrite_chunk(n, produce(int(chunks[n]["start"]), int(chunks[n]["stop"])))
      bar.set_postfix_str(f"chunk {n} rewritten", refresh=True)
    for start, stop in mine:
      arrays = produce(start, stop)
      store.write_chunk(start, arrays)
      bar.set_postfix_str("")
      bar.update(stop - start)
  if count > 1:
    parallel.barrier(f"{tag}: written")
    if index == 0:
      store.commit()
    parallel.barrier(f"{tag}: committed")
    store.writer = None
    store.refresh()
  return store
