"""Image sources and batched pipelines: tfds datasets (``tfds.data_source``, no TensorFlow) and image folders.

A *source* is anything with ``len()`` and ``source[i] -> {"image": uint8 [H, W, C], "label": int, ...}``:
a tfds data source, :class:`FolderSource`, or ``conceptjax.data.shapesworld.ShapesWorldSource``. ``batches``
turns rows ``[start, stop)`` of a source into numpy batches through ``grain.MapDataset`` (deterministic,
random access, so a resumed job reads exactly the rows it still needs).

Example::

  src = images.tfds_source("cifar10", "test", data_dir="~/tensorflow_datasets")
  for batch in images.batches(src, 0, len(src), batch_size=256):
    emb = model.encode_images(batch["image"])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from conceptjax.errors import InputError, check

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def tfds_source(
  name: str, split: str, data_dir: str | os.PathLike | None = None, download: bool = False
) -> Any:
  """A random-access tfds data source (``tfds.data_source``; works without TensorFlow).

  The dataset must be prepared in a random-access format (array_record, the default of recent tfds) in
  ``data_dir``; with ``download=True`` tfds may try to fetch and prepare it.

  Raises:
    InputError: one line naming the dataset, split and folder when it cannot be opened.
  """
  import tensorflow_datasets as tfds

  data_dir = None if data_dir is None else os.path.expanduser(os.fspath(data_dir))
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except Exception as e:  # tfds raises many types (DatasetNotFoundError, NotImplementedError, ValueError...)
    reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    try:  # say why in the user's terms: an unknown name or an unprepared dataset, not tfds' format complaint
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception:
      raise InputError(f"unknown tfds dataset {name!r} ({reason})") from None
    if not os.path.isdir(builder.data_path):
      raise InputError(
        f"tfds dataset {name!r} is not prepared in {data_dir or 'the default data folder'} (no "
        f"{builder.data_path}): prepare it with `tfds build {name} --file_format array_record"
        f"{' --data_dir ' + data_dir if data_dir else ''}` on a machine with the data"
      ) from None
    raise InputError(
      f"could not open tfds dataset {name!r} split {split!r} (data_dir={data_dir or 'default'}): {reason}"
    ) from None


def as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] from grey [H, W] / [H, W, 1], grey + alpha [H, W, 2], RGB [H, W, 3] or RGBA [H, W, 4].

  16-bit images (uint16, or int32 with values above 255, as PIL reads 16-bit PNGs) are scaled to 8 bits
  (``round(v / 257)``: 65535 -> 255), never clipped. An alpha channel is composited on white
  (``a * rgb + (1 - a) * 255``): transparent pixels become white whatever colour they hold, as a viewer
  shows the image on a white page.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  check(
    image.ndim == 3 and image.shape[-1] in (1, 2, 3, 4), f"expected an [H, W, C<=4] image, got {image.shape}"
  )
  if image.dtype != np.uint8:
    wide = image.dtype.itemsize > 1 and (image.dtype == np.uint16 or image.max(initial=0) > 255)
    x = image.astype(np.float64)
    image = np.clip(np.rint(x / 257.0) if wide else x, 0, 255).astype(np.uint8)
  if image.shape[-1] in (2, 4):
    alpha = image[..., -1:].astype(np.float64) / 255.0
    colour = image[..., :-1].astype(np.float64)
    image = np.clip(np.rint(alpha * colour + (1.0 - alpha) * 255.0), 0, 255).astype(np.uint8)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image


def pil_to_rgb(im: Any) -> np.ndarray:
  """uint8 [H, W, 3] from a PIL image of any common mode, through :func:`as_rgb` for the numbers.

  16-bit grey (``I;16*`` and ``I``) is scaled, not clipped as PIL's own ``convert("RGB")`` does (which
  makes most 16-bit images white); palette images keep their transparency (composited on white, as RGBA
  and LA are); CMYK, YCbCr and the other modes go through PIL's conversion to RGB.
  """
  mode = im.mode
  if mode.startswith("I;16") or mode == "I":
    return as_rgb(np.asarray(im).astype(np.uint16 if mode.startswith("I;16") else np.int64))
  if mode == "P":
    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
  elif mode == "PA":
    im = im.convert("RGBA")
  elif mode not in ("L", "LA", "RGB", "RGBA"):
    im = im.convert("RGBA" if "A" in mode else "RGB")
  return as_rgb(np.asarray(im))


def resize_like_processor(image: Any, shortest_edge: int, crop: int) -> np.ndarray:
  """PIL resize of the shorter side to ``shortest_edge`` (bicubic) and centre crop to ``crop`` x ``crop``.

  This is what ``CLIPImageProcessor`` does before normalising; images of any size come out the same size,
  so a folder of photos can be batched (the encoder's own resize is then the identity).
  """
  from PIL import Image

  im = image if isinstance(image, Image.Image) else Image.fromarray(as_rgb(image))
  w, h = im.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = shortest_edge, int(shortest_edge * long / short)
  size = (new_short, new_long) if w <= h else (new_long, new_short)
  im = im.resize(size, Image.BICUBIC)
  arr = np.asarray(im.convert("RGB"))
  hh, ww = arr.shape[:2]
  if hh < crop or ww < crop:
    arr = np.pad(arr, ((0, max(crop - hh, 0)), (0, max(crop - ww, 0)), (0, 0)))
    hh, ww = arr.shape[:2]
  top, left = (hh - crop) // 2, (ww - crop) // 2
  return np.ascontiguousarray(arr[top : top + crop, left : left + crop])


class FolderSource:
  """A random-access source over the image files under a folder (searched recursively, sorted by path).

  Labels come from the first-level sub-folder names (sorted; ``class_names``); images directly in the root
  get label -1. Every image is converted to RGB and, when ``size`` is given, resized (shorter side) and
  centre-cropped to ``size`` x ``size`` as the CLIP image processor does, so batches have one shape.
  """

  def __init__(self, root: str | os.PathLike, size: int | None = None):
    self.root = Path(root).expanduser()
    check(self.root.is_dir(), f"image folder not found: {self.root}")
    self.paths = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    check(len(self.paths) > 0, f"image folder {self.root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    tops = sorted(
      {p.relative_to(self.root).parts[0] for p in self.paths if len(p.relative_to(self.root).parts) > 1}
    )
    self.class_names = tops
    index = {n: i for i, n in enumerate(tops)}
    self.labels = [
      index[p.relative_to(self.root).parts[0]] if len(p.relative_to(self.root).parts) > 1 else -1
      for p in self.paths
    ]
    self.size = size

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    path = self.paths[i]
    try:
      with Image.open(path) as im:
        rgb = pil_to_rgb(im)
      image = resize_like_processor(rgb, self.size, self.size) if self.size else rgb
    except (OSError, UnidentifiedImageError, ValueError) as e:
      raise InputError(f"image {path} is unreadable ({e})") from None
    return {"image": image, "label": np.int64(self.labels[i]), "index": np.int64(i)}


def _select(record: dict[str, Any], image_key: str, label_key: str | None) -> dict[str, np.ndarray]:
  out = {"image": as_rgb(record[image_key])}
  out["label"] = np.int64(record[label_key]) if label_key and label_key in record else np.int64(-1)
  return out


def batches(
  source: Any,
  start: int,
  stop: int,
  batch_size: int,
  *,
  image_key: str = "image",
  label_key: str | None = "label",
  num_threads: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
  """Batches of rows ``[start, stop)`` of ``source`` in order, via ``grain.MapDataset`` (``num_threads``
  threads read ahead).

  Yields:
    {"image": uint8 [b, H, W, 3], "label": int64 [b] (-1 where the source has no label)}.
  """
  import grain

  check(
    0 <= start <= stop <= len(source), f"rows [{start}, {stop}) out of range for a source of {len(source)}"
  )
  check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
  probe = source[start] if stop > start else None
  if probe is not None:
    check(image_key in probe, f"source rows have no {image_key!r} field (fields: {sorted(probe)})")
  ds = grain.MapDataset.source(source)[start:stop]
  ds = ds.map(lambda r: _select(r, image_key, label_key)).batch(batch_size)
  # threads read/decode ahead (order kept) while the devices encode the previous batch
  yield from ds.to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch_size)
  )


def embed_to_store(
  encode: Any,
  source: Any,
  directory: str | os.PathLike,
  *,
  chunk_rows: int = 4096,
  batch_size: int = 256,
  meta: dict[str, Any] | None = None,
  image_key: str = "image",
  label_key: str | None = "label",
  progress: bool = True,
  redo: Any = (),
) -> Any:
  """Embeds every image of ``source`` into a resumable chunked store (fields ``embeddings``, ``labels``).

  Args:
    encode: ``images uint8 [b, H, W, 3] -> [b, d]`` (e.g. ``ClipBundle.encode_images``).
    source: random-access image source (module docstring).
    directory: store folder; an unfinished store made with the same settings is resumed.
    chunk_rows: rows per chunk file (the unit of resumption).
    batch_size: rows per encoder call.
    meta: identifies the job (model name, dataset, split...); resuming with other meta is refused.
    redo: numbers of finished chunks to write again (``store.fill``).

  Returns:
    The finished ``conceptjax.data.store.Store``.
  """
  from conceptjax.data import store as store_lib

  st = store_lib.Store.open(directory, num_rows=len(source), chunk_rows=chunk_rows, meta=meta)

  def produce(start: int, stop: int) -> dict[str, np.ndarray]:
    emb, labels = [], []
    for b in batches(source, start, stop, batch_size, image_key=image_key, label_key=label_key):
      emb.append(np.asarray(encode(b["image"]), np.float32))
      labels.append(b["label"])
    return {"embeddings": np.concatenate(emb), "labels": np.concatenate(labels).astype(np.int64)}

  return store_lib.fill(st, produce, progress=progress, desc="embed", redo=redo)
