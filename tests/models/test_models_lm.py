"""The project's GPT-2 (conceptjax.models.gpt2, run through conceptjax.models.lm) against PyTorch's.

Oracles: the fixtures in tests/models/fixtures (random GPT-2s saved by transformers' PyTorch
``GPT2LMHeadModel`` with the logits it computed; made by make_gpt2_fixture.py) so that parity is checked
where torch is absent, and live PyTorch models where torch is installed.
"""

import functools
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conceptjax.errors import InputError
from conceptjax.models import convert_flax_gpt2, gpt2
from conceptjax.models import lm as lm_lib

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = ["gpt2_tiny", "gpt2_tiny_untied"]


def _reference(name):
  with np.load(FIXTURES / name / "reference.npz") as f:
    return {k: f[k] for k in f.files}


@functools.partial(jax.jit, static_argnums=0)
def _forward(module, params, ids, positions, attention_mask):
  return lm_lib.logits_from_embeds(module, params, lm_lib.embed(params, ids), positions, attention_mask)


def _logits(lm, ids, positions=None, attention_mask=None):
  return np.asarray(_forward(lm.module, lm.params, jnp.asarray(ids, jnp.int32), positions, attention_mask))


def _cached_logits(lm, ids, prefill):
  """Logits of ``ids`` [B, T] computed with the cache: ``prefill`` tokens at once, then one at a time."""
  b, t = ids.shape
  step = jax.jit(lm_lib.step_with_cache, static_argnums=0)
  cache = lm_lib.init_cache(lm.module, b, t)
  out = []
  for start, stop in [(0, prefill), *((i, i + 1) for i in range(prefill, t))]:
    pos = jnp.broadcast_to(jnp.arange(start, stop), (b, stop - start))
    logits, cache = step(lm.module, lm.params, cache, lm_lib.embed(lm.params, ids[:, start:stop]), pos)
    out.append(np.asarray(logits))
  assert int(cache.index) == t
  return np.concatenate(out, axis=1)


def _perturbed_torch_gpt2(seed=0, **kwargs):
  """A random transformers PyTorch GPT2LMHeadModel whose every parameter is moved off its initial value."""
  torch = pytest.importorskip("torch")
  import transformers

  torch.manual_seed(seed)
  cfg = transformers.GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kwargs)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def _torch_logits(model, ids, **kwargs):
  import torch

  with torch.no_grad():
    kwargs = {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in kwargs.items()}
    return model(torch.tensor(np.asarray(ids), dtype=torch.long), **kwargs).logits.numpy()


def _one_line_error(fn, *match):
  with pytest.raises(InputError) as info:
    fn()
  message = str(info.value)
  assert "\n" not in message, message
  for m in match:
    assert m in message, message
  return message


# ---------------------------------------------------------------------------------------------------------
# Parity with the fixtures (no torch needed)


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_pytorch_fixture(name):
  lm = lm_lib.load(FIXTURES / name)
  ref = _reference(name)
  assert lm.tokenizer is None and lm.vocab_size == ref["logits"].shape[-1]
  np.testing.assert_allclose(_logits(lm, ref["ids"]), ref["logits"], atol=1e-5, rtol=0)
  # Left padding: PyTorch given the attention mask and position ids; padded query rows are not compared.
  padded = _logits(lm, ref["padded_ids"], ref["padded_positions"], ref["padded_mask"])
  real = ref["padded_mask"].astype(bool)
  np.testing.assert_allclose(padded[real], ref["padded_logits"][real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_incremental_decoding_with_cache_equals_full_forward(name):
  lm = lm_lib.load(FIXTURES / name)
  ref = _reference(name)
  np.testing.assert_allclose(_cached_logits(lm, ref["ids"], prefill=5), ref["logits"], atol=1e-5, rtol=0)


def test_base_model_naming_and_mask_buffers_load_the_same(tmp_path):
  # The original "gpt2" files use GPT2Model names (no "transformer.") and keep causal-mask buffers.
  tensors = load_file(FIXTURES / "gpt2_tiny" / "model.safetensors")
  renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  for i in range(2):
    renamed[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
    renamed[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
  shutil.copy(FIXTURES / "gpt2_tiny" / "config.json", tmp_path)
  save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
  a, b = lm_lib.load(FIXTURES / "gpt2_tiny"), lm_lib.load(tmp_path)
  assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a.params, b.params)))


def test_save_writes_the_pytorch_files_back(tmp_path):
  # Loading a PyTorch checkpoint and saving it gives back exactly its tensors, under the same names.
  for name in NAMES:
    lm_lib.save(lm_lib.load(FIXTURES / name), tmp_path / name)
    theirs, ours = (
      load_file(FIXTURES / name / "model.safetensors"),
      load_file(tmp_path / name / "model.safetensors"),
    )
    assert sorted(theirs) == sorted(ours)
    for k in theirs:
      np.testing.assert_array_equal(ours[k], theirs[k])
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]


def test_transformers_flax_msgpack_converts_to_the_same_model(tmp_path):
  # flax_model.msgpack written by transformers 4.57.6's FlaxGPT2LMHeadModel from the PyTorch fixture.
  shutil.copy(FIXTURES / "gpt2_tiny" / "config.json", tmp_path)
  shutil.copy(FIXTURES / "gpt2_tiny" / "flax_model.msgpack", tmp_path)
  _one_line_error(lambda: lm_lib.load(tmp_path), "flax_model.msgpack", "convert_flax_gpt2")
  assert convert_flax_gpt2.main([str(tmp_path)]) == 0
  assert not (tmp_path / "flax_model.msgpack").exists()
  ref = _reference("gpt2_tiny")
  np.testing.assert_allclose(_logits(lm_lib.load(tmp_path), ref["ids"]), ref["logits"], atol=1e-5, rtol=0)


def test_shipped_lm_loads_from_safetensors():
  assert not (lm_lib.ASSET_DIR / "flax_model.msgpack").exists()
  lm = lm_lib.load_shipped()
  assert lm.config == gpt2.GPT2Config.from_hf(json.loads((lm_lib.ASSET_DIR / "config.json").read_text()))
  assert lm.tokenizer.eos_token_id == lm.eos_id


def test_bfloat16_compute_stays_close_to_float32():
  ref = _reference("gpt2_tiny")
  lm16 = lm_lib.load(FIXTURES / "gpt2_tiny", dtype=jnp.bfloat16)
  assert jax.tree.leaves(lm16.params)[0].dtype == jnp.float32  # parameters stay float32
  out = _logits(lm16, ref["ids"])
  assert out.dtype == jnp.bfloat16
  scale = np.abs(ref["logits"]).max()
  assert 0 < np.abs(out.astype(np.float32) - ref["logits"]).max() < 0.05 * scale


# ---------------------------------------------------------------------------------------------------------
# Bad input: one line each


def _edited_copy(tmp_path, edit_tensors=None, edit_config=None, name="gpt2_tiny"):
  folder = tmp_path / "ckpt"
  shutil.copytree(FIXTURES / name, folder, ignore=shutil.ignore_patterns("*.msgpack", "*.npz"))
  if edit_tensors is not None:
    tensors = load_file(folder / "model.safetensors")
    edit_tensors(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
  if edit_config is not None:
    config = json.loads((folder / "config.json").read_text())
    edit_config(config)
    (folder / "config.json").write_text(json.dumps(config))
  return folder


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
  folder = _edited_copy(tmp_path, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
  _one_line_error(lambda: lm_lib.load(folder), "1 missing", "transformer.h.1.mlp.c_fc.bias")
  shutil.rmtree(folder)
  folder = _edited_copy(
    tmp_path, lambda t: t.update({"transformer.h.0.attn.q_proj.weight": np.zeros((2, 2))})
  )
  _one_line_error(lambda: lm_lib.load(folder), "1 unexpected", "transformer.h.0.attn.q_proj.weight")
  shutil.rmtree(folder)
  folder = _edited_copy(
    tmp_path, lambda t: t.update({"transformer.wpe.weight": np.zeros((8, 16), np.float32)})
  )
  _one_line_error(
    lambda: lm_lib.load(folder), "wrong shape", "transformer.wpe.weight (8, 16) (expected (16, 16))"
  )
  shutil.rmtree(folder)
  # A config that does not fit the weights: every layer-2 key is missing.
  folder = _edited_copy(tmp_path, edit_config=lambda c: c.update(n_layer=3))
  _one_line_error(lambda: lm_lib.load(folder), "12 missing", "transformer.h.2.ln_1.weight", "8 more")


def test_unknown_architecture_and_missing_pieces(tmp_path):
  folder = _edited_copy(tmp_path, edit_config=lambda c: c.update(model_type="llama"))
  _one_line_error(lambda: lm_lib.load(folder), "model_type 'llama' is not a GPT-2")
  shutil.rmtree(folder)
  folder = _edited_copy(tmp_path, edit_config=lambda c: c.update(activation_function="tanhshrink"))
  _one_line_error(lambda: lm_lib.load(folder), "unknown activation_function 'tanhshrink'")
  shutil.copy(FIXTURES / "gpt2_tiny" / "config.json", folder)
  (folder / "tokenizer.json").write_text("{")
  _one_line_error(lambda: lm_lib.load(folder), "cannot load the tokenizer")
  (folder / "model.safetensors").unlink()
  _one_line_error(lambda: lm_lib.load(folder), "no model.safetensors or pytorch_model.bin")
  (folder / "config.json").unlink()
  _one_line_error(lambda: lm_lib.load(folder), "no config.json")
  (folder / "model.safetensors").write_bytes(b"not a safetensors file")
  (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 8}))
  _one_line_error(lambda: lm_lib.load(folder), "model.safetensors: unreadable checkpoint")
  _one_line_error(lambda: lm_lib.load(tmp_path / "nope"), "language model folder not found", "nope")


def test_hub_ids_offline(tmp_path, monkeypatch):
  # conftest sets HF_HUB_OFFLINE=1: an id absent from the cache fails at once, in one line.
  _one_line_error(
    lambda: lm_lib.load("no-such-org/no-such-model"), "hub unreachable", "no-such-org/no-such-model"
  )
  # An id present in the local hub cache loads offline.
  import huggingface_hub.constants

  commit = "0" * 40
  repo = tmp_path / "models--acme--tiny-gpt2"
  (repo / "refs").mkdir(parents=True)
  (repo / "refs" / "main").write_text(commit)
  shutil.copytree(
    FIXTURES / "gpt2_tiny", repo / "snapshots" / commit, ignore=shutil.ignore_patterns("*.msgpack")
  )
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
  ref = _reference("gpt2_tiny")
  np.testing.assert_allclose(
    _logits(lm_lib.load("acme/tiny-gpt2"), ref["ids"]), ref["logits"], atol=1e-5, rtol=0
  )


def test_pytorch_bin_without_torch_is_one_line(tmp_path, monkeypatch):
  import sys

  folder = _edited_copy(tmp_path)
  (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
  _one_line_error(lambda: lm_lib.load(folder), "pytorch_model.bin needs torch")


# ---------------------------------------------------------------------------------------------------------
# Live PyTorch oracle (skipped without torch)


def test_live_random_pytorch_model_save_pretrained_parity(tmp_path):
  model = _perturbed_torch_gpt2(seed=3, vocab_size=40, n_positions=20, n_embd=24, n_layer=3, n_head=3)
  model.save_pretrained(tmp_path)
  lm = lm_lib.load(tmp_path)
  ids = _reference("gpt2_tiny")["ids"] % 40
  ref = _torch_logits(model, ids)
  np.testing.assert_allclose(_logits(lm, ids), ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(_cached_logits(lm, ids, prefill=1), ref, atol=1e-5, rtol=0)
  # pytorch_model.bin (the older format) holds the same model.
  import torch

  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  shutil.copy(tmp_path / "config.json", bin_dir)
  torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
  np.testing.assert_allclose(_logits(lm_lib.load(bin_dir), ids), ref, atol=1e-5, rtol=0)
  # A sharded safetensors checkpoint (model.safetensors.index.json + shards) holds the same model.
  model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
  np.testing.assert_allclose(_logits(lm_lib.load(tmp_path / "sharded"), ids), ref, atol=1e-5, rtol=0)
  # A bfloat16 checkpoint loads as float32 parameters holding the same values.
  model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  wte = model.transformer.wte.weight.detach().float().numpy()
  np.testing.assert_array_equal(lm_lib.load(tmp_path / "bf16").params["transformer"]["wte"]["embedding"], wte)


@pytest.mark.parametrize("untied", [False, True])
def test_our_save_loads_in_pytorch_from_pretrained(tmp_path, untied):
  pytest.importorskip("torch")
  import transformers

  cfg = gpt2.GPT2Config(
    vocab_size=30, n_positions=12, n_embd=16, n_layer=2, n_head=2, tie_word_embeddings=not untied
  )
  lm = lm_lib.from_config(cfg, jax.random.key(0))
  # Move the biases and layer-norm parameters off their initial zeros / ones.
  leaves, tree = jax.tree.flatten(lm.params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  lm = lm_lib.CausalLM(
    lm.module,
    jax.tree.unflatten(
      tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    ),
    None,
    cfg,
  )
  lm_lib.save(lm, tmp_path)
  model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
  ids = _reference("gpt2_tiny")["ids"][:, :10] % 30
  np.testing.assert_allclose(_torch_logits(model, ids), _logits(lm, ids), atol=1e-5, rtol=0)


def test_shipped_lm_equals_pytorch():
  pytest.importorskip("torch")
  import transformers

  lm = lm_lib.load_shipped()
  model = transformers.GPT2LMHeadModel.from_pretrained(lm_lib.ASSET_DIR).eval()
  ids, _ = lm_lib.encode(lm.tokenizer, ["a small red star on water", "a big blue circle"], 12)
  np.testing.assert_allclose(_logits(lm, ids), _torch_logits(model, ids), atol=1e-5, rtol=0)


def test_save_keeps_the_tokenizer_readable_from_vocab_and_merges(tmp_path):
  """``lm.save`` writes vocab.json + merges.txt beside tokenizer.json; a GPT2TokenizerFast built from those
  two files alone encodes as the shipped one does."""
  import transformers

  lm = lm_lib.load_shipped()
  lm_lib.save(lm, tmp_path / "lm")
  only = tmp_path / "only"
  only.mkdir()
  for name in ("vocab.json", "merges.txt"):
    (only / name).write_bytes((tmp_path / "lm" / name).read_bytes())
  rebuilt = transformers.GPT2TokenizerFast.from_pretrained(str(only))
  text = "a small red star on water, left"
  assert rebuilt(text)["input_ids"] == lm.tokenizer(text)["input_ids"]
