"""Task: CEIR on a real image dataset from tfds (CIFAR10, CIFAR100-20, STL10) with real CLIP models.

Images are embedded once per model and split into resumable stores under ``workdir/embeddings`` (a killed
run resumes where it stopped). Teacher similarities come from the teacher CLIP (image-text cosines with the
concept strings), backbone features from the backbone CLIP's image encoder. The validation split for early
stopping and filter B is the last ``val_fraction`` of the tfds train split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from conceptjax import ceir
from conceptjax.errors import check
from experiments.tasks.ceir_common import Split, run_ceir

# name -> (tfds name, train split, test split, label key, number of classes)
DATASETS = {
  "cifar10": ("cifar10", "train", "test", "label", 10),
  "cifar100_20": ("cifar100", "train", "test", "coarse_label", 20),
  "stl10": ("stl10", "train", "test", "label", 10),
}


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[-80:]


def _embed(
  model, tfds_name: str, split: str, label_key: str, config, workdir: Path
) -> tuple[np.ndarray, np.ndarray]:
  from conceptjax.data import images

  src = images.tfds_source(tfds_name, split, data_dir=config.data_dir or None)
  directory = workdir / "embeddings" / _slug(model.name) / f"{tfds_name}_{split}"
  store = images.embed_to_store(
    model.encode_images,
    src,
    directory,
    chunk_rows=config.chunk_rows,
    batch_size=config.embed_batch,
    meta={"model": model.name, "dataset": tfds_name, "split": split},
    label_key=label_key,
    progress=False,
  )
  return store.read("embeddings"), store.read("labels")


def run(config, workdir) -> dict:
  from conceptjax.models import clip

  workdir = Path(workdir)
  check(config.dataset in DATASETS, f"unknown dataset {config.dataset!r}; known: {sorted(DATASETS)}")
  check(
    bool(config.concepts), "pass concepts=PATH (one concept per line, e.g. Label-free CBM's concept sets)"
  )
  tfds_name, train_split, test_split, label_key, num_classes = DATASETS[config.dataset]
  concepts = ceir.read_concepts(config.concepts)
  teacher = clip.load(config.teacher)
  backbone = teacher if config.backbone == config.teacher else clip.load(config.backbone)
  text = teacher.encode_texts(concepts)

  def split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img, labels = _embed(teacher, tfds_name, name, label_key, config, workdir)
    feats = img if backbone is teacher else _embed(backbone, tfds_name, name, label_key, config, workdir)[0]
    return np.asarray(ceir.teacher_similarities(img, text)), feats, labels

  p_tr, f_tr, y_tr = split(train_split)
  p_te, f_te, y_te = split(test_split)
  n_val = max(int(round(config.val_fraction * len(y_tr))), 1)
  check(len(y_tr) - n_val >= config.batch_size, f"{len(y_tr) - n_val} training rows: fewer than one batch")
  train = Split(p_tr[:-n_val], f_tr[:-n_val], y_tr[:-n_val])
  val = Split(p_tr[-n_val:], f_tr[-n_val:], y_tr[-n_val:])
  test = Split(p_te, f_te, y_te)
  if config.num_clusters <= 0:
    config.num_clusters = num_classes
  metrics = run_ceir(config, workdir, concepts, train, val, test)
  metrics.update(dataset=config.dataset, teacher=teacher.name, backbone=backbone.name)
  return metrics
