"""conceptjax.data.store: chunked writes, atomic manifest, resume after a kill, no row lost or repeated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conceptjax.data import store
from conceptjax.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def _rows(start, stop):
  """Deterministic rows: embeddings [n, 3], labels [n], sparse codes of a width that varies per chunk."""
  r = np.arange(start, stop)
  k = 2 + start % 3
  idx = (r[:, None] * 7 + np.arange(k)) % 50
  idx[::4, -1] = -1
  return {
    "embeddings": np.stack([r, r**2, -r], 1).astype(np.float32),
    "labels": (r % 5).astype(np.int64),
    "indices": idx.astype(np.int32),
    "values": np.where(idx >= 0, 1.0 / (1 + r[:, None]), 0.0).astype(np.float32),
  }


def test_roundtrip_and_sparse_padding(tmp_path):
  st = store.fill(store.Store.open(tmp_path / "s", num_rows=23, chunk_rows=5), _rows, progress=False)
  assert st.complete and len(st.manifest["chunks"]) == 5
  want = _rows(0, 23)
  np.testing.assert_array_equal(st.read("embeddings"), want["embeddings"])
  np.testing.assert_array_equal(st.read("labels"), want["labels"])
  idx, val = st.read_sparse()
  assert idx.shape == (23, 4)  # widest chunk
  for r in range(23):
    chunk = _rows(r - r % 5, r - r % 5 + 5)
    k = chunk["indices"].shape[1]
    np.testing.assert_array_equal(idx[r, :k], chunk["indices"][r % 5])
    np.testing.assert_array_equal(val[r, :k], chunk["values"][r % 5])
    assert (idx[r, k:] == -1).all() and (val[r, k:] == 0).all()
  reopened = store.Store.read_only(tmp_path / "s")
  np.testing.assert_array_equal(reopened.read("embeddings"), want["embeddings"])


def test_interrupted_run_resumes_identically(tmp_path):
  full = store.fill(store.Store.open(tmp_path / "full", num_rows=17, chunk_rows=4), _rows, progress=False)
  calls = []

  def failing(start, stop):
    calls.append(start)
    if len(calls) == 3:
      raise KeyboardInterrupt  # killed while computing the third chunk
    return _rows(start, stop)

  with pytest.raises(KeyboardInterrupt):
    store.fill(store.Store.open(tmp_path / "part", num_rows=17, chunk_rows=4), failing, progress=False)
  part = store.Store.open(tmp_path / "part", num_rows=17, chunk_rows=4)
  assert part.next_row == 8
  # a half-written chunk file left behind by the kill is overwritten, not trusted
  (tmp_path / "part" / "chunk-000002.npz").write_bytes(b"garbage")
  resumed_calls = []
  store.fill(part, lambda a, b: resumed_calls.append(a) or _rows(a, b), progress=False)
  assert resumed_calls == [8, 12, 16]  # only the missing chunks
  for f in ("embeddings", "labels"):
    np.testing.assert_array_equal(part.read(f), full.read(f))
  for a, b in zip(part.read_sparse(), full.read_sparse(), strict=True):
    np.testing.assert_array_equal(a, b)


_KILLED_SCRIPT = """
import sys, time
import numpy as np
from conceptjax.data import store
def produce(start, stop):
  if start >= 6:
    time.sleep(60)  # the parent kills us here
  r = np.arange(start, stop)
  return {"x": np.stack([r, 2 * r], 1).astype(np.int64)}
store.fill(store.Store.open(sys.argv[1], num_rows=10, chunk_rows=3), produce, progress=False)
"""


def test_sigkill_then_resume(tmp_path):
  out = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT, str(out)], env=env, cwd=ROOT)
  try:
    deadline = time.time() + 120
    while time.time() < deadline:
      if (out / "manifest.json").is_file() and store.Store.read_only(out).next_row == 6:
        break
      time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  st = store.Store.open(out, num_rows=10, chunk_rows=3)
  assert st.next_row == 6
  store.fill(st, lambda a, b: {"x": np.stack([np.arange(a, b), 2 * np.arange(a, b)], 1)}, progress=False)
  np.testing.assert_array_equal(st.read("x"), np.stack([np.arange(10), 2 * np.arange(10)], 1))


def test_bad_use_is_rejected(tmp_path):
  st = store.Store.open(tmp_path / "s", num_rows=10, chunk_rows=4, meta={"model": "a"})
  with pytest.raises(InputError, match="another job"):
    store.Store.open(tmp_path / "s", num_rows=10, chunk_rows=4, meta={"model": "b"})
  with pytest.raises(InputError, match="no pending chunk starts at row 2"):  # not a chunk boundary
    st.write_chunk(2, _rows(2, 6))
  with pytest.raises(InputError, match="out of range"):  # chunks are whole: rows 4-8
    st.write_chunk(4, _rows(4, 7))
  with pytest.raises(InputError, match="row counts"):
    st.write_chunk(0, {"a": np.zeros(3), "b": np.zeros(4)})
  st.write_chunk(0, {"a": np.zeros((4, 2))})
  with pytest.raises(InputError, match="no pending chunk starts at row 0"):  # stored already
    st.write_chunk(0, {"a": np.zeros((4, 2))})
  with pytest.raises(InputError, match="field 'a'"):
    st.write_chunk(4, {"a": np.zeros((4, 3))})
  with pytest.raises(InputError, match="no store"):
    store.Store.read_only(tmp_path / "none")
  with pytest.raises(InputError, match="no field"):
    st.read("b")


def test_writers_with_their_own_manifests_merge_on_read_and_fold_on_commit(tmp_path):
  """Two writers (the processes of one job) in any order, one chunk recorded by both, a killed writer's
  gap: every row once on read, the gap pending; a commit folds the process manifests into manifest.json."""
  d = tmp_path / "s"
  store.Store.open(d, num_rows=10, chunk_rows=4)
  w0, w1 = store.Store.read_only(d), store.Store.read_only(d)
  w0.writer, w1.writer = 0, 1
  w1.write_chunk(8, _rows(8, 10))  # the last chunk first
  w0.write_chunk(0, _rows(0, 4))
  w0.refresh().writer = 0
  assert list(w0.pending()) == [(4, 8)] and w0.next_row == 4 and not w0.complete
  assert json.loads((d / "manifest.json").read_text())["chunks"] == []  # untouched while the writers work
  again = store.Store.read_only(d)  # chunk 8 recorded twice (redone after a kill): still one chunk
  again.writer = 0
  again.manifest["chunks"] = [c for c in again.manifest["chunks"] if c["start"] != 8]
  again.write_chunk(8, _rows(8, 10))
  st = store.Store.read_only(d)
  assert [c["start"] for c in st.manifest["chunks"]] == [0, 8] and st.stored_rows == 6
  st.write_chunk(4, _rows(4, 8))  # a resume by one process, into manifest.json
  st.commit()
  assert not list(d.glob(store.PART_GLOB)) and store.Store.read_only(d).complete
  np.testing.assert_array_equal(store.Store.read_only(d).read("labels"), _rows(0, 10)["labels"])
