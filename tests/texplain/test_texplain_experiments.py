"""TExplain experiments: the shipped LM's training config and the ShapesWorld study (helpers, runlocal)."""

import json
import re
import types

import numpy as np
import pytest
import scipy.stats

from conceptjax.data import shapesworld as sw
from conceptjax.models import lm as lm_lib
from experiments import run as runner
from experiments.tasks import texplain_shapesworld as task


@pytest.mark.slow
def test_lm_config_runlocal_trains_and_saves_a_loadable_lm(tmp_path):
  metrics = runner.run(runner.load_config("experiments/configs/texplain_lm.py:runlocal=True"), tmp_path)
  lm = lm_lib.load(metrics["saved_to"])
  assert metrics["saved_to"].startswith(str(tmp_path))  # runlocal never overwrites the shipped model
  # 30 steps from a uniform start (ln V): the loss must have dropped.
  assert metrics["val_loss"] < np.log(lm.vocab_size) - 0.5
  assert metrics["val_loss_with_keywords"] <= metrics["val_loss"] + 0.5


def test_shipped_lm_loads_and_knows_the_captions():
  lm = lm_lib.load_shipped()
  training = json.loads((lm_lib.ASSET_DIR / "training.json").read_text())
  assert training["val_loss"] < 2.0  # far under ln(vocab) ~ 6.2: it has learned the grammar
  assert training["val_loss_with_keywords"] < training["val_loss"]  # and it reads a keyword prefix
  ids, mask = lm_lib.encode(lm.tokenizer, ["a small red star on water"], 16)
  assert lm.tokenizer.decode(ids[0, 1:7]).strip() == "a small red star on water"


def test_worlds_plant_the_correlation_and_the_neutral_world_does_not():
  w = task.worlds(types.SimpleNamespace(image_size=16, p_correlated=0.9))
  corr = sw.generate(w["correlated"], 2048, seed=0)
  neutral = sw.generate(w["neutral"], 2048, seed=0)
  water = sw.ATTRIBUTES["background"].index("water")
  star = corr.label == task.STAR
  # Binomial 99.9% bands around the planted (0.9, 0.1) and the neutral 1/7.
  assert abs((corr.background[star] == water).mean() - 0.9) < 0.04
  assert abs((corr.background[~star] == water).mean() - 0.1) < 0.04
  assert abs((neutral.background == water).mean() - 1 / 7) < 0.03
  assert set(np.unique(neutral.background)) == set(range(7))


@pytest.mark.parametrize("fill", ["random", "grey"])
def test_mitigation_replaces_only_the_background_of_the_chosen_share(fill):
  s = sw.generate(
    task.worlds(types.SimpleNamespace(image_size=16, p_correlated=0.95))["neutral"], 400, seed=1
  )
  plain = task.images(s)
  masked = task.images(s, mask_share=0.5, fill=fill, seed=3)
  np.testing.assert_array_equal(plain, s.images / np.float32(255))
  changed = (masked != plain).any(-1)  # [N, H, W]
  obj = ~s.background_mask
  assert not changed[obj].any()  # object pixels are never touched
  hidden = changed.any((1, 2))
  assert 0.4 < hidden.mean() < 0.6  # about mask_share of the images (400 draws)
  if fill == "grey":
    assert np.all(masked[hidden][s.background_mask[hidden]] == 0.5)
  else:  # a random texture: on most hidden images most background pixels change
    share = changed[hidden].sum((1, 2)) / s.background_mask[hidden].sum((1, 2))
    assert np.median(share) > 0.5


def test_spurious_test_is_fisher_over_image_majorities_against_hypergeometric():
  rng = np.random.default_rng(0)
  hits_c = rng.random((30, 5)) < 0.7
  hits_u = rng.random((40, 5)) < 0.2
  out = task.spurious_test(hits_c, hits_u)
  a, b = int((hits_c.sum(1) >= 3).sum()), int((hits_u.sum(1) >= 3).sum())  # majority of 5 = 3 or more
  assert out["fisher_table"] == [[a, 30 - a], [b, 40 - b]]
  # One-sided Fisher p = P(X >= a), X hypergeometric: 70 images, a + b saying the word, 30 drawn.
  assert out["p_value"] == pytest.approx(scipy.stats.hypergeom.sf(a - 1, 70, a + b, 30), rel=1e-9)


@pytest.mark.slow  # about 50 s of CPU (five compilations: classifier, translator step, sampler, ...)
def test_texplain_shapesworld_runlocal(tmp_path):
  metrics = runner.run(
    runner.load_config("experiments/configs/texplain_shapesworld.py:runlocal=True"), tmp_path
  )
  for key in (
    "spurious_freq_correlated",
    "spurious_freq_clean",
    "p_value",
    "worst_group_before",
    "worst_group_after",
    "mean_acc_before",
    "mean_acc_after",
    "mean_acc_balanced_before",
    "water_share_explained_correlated",
  ):
    assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
  for name in ("correlated", "clean"):
    sentences = json.loads((tmp_path / f"sentences_{name}.json").read_text())
    assert len(sentences) == metrics[f"num_explained_{name}"]
    assert all(len(row) == metrics["sentences_per_image"] for row in sentences)
    assert (tmp_path / f"top_words_{name}.png").read_bytes()[:4] == b"\x89PNG"
  # The freqs are the share of sentences naming water in the written sentences.
  sentences = json.loads((tmp_path / "sentences_correlated.json").read_text())
  named = [bool({"water", "sea"} & set(re.findall("[a-z]+", s.lower()))) for row in sentences for s in row]
  assert metrics["spurious_freq_correlated"] == pytest.approx(np.mean(named))
  groups = json.loads((tmp_path / "groups.json").read_text())
  assert metrics["worst_group_after"] == min(groups["mitigated"]["balanced"].values())
