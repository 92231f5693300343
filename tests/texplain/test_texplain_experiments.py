"""Runlocal runs of the TExplain experiments (the shipped LM's training config and the ShapesWorld study)."""

import json

import numpy as np
import pytest

from conceptjax.models import lm as lm_lib
from experiments import run as runner


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
  ):
    assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
  sentences = json.loads((tmp_path / "sentences_correlated.json").read_text())
  assert len(sentences) == metrics["num_explained"] and len(sentences[0]) == metrics["sentences_per_image"]
  assert (tmp_path / "top_words_clean.png").read_bytes()[:4] == b"\x89PNG"
