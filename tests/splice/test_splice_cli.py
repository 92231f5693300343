"""The SpLiCE CLI end to end on a tiny random CLIP: vocab, embed (folder, tfds mock), decompose, zeroshot,
concepts; --help; bad inputs give one line and exit status 2."""

import json
import warnings

import numpy as np
import pytest

from conceptjax import cli, splice
from conceptjax.data import store

CAPTIONS = ["a red dog on grass", "a blue cat on water", "a dog and a cat", "red star", "water and grass"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  from PIL import Image

  root = tmp_path_factory.mktemp("imgs")
  rng = np.random.default_rng(0)
  for cls, base in (("cat", 40), ("dog", 200)):
    (root / cls).mkdir()
    for i in range(3):
      img = np.clip(base + rng.normal(0, 30, (36 + 4 * i, 40, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(img).save(root / cls / f"{i}.png")
  return root


@pytest.fixture(scope="module")
def pipeline(tiny_clip_dir, folder, tmp_path_factory):
  """vocab -> embed -> decompose, run once for the module's tests."""
  tmp = tmp_path_factory.mktemp("cli")
  (tmp / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
  assert cli.main(["vocab", "--captions", str(tmp / "captions.txt"), "--out", str(tmp / "vocab.txt")]) == 0
  model = ["--model", str(tiny_clip_dir)]
  assert cli.main(["embed", *model, "--folder", str(folder), "--out", str(tmp / "emb"), "--no-progress"]) == 0
  args = ["decompose", *model, "--vocab", str(tmp / "vocab.txt"), "--vocabulary-size", "0", "--no-progress"]
  args += ["--embeddings", str(tmp / "emb"), "--out", str(tmp / "codes"), "--cache-dir", str(tmp / "cache")]
  assert cli.main([*args, "--l1-penalty", "0.05"]) == 0
  return tmp


def test_vocab_command(pipeline):
  words = splice.read_vocabulary(pipeline / "vocab.txt", 0)
  assert words[-1] == "a" and set(words) == {w for c in CAPTIONS for w in c.split()}


def test_embed_command_matches_the_encoder(pipeline, tiny_clip, folder):
  from conceptjax.data import images

  st = store.Store.read_only(pipeline / "emb")
  assert st.complete and st.meta["class_names"] == ["cat", "dog"]
  np.testing.assert_array_equal(st.read("labels"), [0, 0, 0, 1, 1, 1])
  src = images.FolderSource(folder, size=32)
  want = tiny_clip.encode_images(np.stack([src[i]["image"] for i in range(len(src))]))
  np.testing.assert_allclose(st.read("embeddings"), want, atol=1e-5)


def test_embed_tfds_resumes_and_limits(tiny_clip_dir, tmp_path):
  import tensorflow_datasets as tfds

  args = ["embed", "--model", str(tiny_clip_dir), "--tfds", "cifar10", "--split", "train", "--no-progress"]
  args += ["--limit", "10", "--chunk-rows", "4", "--out", str(tmp_path / "e")]
  with tfds.testing.mock_data(num_examples=16):
    assert cli.main(args) == 0
    src = tfds.data_source("cifar10", split="train")
    labels = [src[i]["label"] for i in range(10)]
    before = (tmp_path / "e" / "manifest.json").read_text()
    assert cli.main(args) == 0  # finished: a re-run resumes and has nothing to do
  st = store.Store.read_only(tmp_path / "e")
  assert st.num_rows == 10 and len(st.manifest["chunks"]) == 3
  np.testing.assert_array_equal(st.read("labels"), labels)
  assert (tmp_path / "e" / "manifest.json").read_text() == before


def test_decompose_outputs(pipeline):
  codes = store.Store.read_only(pipeline / "codes")
  idx, val = codes.read_sparse()
  assert idx.shape[0] == 6 and (val >= 0).all()
  np.testing.assert_array_equal(codes.read("l0"), (val > 0).sum(1))
  np.testing.assert_allclose(codes.read("l1_penalty"), 0.05)
  assert idx.shape[1] == max(1, codes.read("l0").max())  # codes are stored only as wide as needed
  concepts = (pipeline / "codes" / "concepts.txt").read_text().split("\n")[:-1]
  assert concepts == splice.read_vocabulary(pipeline / "vocab.txt", 0)
  listing = (pipeline / "codes" / "top_concepts.tsv").read_text().splitlines()
  assert len(listing) == 7 and listing[1].startswith("0\t0\t")
  best = concepts[idx[0, np.argmax(val[0])]]
  assert listing[1].split("\t")[3].startswith(f"{best} (")
  assert len(list((pipeline / "cache").glob("dictionary-*.npz"))) == 1


def test_decompose_max_active_keeps_the_largest_weights(pipeline, tiny_clip_dir, tmp_path):
  full_idx, full_val = store.Store.read_only(pipeline / "codes").read_sparse()
  k = int((full_val > 0).sum(1).max()) - 1
  assert k >= 1
  args = ["decompose", "--model", str(tiny_clip_dir), "--vocab", str(pipeline / "vocab.txt"), "--no-progress"]
  args += ["--vocabulary-size", "0", "--embeddings", str(pipeline / "emb"), "--out", str(tmp_path / "codes")]
  args += ["--cache-dir", str(pipeline / "cache"), "--l1-penalty", "0.05", "--max-active", str(k)]
  with warnings.catch_warnings():
    warnings.simplefilter("error", UserWarning)  # truncation was asked for: no warning per chunk
    assert cli.main(args) == 0
  codes = store.Store.read_only(tmp_path / "codes")
  idx, val = codes.read_sparse()
  assert idx.shape[1] == k
  np.testing.assert_array_equal(codes.read("l0"), (full_val > 0).sum(1))  # the full count, not k
  np.testing.assert_array_equal(idx, full_idx[:, :k])
  np.testing.assert_allclose(val, full_val[:, :k], rtol=1e-5, atol=1e-7)


def test_decompose_into_another_jobs_folder_is_refused_untouched(pipeline, tiny_clip_dir, tmp_path, capsys):
  vocab = tmp_path / "other_vocab.txt"
  vocab.write_text("red\nblue\ngreen\n")
  before = {f: (pipeline / "codes" / f).read_bytes() for f in ("concepts.txt", "image_mean.npz")}
  args = ["decompose", "--model", str(tiny_clip_dir), "--vocab", str(vocab), "--no-progress"]
  args += [
    "--embeddings",
    str(pipeline / "emb"),
    "--out",
    str(pipeline / "codes"),
    "--cache-dir",
    str(tmp_path),
  ]
  capsys.readouterr()
  assert cli.main([*args, "--l1-penalty", "0.05"]) == 2
  assert len(capsys.readouterr().err.strip().splitlines()) == 1
  assert {f: (pipeline / "codes" / f).read_bytes() for f in before} == before


def test_zeroshot_command(pipeline, tiny_clip, capsys):
  capsys.readouterr()
  args = [
    "zeroshot",
    "--model",
    tiny_clip.name,
    "--embeddings",
    str(pipeline / "emb"),
    "--classes",
    "cat,dog",
  ]
  assert cli.main([*args, "--codes", str(pipeline / "codes"), "--cache-dir", str(pipeline / "cache")]) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  emb = store.Store.read_only(pipeline / "emb").read("embeddings")
  text = tiny_clip.encode_texts(["a photo of a cat", "a photo of a dog"])
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  dense = np.argmax(unit(emb) @ unit(text).T, axis=1)
  assert metrics["dense_accuracy"] == pytest.approx(np.mean(dense == [0, 0, 0, 1, 1, 1]))
  assert 0 <= metrics["sparse_accuracy"] <= 1 and metrics["mean_l0"] > 0 and metrics["rows"] == 6
  # intervention: zero the most used concept, recompose, re-classify; checked against a numpy recomposition
  codes = store.Store.read_only(pipeline / "codes")
  idx, val = codes.read_sparse()
  concepts = (pipeline / "codes" / "concepts.txt").read_text().split("\n")[:-1]
  top = int(np.bincount(idx[idx >= 0]).argmax())
  assert (
    cli.main(
      [
        *args,
        "--codes",
        str(pipeline / "codes"),
        "--cache-dir",
        str(pipeline / "cache"),
        "--remove",
        concepts[top],
      ]
    )
    == 0
  )
  after = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  dictionary = splice.load_dictionary(next((pipeline / "cache").glob("dictionary-*.npz")))
  mean = splice.load_mean(pipeline / "codes" / "image_mean.npz")
  w = np.zeros((6, len(concepts)))
  for r, j in zip(*np.nonzero(idx >= 0), strict=True):
    w[r, idx[r, j]] = val[r, j]
  w[:, top] = 0
  z = unit(unit(w @ dictionary.matrix) + mean)
  want = np.mean(np.argmax(z @ unit(text).T, axis=1) == [0, 0, 0, 1, 1, 1])
  assert after["removed"] == [concepts[top]] and after["intervened_accuracy"] == pytest.approx(want)


def test_concepts_command(pipeline, capsys):
  capsys.readouterr()
  out = pipeline / "stats.json"
  assert (
    cli.main(["concepts", "--codes", str(pipeline / "codes"), "--permutations", "20", "--out", str(out)]) == 0
  )
  text = capsys.readouterr().out
  assert "== cat (3 images)" in text and "== dog (3 images)" in text
  report = json.loads(out.read_text())
  codes = store.Store.read_only(pipeline / "codes")
  idx, val = codes.read_sparse()
  concepts = (pipeline / "codes" / "concepts.txt").read_text().split("\n")[:-1]
  hist = splice.class_histograms(idx, val, codes.read("labels"), 2, len(concepts))
  for k, cls in enumerate(report["classes"]):
    for name, weight in cls["top_mean_weight"]:
      assert weight == pytest.approx(hist.mean_weight[k, concepts.index(name)], abs=1e-6)
    assert all(1 / 21 - 1e-9 <= s["p_value"] <= 1 for s in cls["separating"])


@pytest.mark.parametrize("command", ["embed", "decompose", "zeroshot", "concepts", "vocab"])
def test_help(command, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([command, "--help"])
  assert e.value.code == 0
  assert "usage: conceptjax " + command in capsys.readouterr().out


def test_bad_inputs_are_one_line(pipeline, tiny_clip_dir, tmp_path, capsys):
  base = ["decompose", "--model", str(tiny_clip_dir), "--embeddings", str(pipeline / "emb"), "--no-progress"]
  base += ["--cache-dir", str(pipeline / "cache")]

  def fails(args, match):
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err

  fails(
    [*base, "--vocab", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o1")],
    "vocabulary file not found",
  )
  (tmp_path / "latin1.txt").write_bytes(b"dog\ncaf\xe9\n")
  fails([*base, "--vocab", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "o2")], "not UTF-8 (line 2")
  nan = store.Store.open(tmp_path / "nan", num_rows=2, chunk_rows=2)
  nan.write_chunk(0, {"embeddings": np.array([[1.0] * 16, [np.nan] * 16], np.float32), "labels": np.zeros(2)})
  args = ["decompose", "--model", str(tiny_clip_dir), "--vocab", str(pipeline / "vocab.txt"), "--no-progress"]
  args += ["--embeddings", str(tmp_path / "nan"), "--out", str(tmp_path / "o3"), "--cache-dir", str(tmp_path)]
  fails(args, "row 1 holds NaN")
  fails(
    ["embed", "--model", str(tmp_path / "nomodel"), "--folder", str(tmp_path), "--out", str(tmp_path / "e")],
    "CLIP model folder not found",
  )


def test_decompose_straight_from_images(pipeline, tiny_clip_dir, folder, capsys):
  out = pipeline / "from_images"
  args = ["decompose", "--model", str(tiny_clip_dir), "--vocab", str(pipeline / "vocab.txt"), "--no-progress"]
  args += ["--vocabulary-size", "0", "--images", str(folder), "--out", str(out), "--l1-penalty", "0.05"]
  assert (
    cli.main(
      [*args, "--cache-dir", str(pipeline / "cache"), "--image-mean", str(pipeline / "codes/image_mean.npz")]
    )
    == 0
  )
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["rows"] == 6
  a, b = store.Store.read_only(out / "embeddings"), store.Store.read_only(pipeline / "emb")
  np.testing.assert_allclose(a.read("embeddings"), b.read("embeddings"), atol=1e-6)
  for x, y in zip(
    store.Store.read_only(out).read_sparse(),
    store.Store.read_only(pipeline / "codes").read_sparse(),
    strict=True,
  ):
    np.testing.assert_allclose(x, y, atol=1e-5)
