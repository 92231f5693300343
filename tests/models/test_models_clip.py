"""conceptjax.models.clip: the project's Flax CLIP against transformers' PyTorch CLIPModel and open_clip
(committed fixtures made by those packages, and live where they are installed), preprocessing against
CLIPImageProcessor, batching, dtypes, and one-line errors."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conceptjax import parallel
from conceptjax.errors import InputError
from conceptjax.models import clip
from conceptjax.models import clip_weights as cw
from conceptjax.models.clip_model import CLIP

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEXTS = ["a red dog", "cat", "a small blue star on water", ""]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return clip.load(clip.save_random_clip(tmp_path_factory.mktemp("clip")))


def _apply(cfg, params, ref, dtype=jnp.float32):
  """Image and text features of the fixture's inputs (images already at the crop size: normalise only)."""
  module = CLIP(cfg, dtype=dtype)
  pixels = clip.preprocess_images(jnp.asarray(ref["images"]), clip.Preprocess.default(32), False)
  img = module.apply({"params": params}, pixels, method=CLIP.encode_image)
  ids, mask = jnp.asarray(ref["ids"]), jnp.asarray(ref["mask"])
  txt = module.apply({"params": params}, ids, mask, method=CLIP.encode_text)
  return np.asarray(img), np.asarray(txt)


def test_matches_transformers_fixture():
  """A transformers CLIPModel (GELU, random config, saved by save_pretrained): features within 1e-5."""
  d = FIXTURES / "clip_hf"
  cfg = cw.config_from_hf(json.loads((d / "config.json").read_text()))
  assert cfg.vision.act == cfg.text.act == "gelu" and cfg.text.pool == "eos"
  ref = np.load(d / "reference.npz")
  img, txt = _apply(cfg, cw.from_hf_state(cw.read_state(d / "model.safetensors"), cfg), ref)
  np.testing.assert_allclose(img, ref["image_features"], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(txt, ref["text_features"], atol=1e-5, rtol=1e-5)


def test_matches_open_clip_fixture_through_load(tiny):
  """An open_clip CLIP (QuickGELU, argmax pooling) loaded from its directory: features within 1e-5."""
  d = FIXTURES / "clip_open_clip"
  bundle = clip.load(d, tokenizer=tiny.name, mesh=parallel.data_mesh(jax.devices()[:1]))
  assert bundle.config.text.pool == "argmax" and bundle.config.vision.act == "quick_gelu"
  ref = np.load(d / "reference.npz")
  got = bundle.encode_images(ref["images"])
  np.testing.assert_allclose(got, ref["image_features"], atol=1e-5, rtol=1e-5)
  _, txt = _apply(bundle.config, jax.device_get(bundle.params), ref)
  np.testing.assert_allclose(txt, ref["text_features"], atol=1e-5, rtol=1e-5)


def test_open_clip_state_dict_file_needs_an_arch(tiny, tmp_path):
  f = FIXTURES / "clip_open_clip" / "open_clip_model.safetensors"
  with pytest.raises(InputError, match="arch="):
    clip.load(f)
  with pytest.raises(InputError, match="unknown open_clip arch 'ViT-Q-1'"):
    clip.load(f, arch="ViT-Q-1")
  with pytest.raises(InputError, match=r"missing key\(s\).*unexpected key\(s\)|does not fit"):
    clip.load(f, arch="ViT-B-32", tokenizer=tiny.name)  # the tiny model is not a ViT-B-32: keys differ


@pytest.mark.parametrize("act, legacy_eos", [("quick_gelu", False), ("gelu", True)])
def test_live_parity_with_transformers_torch(tmp_path, act, legacy_eos):
  """Live oracle: our save -> transformers' PyTorch CLIPModel.from_pretrained gives the same features,
  for both activations and for the legacy ``eos_token_id == 2`` (argmax) pooling."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  d = clip.save_random_clip(tmp_path / "m", act=act, seed=3)
  if legacy_eos:
    config = json.loads((d / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 2
    (d / "config.json").write_text(json.dumps(config))
  bundle = clip.load(d)
  assert bundle.config.text.pool == ("argmax" if legacy_eos else "eos")
  model = transformers.CLIPModel.from_pretrained(str(d)).eval()
  tok = bundle.tokenizer(TEXTS, padding="max_length", max_length=bundle.max_length, return_tensors="pt")
  images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
  pixels = clip.preprocess_images(images, bundle.preprocess)
  with torch.no_grad():
    txt = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    img = model.get_image_features(pixel_values=torch.tensor(np.asarray(pixels)))
  txt, img = (getattr(x, "pooler_output", x).numpy() for x in (txt, img))
  np.testing.assert_allclose(bundle.encode_texts(TEXTS), txt, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(bundle.encode_images(images), img, atol=1e-5, rtol=1e-5)


def test_live_parity_with_torch_pickle(tmp_path):
  """A ``pytorch_model.bin`` (torch pickle) loads to the same parameters as the safetensors file."""
  torch = pytest.importorskip("torch")
  src = FIXTURES / "clip_hf"
  d = tmp_path / "bin"
  d.mkdir()
  shutil.copy(src / "config.json", d)
  state = cw.read_state(src / "model.safetensors")
  torch.save({k: torch.tensor(v) for k, v in state.items()}, d / "pytorch_model.bin")
  cfg = cw.config_from_hf(json.loads((d / "config.json").read_text()))
  got = cw.from_hf_state(cw.read_state(d / "pytorch_model.bin"), cfg)
  want = cw.from_hf_state(state, cfg)
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_live_parity_with_open_clip(tiny, tmp_path):
  """Live oracle: a fresh random open_clip model (exact GELU) loaded through its state dict."""
  torch = pytest.importorskip("torch")
  open_clip = pytest.importorskip("open_clip")
  model_cfg = json.loads((FIXTURES / "clip_open_clip" / "open_clip_config.json").read_text())["model_cfg"]
  model_cfg = dict(model_cfg, quick_gelu=False)
  model = open_clip.model.CLIP(
    model_cfg["embed_dim"],
    open_clip.model.CLIPVisionCfg(**model_cfg["vision_cfg"]),
    open_clip.model.CLIPTextCfg(**model_cfg["text_cfg"]),
  ).eval()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  cfg = cw.config_from_open_clip(model_cfg)
  ref = dict(np.load(FIXTURES / "clip_open_clip" / "reference.npz"))
  pixels = np.asarray(clip.preprocess_images(ref["images"], clip.Preprocess.default(32)))
  with torch.no_grad():
    img = model.encode_image(torch.tensor(pixels)).numpy()
    txt = model.encode_text(torch.tensor(ref["ids"])).numpy()
  got_img, got_txt = _apply(cfg, cw.from_open_clip_state(state, cfg), ref)
  np.testing.assert_allclose(got_img, img, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got_txt, txt, atol=1e-5, rtol=1e-5)


def test_builtin_open_clip_archs_have_the_published_sizes():
  """Parameter counts of the plain-ViT open_clip architectures (published: B/32 151.3 M, B/16 149.6 M,
  L/14 427.6 M)."""
  from conceptjax.models.clip_model import param_shapes

  for arch, millions in (("ViT-B-32", 151.28), ("ViT-B-16", 149.62), ("ViT-L-14", 427.62)):
    cfg = cw.config_from_open_clip(cw.OPEN_CLIP_ARCHS[arch])
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(cfg)))
    assert n / 1e6 == pytest.approx(millions, abs=0.01), arch


def test_shipped_clip_round_trips_through_save(tmp_path):
  """The shipped ShapesWorld CLIP, saved again, is read back to identical parameters (transformers names)."""
  from conceptjax.models import clip_train as ct

  one = parallel.data_mesh(jax.devices()[:1])
  shipped = clip.load(ct.SHIPPED_DIR, mesh=one)
  again = clip.load(clip.save(tmp_path / "s", shipped.config, shipped.params, shipped.tokenizer), mesh=one)
  assert again.config == shipped.config
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.params), jax.device_get(shipped.params))


def test_legacy_flax_names_load_as_transformers_names(tmp_path):
  """A checkpoint in transformers' old Flax naming (kernel/scale/embedding, HWIO conv) reads the same."""
  src = FIXTURES / "clip_hf"
  cfg = cw.config_from_hf(json.loads((src / "config.json").read_text()))
  torch_names = cw.read_state(src / "model.safetensors")
  flax_names = {}
  for k, a in torch_names.items():
    if k.endswith("patch_embedding.weight"):
      flax_names[k.replace(".weight", ".kernel")] = a.transpose(2, 3, 1, 0)
    elif "norm" in k and k.endswith(".weight"):
      flax_names[k.replace(".weight", ".scale")] = a
    elif "embedding" in k and k.endswith(".weight"):
      flax_names[k.replace(".weight", ".embedding")] = a
    elif k.endswith(".weight"):
      flax_names[k.replace(".weight", ".kernel")] = a.T
    else:
      flax_names[k] = a
  want = cw.from_hf_state(torch_names, cfg)
  jax.tree.map(np.testing.assert_array_equal, cw.from_hf_state(flax_names, cfg), want)


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


def test_any_batch_size_and_one_device_agree(tiny):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (11, 32, 32, 3)).astype(np.uint8)
  module = CLIP(tiny.config)
  pixels = clip.preprocess_images(images, tiny.preprocess, False)
  want = np.asarray(module.apply({"params": tiny.params}, pixels, method=CLIP.encode_image))
  got = tiny.encode_images(images, batch_size=8)  # 8 + 3 rows, padded buckets, 8 devices
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  one = clip.load(tiny.name, mesh=parallel.data_mesh(jax.devices()[:1])).encode_images(images)
  np.testing.assert_allclose(one, got, atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_stays_close(tiny):
  """dtype=bfloat16 computes in bf16 (params stay float32): features keep cosine > 0.99 with float32."""
  half = clip.load(tiny.name, dtype=jnp.bfloat16)
  assert half.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(half.params))
  images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
  pairs = [(half.encode_images(images), tiny.encode_images(images))]
  pairs.append((half.encode_texts(TEXTS), tiny.encode_texts(TEXTS)))
  for a, b in pairs:
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)


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
    clip.load(name)  # the hub id fails at once: the tests run with HF_HUB_OFFLINE=1
  msg = str(e.value)
  assert "\n" not in msg and name in msg
  assert ("offline runs need a local folder" in msg) if name.startswith("openai") else ("not found" in msg)


def _copy(tiny, tmp_path, files=("config.json", "model.safetensors")):
  d = tmp_path / "copy"
  d.mkdir()
  for f in files:
    shutil.copy(Path(tiny.name) / f, d / f)
  return d


def test_missing_tokenizer_is_one_clear_line(tiny, tmp_path):
  with pytest.raises(InputError, match="no tokenizer files"):
    clip.load(_copy(tiny, tmp_path))


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda s: s.pop("logit_scale"), r"1 missing key\(s\) \(logit_scale\)"),
    (lambda s: s.update(extra_head=np.zeros(3, np.float32)), r"1 unexpected key\(s\) \(extra_head\)"),
    (
      lambda s: s.update({"text_projection.weight": np.zeros((16, 31), np.float32)}),
      r"text_projection.weight has shape \(16, 31\), the config needs \(32, 16\)",
    ),
  ],
)
def test_checkpoint_that_does_not_fit_is_named(tiny, tmp_path, edit, message):
  from safetensors.numpy import save_file

  files = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json")
  d = _copy(tiny, tmp_path, files)
  state = cw.read_state(d / "model.safetensors")
  edit(state)
  save_file(state, str(d / "model.safetensors"))
  with pytest.raises(InputError, match=message) as e:
    clip.load(d)
  assert "\n" not in str(e.value) and "model.safetensors" in str(e.value)


def test_unknown_architecture_and_corrupt_files(tiny, tmp_path):
  d = _copy(tiny, tmp_path)
  config = json.loads((d / "config.json").read_text())
  (d / "config.json").write_text(json.dumps(dict(config, model_type="bert", architectures=["BertModel"])))
  with pytest.raises(InputError, match="model_type 'bert' .*BertModel.* is not a CLIP"):
    clip.load(d)
  (d / "config.json").write_text("{not json")
  with pytest.raises(InputError, match="config.json: unreadable"):
    clip.load(d)
  (d / "config.json").write_text(json.dumps(config))
  (d / "model.safetensors").write_bytes(b"\x00" * 10)
  with pytest.raises(InputError, match="model.safetensors: unreadable checkpoint"):
    clip.load(d)


def test_bad_images_rejected(tiny):
  with pytest.raises(InputError, match="uint8"):
    tiny.encode_images(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(InputError, match="shape"):
    tiny.encode_images(np.zeros((2, 32, 32), np.uint8))
  with pytest.raises(InputError, match="bfloat16"):
    clip.load(tiny.name, dtype=jnp.float16)
