"""Atomic file writes and JSON/JSONL helpers: every file conceptjax writes goes through here.

A write goes to a temporary file in the same folder and is renamed over the target, so a killed job leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
  """Opens a temporary sibling of ``path`` for writing and renames it onto ``path`` on success."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
  write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
  """Atomically writes ``arrays`` to an uncompressed .npz file."""
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def _json_default(o: Any) -> Any:
  if isinstance(o, np.generic):
    return o.item()
  if hasattr(o, "tolist"):
    return o.tolist()
  if isinstance(o, Path):
    return str(o)
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_jsonable(obj: Any) -> Any:
  """Converts numpy/jax scalars and arrays inside ``obj`` to plain Python for ``json.dumps``."""
  return json.loads(json.dumps(obj, default=_json_default))


class JsonlWriter:
  """Appends one JSON object per line (metrics logs); each line is flushed as it is written."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

  def write(self, record: dict[str, Any]) -> None:
    self._f.write(json.dumps(record, default=_json_default) + "\n")
    self._f.flush()

  def drop_after(self, key: str, last: int) -> None:
    """Drops the records whose ``key`` exceeds ``last`` (a run resumed from step ``last`` logs them again).

    The file is rewritten atomically; records without ``key`` are kept, and a line that is not JSON (the
    half-written last line of a killed run) is dropped.
    """
    self._f.close()
    lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)

    def kept(line: str) -> bool:
      try:
        return json.loads(line).get(key, last) <= last
      except json.JSONDecodeError:
        return False

    keep = [line for line in lines if kept(line)]
    if len(keep) != len(lines):
      with atomic_open(self.path, "w") as f:
        f.writelines(keep)
    self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

  def close(self) -> None:
    self._f.close()

  def __enter__(self) -> JsonlWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
