"""The CEIR experiment configs run end to end at CI size: ShapesWorld and a tfds dataset on mock data,
both with a tiny random CLIP; saved artifacts agree with the reported metrics; a rerun resumes."""

import numpy as np
import pytest

from conceptjax import ceir, io
from conceptjax.errors import InputError
from experiments import run as runner


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory):
  from conceptjax.models import clip

  return clip.save_random_clip(tmp_path_factory.mktemp("clip"))


KEYS = {"acc", "nmi", "ari", "acc_kmeans_clip", "acc_kmeans_concepts", "protocol", "open_world_top"}


def _check_artifacts(metrics, workdir):
  saved = io.load_npz(workdir / "latent_test.npz")
  s = ceir.cluster_scores(saved["labels"], saved["clusters"])
  assert metrics["acc"] == pytest.approx(s.acc) and metrics["ari"] == pytest.approx(s.ari)
  assert saved["latent"].shape == (metrics["num_test"], metrics.get("latent", saved["latent"].shape[1]))
  assert metrics["num_after_filter_b"] <= metrics["num_after_filter_a"] <= metrics["num_concepts"]
  log = (workdir / "vae" / "vae_log.jsonl").read_text().splitlines()
  assert len(log) == metrics["vae_epochs"]


def test_ceir_synthetic_runlocal_planted_truth(tmp_path):
  config = runner.load_config("experiments/configs/ceir_synthetic.py:runlocal=True")
  metrics = runner.run(config, tmp_path)
  assert KEYS | {"attribution_precision_at_3", "concept_score_precision_at_3"} <= set(metrics)
  assert metrics["filters_exact"]  # filters A and B removed exactly the planted dead and noise concepts
  assert metrics["num_concepts"] - metrics["num_after_filter_b"] == metrics["planted_dead_and_noise"]
  assert metrics["attribution_precision_at_3"] >= 0.8  # top "x" concepts are present attributes
  assert metrics["acc_kmeans_concepts"] >= 0.9  # the planted classes are recoverable from concept scores
  assert metrics["ig_completeness_rel_gap_max"] < 0.02
  _check_artifacts(metrics, tmp_path)


@pytest.mark.slow  # the whole pipeline with CLIP embedding: ~1-3 min
def test_ceir_shapesworld_runlocal(tmp_path, random_clip):
  config = runner.load_config(f"experiments/configs/ceir_shapesworld.py:runlocal=True,clip={random_clip}")
  metrics = runner.run(config, tmp_path)
  assert KEYS | {"attribution_precision_at_3", "concept_score_precision_at_3"} <= set(metrics)
  assert 0.0 <= metrics["attribution_precision_at_3"] <= 1.0 and metrics["protocol"] == "inductive"
  assert metrics["num_test"] == 256 and metrics["num_concepts"] == 56
  for key in ("acc_by_attribute", "acc_by_attribute_teacher"):
    assert set(metrics[key]) == {"shape", "color", "size", "background"}
    assert all(0.0 < v <= 1.0 for v in metrics[key].values())
  assert metrics["acc_by_attribute"]["shape"] == pytest.approx(metrics["acc"])  # same k, same seed
  _check_artifacts(metrics, tmp_path)
  assert io.read_json(tmp_path / "metrics.json")["acc"] == metrics["acc"]


@pytest.mark.slow  # two runs of the pipeline with CLIP embedding: ~1-3 min
def test_ceir_images_on_mock_cifar10_transductive_and_resume(tmp_path, random_clip):
  import tensorflow_datasets as tfds

  concepts = tmp_path / "concepts.txt"
  concepts.write_text("airplane\nwheels\nfeathers\nfur\nwater\nsky\nroad\ngrass\n")
  arg = f"runlocal=True,dataset=cifar10,concepts={concepts},teacher={random_clip},backbone={random_clip}"
  config = runner.load_config(f"experiments/configs/ceir_images.py:{arg},protocol=transductive")
  with tfds.testing.mock_data(num_examples=64):
    metrics = runner.run(config, tmp_path / "w")
    again = runner.run(config, tmp_path / "w")  # embeddings and the VAE are resumed, not recomputed
  assert KEYS <= set(metrics) and metrics["protocol"] == "transductive"
  assert metrics["num_train"] == 64 - round(0.1 * 64) and metrics["num_test"] == 64
  assert metrics["vae_epochs"] == 2 and again["vae_epochs"] == 2
  for key in ("acc", "nmi", "ari", "acc_kmeans_clip"):
    assert again[key] == metrics[key]
  _check_artifacts(metrics, tmp_path / "w")
  stores = sorted(p.name for p in (tmp_path / "w" / "embeddings").glob("*/*"))
  assert stores == ["cifar10_test", "cifar10_train"]
  assert np.isfinite(metrics["vae_final_loss"])


def test_shapesworld_concept_lists(tmp_path):
  from conceptjax.data import shapesworld as sw
  from experiments.tasks import ceir_shapesworld as t

  world, meaning = t.world_concepts()
  assert len(world) == 56 and meaning.count(None) == len(t.DISTRACTORS)
  shape, meaning = t.world_concepts(t.CONCEPT_LISTS["shape"], distractors=False)
  assert sorted(shape) == sorted(f for forms in sw.SYNONYMS["shape"].values() for f in forms)
  assert {m[0] for m in meaning} == {"shape"}
  config = runner.load_config("experiments/configs/ceir_shapesworld.py:concepts='colour'")
  with pytest.raises(InputError, match="concepts must be one of"):
    runner.run(config, tmp_path / "run")


def test_shipped_clip_concept_scores_cluster_by_what_the_list_names():
  """Ground truth behind the ShapesWorld CEIR results: with the shipped CLIP, k-means on the teacher
  similarities of the world's words groups images by background; on the shape words alone, by shape."""
  from conceptjax.data import shapesworld as sw
  from conceptjax.models import clip
  from experiments.tasks import ceir_shapesworld as t
  from experiments.tasks.ceir_common import kmeans_accuracy

  model = clip.load(t.SHIPPED_CLIP)
  s = sw.generate(sw.WorldConfig(max_objects=1, image_size=64), 600, seed=7, split="test")
  for concepts, attr in (("world", "background"), ("shape", "shape")):
    words, _ = t.world_concepts(t.CONCEPT_LISTS[concepts], distractors=False)
    p, _ = ceir.clip_teacher_similarities(model, s.images, words)
    acc = {a: kmeans_accuracy(np.asarray(p), s.main(a), 0) for a in t.ATTRIBUTES}
    assert acc[attr] >= 0.9, (concepts, acc)
    assert all(v < 0.6 for a, v in acc.items() if a not in (attr, "size")), (concepts, acc)


@pytest.mark.slow  # the full ShapesWorld run (9,000 images, 450 VAE epochs): ~2 min
def test_shapesworld_default_run_attributions_name_true_attributes(tmp_path):
  """docs/ceir.md's ShapesWorld CEIR figures, at seed 0 with the shipped CLIP and the issue's concept list:
  the attribution's top 3 concepts are true attributes of the image (precision@3 >= 0.8, measured 0.831;
  with a VAE stopped on the slope of its validation loss, 100 epochs, it was 0.741), 50-step IG is nearly
  complete on the trained VAE (measured 0.44% at worst over 500 images; the issue's 1e-3 check, on a smooth
  encoder, is in test_ceir_attribution), and the raw teacher similarities cluster by background, not shape."""
  config = runner.load_config("experiments/configs/ceir_shapesworld.py")
  metrics = runner.run(config, tmp_path)
  assert metrics["vae_epochs"] == 450
  assert metrics["attribution_precision_at_3"] >= 0.8
  assert metrics["ig_completeness_rel_gap_max"] <= 1e-2
  assert metrics["acc_by_attribute_teacher"]["background"] >= 0.9
  assert metrics["acc_by_attribute_teacher"]["shape"] < 0.6
  _check_artifacts(metrics, tmp_path)
