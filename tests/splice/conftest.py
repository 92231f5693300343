"""A tiny random CLIP saved once for this folder's tests (``conceptjax.models.clip.save_random_clip``)."""

import pytest


@pytest.fixture(scope="package")
def tiny_clip_dir(tmp_path_factory):
  from conceptjax.models import clip

  return clip.save_random_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="package")
def tiny_clip(tiny_clip_dir):
  from conceptjax.models import clip

  return clip.load(tiny_clip_dir)
