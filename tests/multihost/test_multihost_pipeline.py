"""`conceptjax embed` / `decompose` as multi-process jobs on CPU against one process: the same rows, each
once, after a process is killed with SIGKILL mid-embed and the job resumed by 2 processes or by 1."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conceptjax.data import store
from conceptjax.launch import free_port, process_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each job starts JAX in every process: ~10-30 s per job


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  env["HF_HUB_OFFLINE"] = "1"
  return env


def _job(n, *args, timeout=600):
  """``conceptjax ARGS`` as ``n`` processes x 2 fake CPU devices (the launcher; ``n = 1`` too)."""
  cmd = [sys.executable, "-m", "conceptjax.launch", "-n", str(n), "--devices-per-process", "2", "--"]
  cmd += [sys.executable, "-m", "conceptjax.cli", *map(str, args), "--no-progress"]
  res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
  assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
  return res.stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  from PIL import Image

  from conceptjax.models import clip

  root = tmp_path_factory.mktemp("mp")
  model = clip.save_random_clip(root / "clip")
  rng = np.random.default_rng(0)
  for cls, base in (("cat", 40), ("dog", 200)):
    (root / "imgs" / cls).mkdir(parents=True)
    for i in range(20):
      img = np.clip(base + rng.normal(0, 30, (36, 40, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(img).save(root / "imgs" / cls / f"{i:02d}.png")
  words = ["red", "blue", "dog", "cat", "grass", "water", "star", "sky", "tree", "car", "boat", "house"]
  (root / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
  return root, model


def _embed_args(inputs, out):
  root, model = inputs
  return ["embed", "--model", model, "--folder", root / "imgs", "--out", out, "--chunk-rows", "4"]


@pytest.fixture(scope="module")
def one_process_store(inputs):
  out = inputs[0] / "emb1"
  _job(1, *_embed_args(inputs, out))
  return store.Store.read_only(out)


def _assert_same_rows(got: store.Store, want: store.Store):
  assert got.complete and not list(got.directory.glob(store.PART_GLOB))  # folded into manifest.json
  starts = [int(c["start"]) for c in got.manifest["chunks"]]
  assert starts == list(range(0, got.num_rows, got.chunk_rows))  # every chunk once, in order
  for field in ("embeddings", "labels"):
    np.testing.assert_allclose(got.read(field), want.read(field), rtol=1e-5, atol=1e-6)


def test_embed_two_processes_equals_one(inputs, one_process_store, tmp_path):
  _job(2, *_embed_args(inputs, tmp_path / "emb2"))
  _assert_same_rows(store.Store.read_only(tmp_path / "emb2"), one_process_store)


def test_decompose_two_processes_equals_one_row_for_row(inputs, one_process_store, tmp_path):
  root, model = inputs
  args = ["decompose", "--model", model, "--vocab", root / "vocab.txt", "--vocabulary-size", "0"]
  args += ["--embeddings", one_process_store.directory, "--l1-penalty", "0.05"]
  _job(1, *args, "--out", tmp_path / "one", "--cache-dir", tmp_path / "cache1")
  _job(2, *args, "--out", tmp_path / "two", "--cache-dir", tmp_path / "cache2")
  one, two = (store.Store.read_only(tmp_path / d) for d in ("one", "two"))
  starts = [[c["start"] for c in s.manifest["chunks"]] for s in (one, two)]
  assert two.complete and starts[0] == starts[1]

  def dense(indices, values):
    rows = zip(indices, values, strict=True)
    return np.stack([np.bincount(i[i >= 0], v[i >= 0], minlength=12) for i, v in rows])

  np.testing.assert_allclose(dense(*two.read_sparse()), dense(*one.read_sparse()), rtol=1e-5, atol=1e-6)
  for field in ("l0", "labels", "converged"):
    np.testing.assert_array_equal(two.read(field), one.read(field))
  listing = [(tmp_path / d / "top_concepts.tsv").read_text() for d in ("one", "two")]
  assert listing[0] == listing[1]


def _killed_embed(inputs, out, victim):
  """Two processes embed into ``out``; process ``victim`` gets SIGKILL once it has finished one chunk (of its
  five), then the job's other process is killed too (its runtime would end it)."""
  port = free_port()
  cmd = [sys.executable, "-m", "conceptjax.cli", *map(str, _embed_args(inputs, out)), "--no-progress"]
  procs = [
    subprocess.Popen(
      cmd, cwd=REPO, env=process_env(_env(), i, 2, port, 2, None), stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL, process_group=0,
    )
    for i in range(2)
  ]
  part = Path(out) / f"manifest-p{victim}.json"
  deadline = time.monotonic() + 300
  while not part.is_file() and time.monotonic() < deadline and procs[victim].poll() is None:
    time.sleep(0.002)
  for p in (procs[victim], procs[1 - victim]):
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
  return store.Store.read_only(out)


@pytest.mark.parametrize("victim, resume_with", [(1, 2), (0, 1)])
def test_embed_killed_mid_run_resumes_with_every_row_once(
  inputs, one_process_store, tmp_path, victim, resume_with
):
  out = tmp_path / "emb"
  st = _killed_embed(inputs, out, victim)
  assert 0 < st.stored_rows < st.num_rows, "the kill came too late to leave an unfinished store"
  _job(resume_with, *_embed_args(inputs, out))
  _assert_same_rows(store.Store.read_only(out), one_process_store)
