"""The CLI refuses wrong inputs and fails in one line: provenance, locks, damaged chunk files, failing writes,
Ctrl-C, and a table of bad arguments (each case: argv, exit status, a fragment of the one stderr line).

Everything runs in-process (``cli.main`` / ``experiments.run.main``) on the tiny random CLIP of
``tests/splice/conftest.py``, so the whole file takes seconds.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conceptjax import cli, io
from conceptjax.data import store
from experiments import run as runner

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ["a red dog on grass", "a blue cat on water", "a dog and a cat", "red star", "water and grass"]


def _images(root, seed, classes=("cat", "dog")):
  from PIL import Image

  rng = np.random.default_rng(seed)
  for cls in classes:
    (root / cls).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
  return root


@pytest.fixture(scope="module")
def work(tiny_clip_dir, tmp_path_factory):
  """vocab, two embedding stores of other images (emb, emb2), codes of emb, and an unlabelled store."""
  tmp = tmp_path_factory.mktemp("fail")
  (tmp / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
  assert cli.main(["vocab", "--captions", str(tmp / "captions.txt"), "--out", str(tmp / "vocab.txt")]) == 0
  m = ["--model", str(tiny_clip_dir), "--no-progress", "--chunk-rows", "2"]
  for name, seed in (("emb", 0), ("emb2", 1)):
    assert (
      cli.main(["embed", *m, "--folder", str(_images(tmp / f"img{seed}", seed)), "--out", str(tmp / name)])
      == 0
    )
  flat = tmp / "flat"
  shutil.copytree(tmp / "img0" / "cat", flat)  # images outside class sub-folders: label -1
  assert cli.main(["embed", *m, "--folder", str(flat), "--out", str(tmp / "unlabelled")]) == 0
  assert cli.main(_decompose(tiny_clip_dir, tmp, "emb", "codes")) == 0
  return tmp


def _decompose(model_dir, tmp, emb, out, *extra):
  return [
    "decompose", "--model", str(model_dir), "--vocab", str(tmp / "vocab.txt"), "--vocabulary-size", "0",
    "--embeddings", str(tmp / emb), "--out", str(tmp / out), "--cache-dir", str(tmp / "cache"),
    "--l1-penalty", "0.05", "--no-progress", *extra,
  ]  # fmt: skip


@pytest.fixture(scope="module")
def other_clip_dir(tmp_path_factory):
  """Another random CLIP of the same width (another seed): embeddings of one fit the other's shapes."""
  from conceptjax.models import clip

  return clip.save_random_clip(tmp_path_factory.mktemp("other_clip"), seed=1)


def _fails(capsys, argv, code, fragment, main=cli.main):
  capsys.readouterr()
  assert main(argv) == code
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and fragment in err, err
  return err


# -- provenance ---------------------------------------------------------------------------------------------
def test_decompose_refuses_embeddings_of_another_model(work, other_clip_dir, tmp_path, capsys):
  argv = _decompose(other_clip_dir, work, "emb", "x")
  err = _fails(capsys, argv, 2, f"model mismatch: embeddings in {work / 'emb'} were made with model ")
  assert f"--model {other_clip_dir} is model " in err and "--allow-mismatch" in err
  assert not (work / "x" / "manifest.json").exists()
  assert cli.main([*argv, "--allow-mismatch"]) == 0  # the user's override: a one-line warning
  assert "warning: model mismatch" in capsys.readouterr().err
  # embeddings of the right model, but the image mean from another model's store or mean file
  other = ["--model", str(other_clip_dir), "--folder", str(work / "img0"), "--no-progress"]
  assert cli.main(["embed", *other, "--out", str(tmp_path / "other_emb")]) == 0
  argv = _decompose(other_clip_dir, tmp_path, "other_emb", "y")
  argv[argv.index("--vocab") + 1] = str(work / "vocab.txt")
  _fails(capsys, [*argv, "--reference", str(work / "emb")], 2, f"embeddings in {work / 'emb'} were made")
  _fails(capsys, [*argv, "--image-mean", str(work / "codes" / "image_mean.npz")], 2, "the image mean")


def test_store_of_an_older_version_is_used_with_a_warning(work, tiny_clip_dir, tmp_path, capsys):
  old = tmp_path / "old"
  shutil.copytree(work / "emb", old)
  manifest = io.read_json(old / "manifest.json")
  del manifest["meta"]["model_fingerprint"]
  for c in manifest["chunks"]:
    del c["sha256"]
  io.write_json(old / "manifest.json", manifest)
  capsys.readouterr()
  argv = _decompose(tiny_clip_dir, work, "emb", "unused")
  argv[argv.index("--embeddings") + 1], argv[argv.index("--out") + 1] = str(old), str(tmp_path / "c")
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  assert f"warning: embeddings in {old} record no model fingerprint" in err, err
  assert store.Store.read_only(tmp_path / "c").meta["input_fingerprint"] == store.Store.read_only(
    work / "emb"
  ).fingerprint()  # the fingerprint of unrecorded chunks is computed from their arrays: the same


def test_zeroshot_refuses_codes_of_another_store(work, tiny_clip_dir, capsys):
  argv = ["zeroshot", "--model", str(tiny_clip_dir), "--embeddings", str(work / "emb2")]
  argv += ["--codes", str(work / "codes"), "--cache-dir", str(work / "cache")]
  _fails(
    capsys, argv, 2, f"embedding store mismatch: codes in {work / 'codes'} were made with embedding store"
  )
  assert cli.main([*argv, "--allow-mismatch"]) == 0


def test_zeroshot_refuses_embeddings_of_another_model(work, other_clip_dir, capsys):
  argv = ["zeroshot", "--model", str(other_clip_dir), "--embeddings", str(work / "emb")]
  _fails(capsys, [*argv, "--codes", str(work / "codes")], 2, "model mismatch")


def test_concepts_refuses_an_edited_concept_list(work, tmp_path, capsys):
  codes = tmp_path / "codes"
  shutil.copytree(work / "codes", codes)
  lines = (codes / "concepts.txt").read_text().splitlines()
  (codes / "concepts.txt").write_text("\n".join(lines[::-1]) + "\n")
  _fails(capsys, ["concepts", "--codes", str(codes), "--permutations", "5"], 2, "vocabulary mismatch")


def test_codes_record_what_made_them(work, tiny_clip):
  from conceptjax import provenance, splice

  meta = store.Store.read_only(work / "codes").meta
  emb = store.Store.read_only(work / "emb")
  assert meta["model_fingerprint"] == provenance.params_fingerprint(tiny_clip.params)
  assert emb.meta["model_fingerprint"] == meta["model_fingerprint"]
  assert meta["input_fingerprint"] == emb.fingerprint()
  concepts = splice.read_vocabulary(work / "vocab.txt", 0)
  assert meta["concepts"] == provenance.concepts_fingerprint(concepts)


def test_params_fingerprint_is_content_not_layout():
  from conceptjax.provenance import params_fingerprint

  a = {"x": np.arange(3, dtype=np.float32), "y": {"w": np.ones((2, 2), np.float32)}}
  b = {"y": {"w": np.ones((2, 2), np.float32)}, "x": np.arange(3, dtype=np.float32)}  # other insertion order
  assert params_fingerprint(a) == params_fingerprint(b)
  for changed in (
    {**a, "x": np.array([0, 1, 3], np.float32)},  # one value
    {**a, "x": np.arange(3, dtype=np.float64)},  # dtype
    {**a, "y": {"w": np.ones((4, 1), np.float32)}},  # shape, same bytes
    {"z": a["x"], "y": a["y"]},  # name
  ):
    assert params_fingerprint(changed) != params_fingerprint(a)


# -- one writer per output ----------------------------------------------------------------------------------
_HOLDER = """
import sys, time
from conceptjax import io
with io.output_lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(120)
"""


def test_second_writer_fails_at_once_and_a_dead_holders_lock_is_taken_over(
  work, tiny_clip_dir, tmp_path, capsys
):
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLDER, str(out)], env=env, stdout=subprocess.PIPE, text=True
  )
  try:
    assert proc.stdout.readline().strip() == "locked"
    argv = ["embed", "--model", str(tiny_clip_dir), "--folder", str(work / "img0"), "--out", str(out)]
    t0 = time.perf_counter()
    _fails(capsys, [*argv, "--no-progress"], 2, f"is being written by another process (PID {proc.pid}")
    assert time.perf_counter() - t0 < 30  # at once: no wait for the holder
    assert not (out / "manifest.json").exists()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert (out / io.LOCK_FILE).read_text().strip() == str(proc.pid)  # the dead holder's lock file remains
  assert cli.main([*argv, "--no-progress"]) == 0  # and is taken over
  np.testing.assert_array_equal(
    store.Store.read_only(out).read("embeddings"), store.Store.read_only(work / "emb").read("embeddings")
  )


def test_experiment_workdir_is_locked(tmp_path):
  from conceptjax.errors import InputError
  from experiments.configs import shapesworld_shape_probe

  with io.output_lock(tmp_path), pytest.raises(InputError, match=f"PID {os.getpid()}"):
    runner.run(shapesworld_shape_probe.get_config("seed=0"), tmp_path)


# -- damaged chunk files ------------------------------------------------------------------------------------
DAMAGE = {
  "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
  "zero-byte": lambda p: p.write_bytes(b""),
  "missing": lambda p: p.unlink(),
  "garbage": lambda p: p.write_bytes(b"not an npz file at all" * 10),
  "another chunk's": lambda p: shutil.copy(p.with_name("chunk-000001.npz"), p),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_chunk_names_the_file_and_redo_chunk_repairs_it(
  damage, work, tiny_clip_dir, tmp_path, capsys
):
  emb, codes = tmp_path / "emb", tmp_path / "codes"
  shutil.copytree(work / "emb", emb)
  shutil.copytree(work / "codes", codes)
  for folder in (emb, codes):
    DAMAGE[damage](folder / "chunk-000000.npz")
  fragment = "chunk-000000.npz"
  tail = "--redo-chunk 0, or delete the file and re-run it"
  model = ["--model", str(tiny_clip_dir)]
  cache = ["--cache-dir", str(work / "cache")]
  decompose = ["decompose", *model, "--vocab", str(work / "vocab.txt"), "--embeddings", str(emb), *cache]
  for argv in (
    [*decompose, "--out", str(tmp_path / "c2"), "--no-progress"],
    [
      "zeroshot",
      *model,
      "--embeddings",
      str(work / "emb"),
      "--codes",
      str(codes),
      *cache,
      "--allow-mismatch",
    ],
    ["concepts", "--codes", str(codes), "--permutations", "5"],
  ):
    err = _fails(capsys, argv, 2, fragment)
    assert tail in err, err
  embed = ["embed", *model, "--folder", str(work / "img0"), "--out", str(emb), "--chunk-rows", "2"]
  assert cli.main([*embed, "--no-progress", *([] if damage == "missing" else ["--redo-chunk", "0"])]) == 0
  want = store.Store.read_only(work / "emb")
  assert store.Store.read_only(emb).manifest == want.manifest
  np.testing.assert_array_equal(store.Store.read_only(emb).read("embeddings"), want.read("embeddings"))


# -- failing writes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "err, fragment",
  [
    (errno.ENOSPC, "No space left on device"),
    (errno.EROFS, "Read-only file system"),
    (errno.EACCES, "Permission denied"),
  ],
)
def test_failing_write_is_one_line_and_resumable(
  err, fragment, work, tiny_clip_dir, tmp_path, capsys, monkeypatch
):
  out = tmp_path / "out"
  argv = ["embed", "--model", str(tiny_clip_dir), "--folder", str(work / "img0"), "--out", str(out)]
  argv += ["--chunk-rows", "2", "--no-progress"]
  real, calls = io.save_npz, []

  def failing(path, **arrays):
    calls.append(path)
    if len(calls) == 2:  # the second chunk
      raise OSError(err, os.strerror(err), str(path))
    real(path, **arrays)

  monkeypatch.setattr(io, "save_npz", failing)
  _fails(capsys, argv, 1, f"chunk-000001.npz: {fragment}")
  monkeypatch.setattr(io, "save_npz", real)
  assert store.Store.read_only(out).next_row == 2  # the first chunk is kept
  assert cli.main(argv) == 0
  np.testing.assert_array_equal(
    store.Store.read_only(out).read("embeddings"), store.Store.read_only(work / "emb").read("embeddings")
  )


def test_ctrl_c_is_one_line_saying_the_run_resumes(work, tiny_clip_dir, tmp_path, capsys, monkeypatch):
  from conceptjax.data import images

  def interrupted(*a, **k):
    raise KeyboardInterrupt

  monkeypatch.setattr(images, "batches", interrupted)
  argv = [
    "embed",
    "--model",
    str(tiny_clip_dir),
    "--folder",
    str(work / "img0"),
    "--out",
    str(tmp_path / "o"),
  ]
  _fails(
    capsys, [*argv, "--no-progress"], 130, "interrupted: finished chunks are kept: re-run the same command"
  )


# -- files --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_umask_permissions(umask, tmp_path):
  old = os.umask(umask)
  try:
    io.write_text(tmp_path / "a.txt", "x")
    open(tmp_path / "b.txt", "w").close()  # what a plain open gives: the oracle
  finally:
    os.umask(old)
  assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777
  assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temp_files_are_removed_on_resume(work, tiny_clip_dir, tmp_path):
  out = tmp_path / "out"
  shutil.copytree(work / "emb", out)
  stale = [out / ".chunk-000001.npz.k1ll3d.tmp", out / ".manifest.json.abc.tmp"]
  for p in stale:
    p.write_bytes(b"half")
  argv = ["embed", "--model", str(tiny_clip_dir), "--folder", str(work / "img0"), "--out", str(out)]
  assert cli.main([*argv, "--chunk-rows", "2", "--no-progress"]) == 0
  assert not any(p.exists() for p in stale)


def test_vocabulary_with_a_byte_order_mark(tmp_path):
  from conceptjax import splice

  (tmp_path / "v.txt").write_bytes("\ufeffdog\ncat\n".encode())
  assert splice.read_vocabulary(tmp_path / "v.txt", 0) == ["dog", "cat"]
  (tmp_path / "c.txt").write_bytes("\ufeffdog dog cat\n".encode())
  assert splice.build_vocabulary(splice.read_captions([tmp_path / "c.txt"])) == ["cat", "dog"]


# -- the table of bad arguments -----------------------------------------------------------------------------
def _table(w, clip_dir):
  """(name, argv, exit status, fragment of the error line); ``w`` is the module's work folder."""
  model = ["--model", str(clip_dir)]
  dec = ["decompose", *model, "--vocab", str(w / "vocab.txt"), "--embeddings", str(w / "emb")]
  dec += ["--out", str(w / "t-out"), "--cache-dir", str(w / "cache"), "--no-progress"]
  embed = ["embed", *model, "--folder", str(w / "img0"), "--no-progress"]
  zs = ["zeroshot", *model, "--cache-dir", str(w / "cache")]
  vocab = ["vocab", "--captions", str(w / "captions.txt"), "--out", str(w / "t-vocab.txt")]
  main = ["main", "--runlocal"]
  config = "experiments/configs/shapesworld_splice.py"
  return [
    ("unknown command", ["frobnicate"], 2, "unknown command 'frobnicate'"),
    ("negative --limit", [*embed, "--out", str(w / "t-e"), "--limit", "-1"], 2, "--limit must be >= 0"),
    (
      "zero --batch-size",
      [*embed, "--out", str(w / "t-e"), "--batch-size", "0"],
      2,
      "--batch-size must be >= 1",
    ),
    ("negative --top", [*dec, "--top", "-1"], 2, "--top must be >= 0"),
    ("negative --max-size", [*vocab, "--max-size", "-3"], 2, "--max-size must be >= 0"),
    ("--min-count filters all", [*vocab, "--min-count", "99"], 2, "no word occurs --min-count 99 times"),
    ("negative --l1-penalty", [*dec, "--l1-penalty", "-1"], 2, "--l1-penalty must be >= 0"),
    ("nan --l1-penalty", [*dec, "--l1-penalty", "nan"], 2, "--l1-penalty must be finite"),
    ("zero --tol", [*dec, "--tol", "0"], 2, "--tol must be > 0"),
    ("zero --target-l0", [*dec, "--target-l0", "0"], 2, "--target-l0 must be >= 1"),
    ("negative --redo-chunk", [*dec, "--redo-chunk", "-2"], 2, "--redo-chunk must be >= 0"),
    ("--redo-chunk past the end", [*dec, "--redo-chunk", "9"], 2, "--redo-chunk 9: "),
    ("negative concepts --top", ["concepts", "--codes", str(w / "codes"), "--top", "-2"], 2, "--top must be"),
    (
      "zero --permutations",
      ["concepts", "--codes", str(w / "codes"), "--permutations", "0"],
      2,
      "must be >= 1",
    ),
    ("missing vocabulary", [*dec[:4], str(w / "none.txt"), *dec[5:]], 2, "vocabulary file not found"),
    ("missing store", [*dec[:6], str(w / "none"), *dec[7:]], 2, "no store in"),
    (
      "missing image folder",
      ["embed", *model, "--folder", str(w / "none"), "--out", str(w / "t")],
      2,
      "not found",
    ),
    (
      "unlabelled store",
      [*zs, "--embeddings", str(w / "unlabelled"), "--vocab", str(w / "vocab.txt"), "--classes", "a,b"],
      2,
      "2 unlabelled rows",
    ),
    (
      "no class names",
      [*zs, "--embeddings", str(w / "unlabelled"), "--vocab", str(w / "vocab.txt")],
      2,
      "records no class names",
    ),
    (
      "template without {}",
      [*zs, "--embeddings", str(w / "emb"), "--vocab", str(w / "vocab.txt"), "--template", "a photo"],
      2,
      "must contain exactly one {}",
    ),
    ("neither --codes nor --vocab", [*zs, "--embeddings", str(w / "emb")], 2, "give --codes"),
    (
      "unknown tfds dataset",
      ["embed", *model, "--tfds", "no_such_set", "--out", str(w / "t-t")],
      2,
      "unknown tfds dataset 'no_such_set'",
    ),
    (
      "unprepared tfds dataset",
      ["embed", *model, "--tfds", "mnist", "--data-dir", str(w / "tfds"), "--out", str(w / "t-t")],
      2,
      "is not prepared in",
    ),
    ("--out is a file", [*embed, "--out", str(w / "vocab.txt")], 1, "it exists and is a file"),
    ("--out inside a file", [*embed, "--out", str(w / "vocab.txt" / "x")], 1, "Not a directory"),
    (
      "zeroshot --out is a folder",
      [*zs, "--embeddings", str(w / "emb"), "--codes", str(w / "codes"), "--out", str(w / "emb")],
      1,
      "Is a directory",
    ),
    ("main --clip missing", [*main, "--clip", str(w / "none")], 2, f"--clip {w / 'none'}: not a folder"),
    (
      "main into another config's workdir",
      [*main, "--workdir", str(w / "t-other")],
      2,
      "holds a run of another config",
    ),
    ("main into a garbage config.json", [*main, "--workdir", str(w / "t-garbage")], 2, "is not a config"),
    ("config raises", ["--config", str(w / "raises.py")], 2, "failed: ZeroDivisionError"),
    (
      "correlation out of range",
      ["--config", f"{config}:correlation=1.5,runlocal=True", "--workdir", str(w / "t-corr")],
      2,
      "correlation is a probability in [0, 1], got 1.5",
    ),
    (
      "negative l1_penalty",
      ["--config", f"{config}:l1_penalty=-1.0,runlocal=True", "--workdir", str(w / "t-l1")],
      2,
      "l1_penalty must be a finite number >= 0",
    ),
  ]


def test_bad_input_table(work, tiny_clip_dir, capsys, monkeypatch, request):
  """Each case: its exit status and one stderr line holding the fragment (-v prints the outcomes)."""
  monkeypatch.chdir(ROOT)  # experiments.run resolves config paths from the repository root
  (work / "t-other").mkdir(exist_ok=True)
  io.write_text(work / "t-other" / "config.json", json.dumps({"task": "ceir_synthetic", "seed": 3}))
  (work / "t-garbage").mkdir(exist_ok=True)
  (work / "t-garbage" / "config.json").write_bytes(b"\x00\xffnot json")
  (work / "raises.py").write_text("def get_config(arg):\n  return 1 / 0\n")
  rows, bad = [], []
  for name, argv, code, fragment in _table(work, tiny_clip_dir):
    main = runner.main if argv[0] == "--config" else cli.main
    capsys.readouterr()
    t0 = time.perf_counter()
    try:
      got = main(argv)
    except SystemExit as e:  # argparse's usage errors
      got = e.code
    except Exception as e:  # noqa: BLE001 (a traceback is a failing case, reported with the others)
      got = f"traceback {type(e).__name__}"
    err = capsys.readouterr().err.strip()
    rows.append(f"{name} -> exit {got} ({time.perf_counter() - t0:.1f} s): {err}")
    if got != code or len(err.splitlines()) != 1 or fragment not in err:
      bad.append(rows[-1])
  with capsys.disabled():
    if request.config.getoption("verbose") > 0:
      print("\n" + "\n".join(rows))
  assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_sigint_of_a_real_process_then_resume_is_identical(work, tiny_clip_dir, tmp_path):
  """Ctrl-C (SIGINT) of a `conceptjax embed` process: exit 130 with one line; the re-run's store equals an
  uninterrupted one, file by file."""
  out = tmp_path / "out"
  argv = [sys.executable, "-m", "conceptjax.cli", "embed", "--model", str(tiny_clip_dir), "--no-progress"]
  argv += ["--folder", str(work / "img0"), "--out", str(out), "--chunk-rows", "2"]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while not (out / io.LOCK_FILE).exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  lines = [s for s in err.strip().splitlines() if not s.startswith(("WARNING", "I0000", "W0000"))]
  if proc.returncode == 0:  # finished before the signal arrived: nothing to check about the interruption
    pytest.skip("the run finished before SIGINT")
  assert proc.returncode == 130 and len(lines) == 1, err
  assert "interrupted: finished chunks are kept" in lines[0], err
  assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
  for f in sorted(p.name for p in (work / "emb").glob("chunk-*.npz")) + ["manifest.json"]:
    if f == "manifest.json":
      assert (out / f).read_text() == (work / "emb" / f).read_text()
    else:
      a, b = io.load_npz(out / f), io.load_npz(work / "emb" / f)
      assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
