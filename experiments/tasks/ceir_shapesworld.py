"""Task: CEIR on ShapesWorld with the shipped tiny CLIP; clusters are the shape classes.

Concept lists (``concepts=``): ``'world'`` (default) holds the world's words (every surface form of every
shape, colour, size and background value); ``'shape'`` holds the class attribute's words only, the analogue
of CEIR's per-class concept lists, which describe the classes. Both add distractor words that name nothing in
the world unless ``distractors=False``. The same CLIP serves as teacher (image-text similarities) and backbone
(image features): there is only one ShapesWorld CLIP. Ground truth makes the results checkable:
``attribution_precision_at_3`` is the share of each test image's three most attributed concepts that name one
of its true attributes, and ``acc_by_attribute`` (``_teacher``) scores k-means on the latent (on the raw
teacher similarities) against each attribute, with k = that attribute's number of values: it shows which
attribute a representation clusters by.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import conceptjax
from conceptjax.ceir import clip_teacher_similarities
from conceptjax.data import shapesworld as sw
from conceptjax.errors import check
from experiments.tasks.ceir_common import Split, run_ceir

DISTRACTORS = (
  "dog", "car", "tree", "house", "face", "bicycle", "airplane", "flower", "book", "cat", "wood", "metal",
  "text", "building", "mountain", "snow", "fire", "road", "bird", "fish",
)  # fmt: skip
SHIPPED_CLIP = Path(conceptjax.__file__).parent / "assets" / "shapesworld_clip"


ATTRIBUTES = ("shape", "color", "size", "background")
CONCEPT_LISTS = {"world": ATTRIBUTES, "shape": ("shape",)}


def world_concepts(
  attributes=ATTRIBUTES, distractors: bool = True
) -> tuple[list[str], list[tuple[str, str] | None]]:
  """Concept strings naming ``attributes``' values, then (with ``distractors``) the distractor words; for
  each, the (attribute, value) it names (None for distractors)."""
  concepts, meaning = [], []
  for attr in attributes:
    for value, forms in sw.SYNONYMS[attr].items():
      for form in forms:
        if form not in concepts:
          concepts.append(form)
          meaning.append((attr, value))
  for d in DISTRACTORS if distractors else ():
    concepts.append(d)
    meaning.append(None)
  return concepts, meaning


def true_attributes(samples: sw.Samples, i: int) -> set[tuple[str, str]]:
  """(attribute, value) pairs of image ``i`` (all objects and the background)."""
  n = int(samples.num_objects[i])
  out = {("background", sw.ATTRIBUTES["background"][int(samples.background[i])])}
  for attr in ("shape", "color", "size"):
    out.update((attr, sw.ATTRIBUTES[attr][int(j)]) for j in getattr(samples, attr)[i, :n])
  return out


def run(config, workdir) -> dict:
  from conceptjax.models import clip

  clip_dir = Path(config.clip) if config.clip else SHIPPED_CLIP
  check(
    clip_dir.is_dir(),
    f"ShapesWorld CLIP not found at {clip_dir}: train and ship it with "
    "experiments/configs/shapesworld_clip.py or pass clip=DIR",
  )
  check(
    config.concepts in CONCEPT_LISTS,
    f"concepts must be one of {sorted(CONCEPT_LISTS)}, got {config.concepts!r}",
  )
  model = clip.load(clip_dir)
  concepts, meaning = world_concepts(CONCEPT_LISTS[config.concepts], config.distractors)
  world = sw.WorldConfig(max_objects=config.max_objects, image_size=config.image_size)
  splits = {}
  test_samples = None
  for name, split, num in (
    ("train", "train", config.num_train),
    ("val", "validation", config.num_val),
    ("test", "test", config.num_test),
  ):
    s = sw.generate(world, num, seed=config.seed, split=split)
    p, feats = clip_teacher_similarities(model, s.images, [config.template.format(c) for c in concepts])
    splits[name] = Split(p, feats, s.label)
    if name == "test":
      test_samples = s

  index = {m: [] for m in meaning if m is not None}
  for i, m in enumerate(meaning):
    if m is not None:
      index[m].append(i)

  def truth(i: int) -> set[int]:
    return {j for m in true_attributes(test_samples, i) for j in index.get(m, [])}

  attributes = {a: test_samples.main(a) for a in ATTRIBUTES}
  metrics = run_ceir(
    config,
    workdir,
    concepts,
    splits["train"],
    splits["val"],
    splits["test"],
    truth=truth,
    attributes=attributes,
  )
  metrics["concepts"] = config.concepts
  metrics["clip"] = str(clip_dir)
  metrics["num_clusters"] = int(config.num_clusters)
  metrics["chance_acc"] = float(np.max(np.bincount(splits["test"].labels)) / len(splits["test"].labels))
  return metrics
