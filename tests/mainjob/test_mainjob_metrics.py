"""Concept recovery metrics, worst-group accuracy and the distractor vocabulary of the main job."""

import numpy as np

from experiments.tasks import shapesworld_splice as t

MEANING = [("shape", "star"), ("color", "red"), ("background", "water"), None, ("background", "water"), None]
# concepts: 0 star, 1 red, 2 water, 3 dog, 4 sea (water), 5 car


def test_concept_recovery_matches_a_hand_computed_example():
  # Row 0: active by weight: dog .5, star .4, sea .3, car .1 -> top 3 = dog, star, sea -> 2/3 true.
  #   truth {star, red, water, small}: named star, water -> recall 2/4.
  # Row 1: one active concept (red) -> precision 1/1; truth {circle, red, grass} -> recall 1/3.
  # Row 2: nothing active -> precision 0, recall 0.
  indices = np.array([[5, 1, 4, 3, 0], [1, -1, -1, -1, -1], [2, -1, -1, -1, -1]])
  values = np.array([[0.1, 0.0, 0.3, 0.5, 0.4], [0.2, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]])
  truths = [
    {("shape", "star"), ("color", "red"), ("background", "water"), ("size", "small")},
    {("shape", "circle"), ("color", "red"), ("background", "grass")},
    {("shape", "star"), ("background", "water")},
  ]
  rec = t.concept_recovery(indices, values, MEANING, truths, k=3)
  np.testing.assert_allclose(rec.precision, [2 / 3, 1.0, 0.0])
  np.testing.assert_allclose(rec.recall, [2 / 4, 1 / 3, 0.0])
  np.testing.assert_array_equal(rec.l0, [4, 1, 0])
  np.testing.assert_array_equal(rec.hits, [2, 1, 0])
  np.testing.assert_array_equal(rec.attribute_recall["shape"], [1, 0, 0])
  np.testing.assert_array_equal(rec.attribute_recall["color"], [0, 1, 0])
  np.testing.assert_array_equal(rec.attribute_recall["background"], [1, 0, 0])
  np.testing.assert_array_equal(rec.attribute_recall["size"], [0, 0, 0])


def test_worst_group():
  pred = np.array([1, 1, 0, 0, 1, 0])
  labels = np.array([1, 0, 0, 0, 1, 1])
  groups = np.array([3, 3, 5, 5, 7, 7])
  worst, acc = t.worst_group(pred, labels, groups)
  assert acc == {3: 0.5, 5: 1.0, 7: 0.5}
  assert worst == 0.5


def test_vocabulary_names_every_attribute_value_and_clean_distractors():
  from conceptjax.data import shapesworld as sw

  concepts, meaning = t.world_concepts()
  for attr in ("shape", "color", "size", "background"):
    for value, forms in sw.SYNONYMS[attr].items():
      for form in forms:
        assert meaning[concepts.index(form)] == (attr, value)
  words = t.read_distractors()
  assert 100 <= len(words) <= 300 and len(set(words)) == len(words)
  assert t.check_distractors(words) == []
  assert t.check_distractors(["bright", "sandwich", "dog"]) == ["bright", "sandwich"]
  assert set(t.background_concepts(concepts, meaning)) == {
    f for forms in sw.SYNONYMS["background"].values() for f in forms
  }


def test_meaning_groups_pool_synonyms_and_keep_distractors_apart():
  from conceptjax import splice

  groups, keys = t.meaning_groups(MEANING)
  assert len(keys) == 5 and groups[2] == groups[4] and len({groups[3], groups[5], groups[0]}) == 3
  assert keys[groups[4]] == ("background", "water") and keys[groups[3]] == ("distractor", 3)
  indices = np.array([[2, 4, -1], [0, 4, 3], [1, -1, -1]])
  values = np.array([[0.2, 0.3, 0.0], [0.5, 0.1, 0.4], [0.7, 0.0, 0.0]], np.float32)
  pooled = t.group_codes(indices, groups)
  assert pooled[0, 2] == -1 and pooled[0, 0] == pooled[0, 1] == groups[2]
  hist = splice.class_histograms(pooled, values, np.array([0, 0, 1]), 2, len(keys))
  # Class 0 (rows 0 and 1): water named by "water" and "sea" adds up: (0.2 + 0.3 + 0.1) / 2 images.
  np.testing.assert_allclose(hist.mean_weight[0, groups[2]], 0.3, rtol=1e-6)
  np.testing.assert_allclose(hist.mean_weight[1, groups[1]], 0.7, rtol=1e-6)
