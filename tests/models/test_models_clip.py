"""conceptjax.models.clip: loading a tiny saved CLIP, encoders vs transformers, preprocessing vs processor."""

import jax
import numpy as np
import pytest

from conceptjax import parallel
from conceptjax.errors import InputError
from conceptjax.models import clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return clip.load(clip.save_random_clip(tmp_path_factory.mktemp("clip")))


TEXTS = ["a red dog", "cat", "a small blue star on water", ""]


def test_text_encoder_matches_transformers(tiny):
  got = tiny.encode_texts(TEXTS)
  tok = tiny.tokenizer(TEXTS, padding="max_length", max_length=tiny.max_length, return_tensors="np")
  want = np.asarray(tiny.model.get_text_features(tok["input_ids"], tok["attention_mask"], params=tiny.params))
  assert got.shape == (len(TEXTS), tiny.dim) == (4, 16)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert not np.allclose(got[0], got[1])


def test_image_preprocessing_matches_processor(tiny):
  import transformers

  proc = transformers.CLIPImageProcessor.from_pretrained(tiny.name)
  rng = np.random.default_rng(0)
  # smooth images (as photos are) of a non-square size: resize + centre crop both matter
  base = rng.integers(0, 256, (3, 6, 5, 3)).astype(np.float32)
  images = np.asarray(jax.image.resize(base, (3, 48, 40, 3), "linear")).round().astype(np.uint8)
  want = proc(list(images), return_tensors="np")["pixel_values"]
  got = np.asarray(clip.preprocess_images(images, tiny.preprocess))
  assert got.shape == want.shape == (3, 3, 32, 32)
  assert np.abs(got - want).mean() < 0.01
  assert np.abs(got - want).max() < 0.1


def test_image_encoder_matches_transformers_and_any_batch_size(tiny):
  import transformers

  proc = transformers.CLIPImageProcessor.from_pretrained(tiny.name)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (11, 32, 32, 3)).astype(np.uint8)  # already at crop size: no resampling
  want = np.asarray(
    tiny.model.get_image_features(proc(list(images), return_tensors="np")["pixel_values"], params=tiny.params)
  )
  got = tiny.encode_images(images, batch_size=8)  # 8 + 3 rows, padded buckets
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  one = clip.load(tiny.name, mesh=parallel.data_mesh(jax.devices()[:1])).encode_images(images)
  np.testing.assert_allclose(one, got, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_list_of_images_of_different_sizes_keeps_order(tiny):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
  got = tiny.encode_images(images)
  mixed = [
    images[0],
    np.asarray(jax.image.resize(images[1], (40, 36, 3), "linear")).astype(np.uint8),
    images[2],
  ]
  out = tiny.encode_images(mixed)
  np.testing.assert_allclose(out[[0, 2]], got[[0, 2]], atol=1e-5)
  np.testing.assert_allclose(out[1], tiny.encode_images(mixed[1][None])[0], atol=1e-5)


def test_second_call_does_not_recompile(tiny):
  images = np.zeros((5, 32, 32, 3), np.uint8)
  tiny.encode_images(images)
  tiny.encode_texts(["a", "b", "c"])
  sizes = (tiny.image_fn._cache_size(), tiny.text_fn._cache_size())
  tiny.encode_images(images + 1)
  tiny.encode_images(images[:4])  # same bucket
  tiny.encode_texts(["d", "e", "f", "g"])
  assert (tiny.image_fn._cache_size(), tiny.text_fn._cache_size()) == sizes


@pytest.mark.parametrize("name", ["openai/clip-vit-base-patch32", "/no/such/dir", "./missing_clip"])
def test_unloadable_model_is_one_clear_line(name):
  with pytest.raises(InputError) as e:
    clip.load(name)
  msg = str(e.value)
  assert "\n" not in msg and name in msg and "save_pretrained" in msg


def test_missing_tokenizer_is_one_clear_line(tiny, tmp_path):
  import shutil

  d = tmp_path / "notok"
  d.mkdir()
  for f in ("config.json", "flax_model.msgpack"):
    shutil.copy(f"{tiny.name}/{f}", d / f)
  with pytest.raises(InputError, match="tokenizer"):
    clip.load(d)


def test_bad_images_rejected(tiny):
  with pytest.raises(InputError, match="uint8"):
    tiny.encode_images(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(InputError, match="shape"):
    tiny.encode_images(np.zeros((2, 32, 32), np.uint8))
