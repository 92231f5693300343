"""conceptjax.data.images: tfds data_source + grain batches, image folders, resumable embedding."""

import numpy as np
import pytest

from conceptjax.data import images, store
from conceptjax.errors import InputError


def _encode(batch):
  """A stand-in encoder (tests of the pipeline, not of CLIP): per-channel means and the first pixel."""
  x = batch.astype(np.float32)
  return np.concatenate([x.mean(axis=(1, 2)), x[:, 0, 0]], axis=1)


@pytest.fixture
def cifar():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=21):
    yield images.tfds_source("cifar10", "train")


def test_tfds_batches_in_order(cifar):
  assert len(cifar) == 21
  got = list(images.batches(cifar, 3, 20, batch_size=8))
  assert [b["image"].shape[0] for b in got] == [8, 8, 1]
  want = np.stack([cifar[i]["image"] for i in range(3, 20)])
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in got]), want)
  np.testing.assert_array_equal(
    np.concatenate([b["label"] for b in got]), [cifar[i]["label"] for i in range(3, 20)]
  )


def test_embed_to_store_and_resume_identical(cifar, tmp_path):
  full = images.embed_to_store(_encode, cifar, tmp_path / "full", chunk_rows=5, batch_size=4, progress=False)
  want = _encode(np.stack([cifar[i]["image"] for i in range(21)]))
  np.testing.assert_allclose(full.read("embeddings"), want, rtol=1e-6)
  np.testing.assert_array_equal(full.read("labels"), [cifar[i]["label"] for i in range(21)])

  calls = []

  def dying(batch):
    calls.append(len(batch))
    if len(calls) == 5:  # mid-way through the third chunk
      raise RuntimeError("killed")
    return _encode(batch)

  with pytest.raises(RuntimeError):
    images.embed_to_store(dying, cifar, tmp_path / "part", chunk_rows=5, batch_size=4, progress=False)
  assert store.Store.read_only(tmp_path / "part").next_row == 10
  part = images.embed_to_store(_encode, cifar, tmp_path / "part", chunk_rows=5, batch_size=4, progress=False)
  for f in ("embeddings", "labels"):
    np.testing.assert_array_equal(part.read(f), full.read(f))


def test_grey_images_become_rgb():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=3):
    src = images.tfds_source("mnist", "test")
    (batch,) = images.batches(src, 0, 3, 8)
  assert batch["image"].shape == (3, 28, 28, 3)
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])


def test_missing_tfds_dataset_is_one_line(tmp_path):
  with pytest.raises(InputError, match="cifar10") as e:
    images.tfds_source("cifar10", "train", data_dir=tmp_path)
  assert "\n" not in str(e.value)


def _write_folder(root):
  from PIL import Image

  rng = np.random.default_rng(0)
  sizes = {"cat/a.png": (40, 50), "cat/b.jpg": (64, 64), "dog/x/c.png": (30, 20), "loose.png": (33, 35)}
  for rel, (h, w) in sizes.items():
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(p)
  (root / "notes.txt").write_text("not an image")
  return sizes


def test_folder_source_labels_and_processor_resize(tmp_path):
  import transformers
  from PIL import Image

  _write_folder(tmp_path)
  src = images.FolderSource(tmp_path, size=32)
  assert src.class_names == ["cat", "dog"]
  assert [p.relative_to(tmp_path).as_posix() for p in src.paths] == [
    "cat/a.png",
    "cat/b.jpg",
    "dog/x/c.png",
    "loose.png",
  ]
  assert src.labels == [0, 0, 1, -1]
  proc = transformers.CLIPImageProcessor(
    size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_rescale=False, do_normalize=False
  )
  for i, p in enumerate(src.paths):
    rec = src[i]
    assert rec["image"].shape == (32, 32, 3) and rec["image"].dtype == np.uint8
    want = proc(Image.open(p).convert("RGB"), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(rec["image"], want, atol=1)  # the processor's float rounding
  (batch,) = images.batches(src, 0, 4, 8)
  np.testing.assert_array_equal(batch["label"], [0, 0, 1, -1])


def test_bad_folders(tmp_path):
  with pytest.raises(InputError, match="not found"):
    images.FolderSource(tmp_path / "nope")
  with pytest.raises(InputError, match="no images"):
    images.FolderSource(tmp_path)
  (tmp_path / "broken.png").write_bytes(b"not a png")
  with pytest.raises(InputError, match="broken.png"):
    images.FolderSource(tmp_path, size=8)[0]
  with pytest.raises(InputError, match="broken.png"):  # raised in a reader thread, surfaces unchanged
    list(images.batches(images.FolderSource(tmp_path, size=8), 0, 1, 4))
