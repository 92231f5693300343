"""Atomic file writes and JSON/JSONL helpers: every file conceptjax writes goes through here.

A write goes to a temporary file in the same folder and is renamed over the target, so a killed job leaves
either the old file or the new one, never half of one. Files get the permissions the umask gives (as
``open`` would), not ``mkstemp``'s 0600. A folder that a command writes is held with :func:`output_lock`:
one writer at a time, and the temporary files a killed writer left behind are removed when the next one
takes the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from conceptjax.errors import InputError

LOCK_FILE = ".conceptjax.lock"
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
  with _UMASK_LOCK:  # reading the umask means setting it: keep other threads of ours out meanwhile
    mask = os.umask(0o022)
    os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
  """Opens a temporary sibling of ``path`` for writing and renames it onto ``path`` on success."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a failed write (ENOSPC...)
      raise OSError(e.errno, e.strerror, str(path)) from None  # names the file it was writing
    raise


TMP_SUFFIX = ".tmp"


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
  """Removes the temporary files ``atomic_open`` left in ``directory`` (a killed writer's); returns them.

  Only call it while holding the folder (:func:`output_lock`): another writer's temporary files are live.
  """
  removed = []
  for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
    with contextlib.suppress(FileNotFoundError):
      p.unlink()
      removed.append(p)
  return removed


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike, process: int = 0) -> Iterator[Path]:
  """Holds ``directory`` (created if needed) for one writer: an advisory ``flock`` on a lock file in it.

  The lock file records the holder's PID. A second writer fails at once with one line naming that PID. The
  kernel releases a ``flock`` when its process dies, so a lock file left by a killed run is simply taken
  over. On taking the folder, temporary files left by a killed writer are removed.

  A multi-process job (``conceptjax.parallel``) writes one folder from every process: each holds the lock
  of its process index (``process``; process 0 the plain lock file, process ``I`` ``<lock file>.p<I>``), so
  two processes of one job share the folder and a second job is refused by any of them. Only process 0
  removes temporary files, on taking its lock: every process takes its lock before the job's first
  barrier and writes after it (``conceptjax.data.store.fill``).

  Raises:
    InputError: another process holds the folder.
    OSError: the path is not a folder that can be written (the CLI prints it as one line, status 1).
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)  # OSError (a file there, read-only...): the CLI's one line
  lock_file = directory / (LOCK_FILE if process == 0 else f"{LOCK_FILE}.p{process}")
  fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
      raise InputError(
        f"output folder {directory} is being written by another process (PID {holder}, lock file "
        f"{lock_file}); wait for it to finish or stop it"
      ) from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as e:  # a full disk: name the file
      raise OSError(e.errno, e.strerror, str(lock_file)) from None
    if process == 0:
      remove_stale_temps(directory)
    yield directory
  finally:
    os.close(fd)  # releases the flock


_ERRNO_HINTS = {
  errno.ENOSPC: "the disk is full: free space and re-run",
  errno.EDQUOT: "the disk quota is exceeded: free space and re-run",
  errno.EROFS: "the file system is read-only: choose another output path",
  errno.EACCES: "permission denied: choose another output path or fix its permissions",
  errno.EPERM: "permission denied: choose another output path or fix its permissions",
  errno.EISDIR: "it is a folder, a file is needed here",
  errno.ENOTDIR: "a part of the path is a file, a folder is needed there",
  errno.EEXIST: "it exists and is a file, a folder is needed here",
  errno.ENOENT: "no such file or folder",
}


def describe_os_error(e: OSError) -> str:
  """One line for an OSError: the path (a rename's target, not its temporary file), the system's reason and
  what to do (disk full, read-only...)."""
  where = e.filename2 if e.filename2 is not None else e.filename
  reason = e.strerror or str(e) or type(e).__name__
  hint = _ERRNO_HINTS.get(e.errno)
  return f"{f'{where}: ' if where is not None else ''}{reason}" + (f" ({hint})" if hint else "")


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
  """The arrays of an .npz file.

  Raises:
    InputError: one line naming the file when it is missing, empty, truncated or corrupt.
  """
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except FileNotFoundError:
    raise InputError(f"file {path} is missing") from None
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    what = "empty" if size == 0 else "truncated or corrupt"
    raise InputError(f"file {path} is {what} ({type(e).__name__}: {str(e)[:100]})") from None


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
