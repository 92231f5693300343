"""Checkpoints in and out of the project's CLIP: explicit name maps, converted with safetensors and numpy.

Two external formats are read:

* **transformers' CLIPModel** (``config.json`` + ``model.safetensors``, or ``pytorch_model.bin`` where torch
  is installed): OpenAI's ViT-B/32, B/16, L/14, L/14-336 and LAION's OpenCLIP models published in HF naming.
  Older exports of transformers' Flax CLIP (``flax_model.msgpack`` or safetensors with Flax names) are
  recognised by their names and converted as well.
* **open_clip** state dicts (``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin`` beside an
  ``open_clip_config.json``, or a bare state-dict file plus an architecture name such as ``ViT-B-32``).

Each format has one map from external names to the parameter tree of ``clip_model.CLIP``, with the
transform each tensor needs (Linear weights are transposed, convolution kernels go from OIHW to HWIO,
open_clip's fused q/k/v projection is split). Every expected key must be present with the expected shape;
missing, unexpected and mismatched keys are named in a one-line ``InputError``. ``to_hf_state`` is the
inverse map, so the project's models are saved in transformers' format and load in its PyTorch classes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from conceptjax.errors import InputError
from conceptjax.models import hf
from conceptjax.models.clip_model import ClipConfig, TextConfig, VisionConfig, param_shapes

__all__ = [
  "OPEN_CLIP_ARCHS",
  "config_from_hf",
  "config_from_open_clip",
  "config_to_hf",
  "from_hf_state",
  "from_open_clip_state",
  "read_state",
  "to_hf_state",
]

# open_clip's model configs for the plain-ViT CLIPs (hyper-parameters of the published architectures).
OPEN_CLIP_ARCHS: dict[str, dict[str, Any]] = {
  "ViT-B-32": {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
  },
  "ViT-B-16": {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
  },
  "ViT-L-14": {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
  },
  "ViT-L-14-336": {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
  },
}

# Buffers some exports carry that are not parameters (position ids, the causal mask).
_BUFFERS = ("position_ids", "attn_mask")

Transform = Callable[[np.ndarray], np.ndarray]
_COPY: Transform = lambda a: a  # noqa: E731
_LINEAR: Transform = lambda a: a.T  # torch Linear (out, in) -> Dense (in, out); its own inverse  # noqa: E731
_CONV: Transform = lambda a: a.transpose(2, 3, 1, 0)  # torch OIHW -> flax HWIO  # noqa: E731
_CONV_BACK: Transform = lambda a: a.transpose(3, 2, 0, 1)  # noqa: E731


# ----------------------------------------------------------------------------------------------------------
# Configs


def config_from_hf(d: dict[str, Any], source: str = "config.json") -> ClipConfig:
  """The ``ClipConfig`` of a transformers ``CLIPConfig`` dict (``config.json``), with its defaults."""
  kind = d.get("model_type")
  if kind != "clip":
    archs = ", ".join(d.get("architectures") or []) or "none"
    raise InputError(
      f"{source}: model_type {kind!r} (architectures: {archs}) is not a CLIP; expected model_type 'clip'"
    )
  t = d.get("text_config") or d.get("text_config_dict") or {}
  v = d.get("vision_config") or d.get("vision_config_dict") or {}
  eos = int(t.get("eos_token_id", 49407))
  try:
    return ClipConfig(
      vision=VisionConfig(
        image_size=int(v.get("image_size", 224)),
        patch_size=int(v.get("patch_size", 32)),
        width=int(v.get("hidden_size", 768)),
        layers=int(v.get("num_hidden_layers", 12)),
        heads=int(v.get("num_attention_heads", 12)),
        mlp_dim=int(v.get("intermediate_size", 3072)),
        act=str(v.get("hidden_act", "quick_gelu")),
        eps=float(v.get("layer_norm_eps", 1e-5)),
      ),
      text=TextConfig(
        vocab_size=int(t.get("vocab_size", 49408)),
        context_length=int(t.get("max_position_embeddings", 77)),
        width=int(t.get("hidden_size", 512)),
        layers=int(t.get("num_hidden_layers", 12)),
        heads=int(t.get("num_attention_heads", 8)),
        mlp_dim=int(t.get("intermediate_size", 2048)),
        act=str(t.get("hidden_act", "quick_gelu")),
        eps=float(t.get("layer_norm_eps", 1e-5)),
        eos_id=eos,
        pool="argmax" if eos == 2 else "eos",  # transformers' legacy rule for OpenAI's old configs
      ),
      embed_dim=int(d.get("projection_dim", 512)),
    )
  except ValueError as e:
    raise InputError(f"{source}: {e}") from None


def config_to_hf(cfg: ClipConfig, *, bos_id: int | None = None, pad_id: int | None = None) -> dict[str, Any]:
  """A transformers ``CLIPConfig`` dict for ``cfg`` (what ``config.json`` holds)."""
  v, t = cfg.vision, cfg.text
  tower = lambda c: {  # noqa: E731
    "hidden_size": c.width,
    "intermediate_size": c.mlp_dim,
    "num_hidden_layers": c.layers,
    "num_attention_heads": c.heads,
    "hidden_act": c.act,
    "layer_norm_eps": c.eps,
    "attention_dropout": 0.0,
    "projection_dim": cfg.embed_dim,
  }
  eos = 2 if t.pool == "argmax" else t.eos_id
  text = dict(tower(t), model_type="clip_text_model", vocab_size=t.vocab_size,
              max_position_embeddings=t.context_length, eos_token_id=eos)  # fmt: skip
  if bos_id is not None:
    text["bos_token_id"] = bos_id
  if pad_id is not None:
    text["pad_token_id"] = pad_id
  vision = dict(tower(v), model_type="clip_vision_model", image_size=v.image_size, patch_size=v.patch_size,
                num_channels=3)  # fmt: skip
  return {
    "architectures": ["CLIPModel"],
    "model_type": "clip",
    "projection_dim": cfg.embed_dim,
    "logit_scale_init_value": 2.6592,
    "text_config": text,
    "vision_config": vision,
  }


def config_from_open_clip(model_cfg: dict[str, Any], source: str = "open_clip config") -> ClipConfig:
  """The ``ClipConfig`` of an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
  v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
  unsupported = [k for k in ("timm_model_name", "hf_model_name") if v.get(k) or t.get(k)]
  if unsupported or isinstance(v.get("layers"), list | tuple) or "embed_dim" not in model_cfg:
    raise InputError(
      f"{source}: unsupported open_clip architecture (only plain-ViT CLIPs with a transformer text tower; "
      f"found {unsupported or 'no embed_dim / a ResNet tower'})"
    )
  act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
  vw, tw = int(v.get("width", 768)), int(t.get("width", 512))
  try:
    return ClipConfig(
      vision=VisionConfig(
        image_size=_size(v.get("image_size", 224)),
        patch_size=_size(v.get("patch_size", 16)),
        width=vw,
        layers=int(v.get("layers", 12)),
        heads=vw // int(v.get("head_width", 64)),
        mlp_dim=int(vw * float(v.get("mlp_ratio", 4.0))),
        act=act,
      ),
      text=TextConfig(
        vocab_size=int(t.get("vocab_size", 49408)),
        context_length=int(t.get("context_length", 77)),
        width=tw,
        layers=int(t.get("layers", 12)),
        heads=int(t.get("heads", 8)),
        mlp_dim=int(tw * float(t.get("mlp_ratio", 4.0))),
        act=act,
        eos_id=int(t.get("eos_id", 49407)),
        pool="argmax" if t.get("pool_type", "argmax") == "argmax" else "eos",
      ),
      embed_dim=int(model_cfg["embed_dim"]),
    )
  except ValueError as e:
    raise InputError(f"{source}: {e}") from None


def _size(x: Any) -> int:
  if isinstance(x, list | tuple):
    if len(set(x)) != 1:
      raise InputError(f"non-square size {x} is not supported")
    x = x[0]
  return int(x)


# ----------------------------------------------------------------------------------------------------------
# Name maps: external key -> [(path in the parameter tree, transform)]


def _block_entries(ext: str, path: tuple[str, ...], fused_qkv: bool, names: dict[str, str]) -> list:
  """Entries of one transformer block. ``names`` gives the external names of ln_1/ln_2/fc1/fc2/attn."""
  out = []
  for ln in ("ln_1", "ln_2"):
    out += [(f"{ext}.{names[ln]}.weight", path + (ln, "scale"), _COPY)]
    out += [(f"{ext}.{names[ln]}.bias", path + (ln, "bias"), _COPY)]
  for fc in ("fc1", "fc2"):
    out += [(f"{ext}.{names[fc]}.weight", path + (fc, "kernel"), _LINEAR)]
    out += [(f"{ext}.{names[fc]}.bias", path + (fc, "bias"), _COPY)]
  attn = f"{ext}.{names['attn']}"
  if fused_qkv:
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
      out += [(f"{attn}.in_proj_weight", path + ("attn", proj, "kernel"), _rows(i, _LINEAR))]
      out += [(f"{attn}.in_proj_bias", path + ("attn", proj, "bias"), _rows(i, _COPY))]
    projs = ("out_proj",)
  else:
    projs = ("q_proj", "k_proj", "v_proj", "out_proj")
  for proj in projs:
    out += [(f"{attn}.{proj}.weight", path + ("attn", proj, "kernel"), _LINEAR)]
    out += [(f"{attn}.{proj}.bias", path + ("attn", proj, "bias"), _COPY)]
  return out


def _rows(i: int, then: Transform) -> Transform:
  """The i-th third of a fused [3D, ...] tensor, then ``then``."""
  return lambda a: then(np.split(a, 3, axis=0)[i])


def _ln(ext: str, path: tuple[str, ...]) -> list:
  return [(f"{ext}.weight", path + ("scale",), _COPY), (f"{ext}.bias", path + ("bias",), _COPY)]


_HF_BLOCK = {
  "ln_1": "layer_norm1", "ln_2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "attn": "self_attn"
}  # fmt: skip
_OC_BLOCK = {"ln_1": "ln_1", "ln_2": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj", "attn": "attn"}


def _hf_map(cfg: ClipConfig) -> list:
  v, t = "vision_model", "text_model"
  m = [
    (f"{v}.embeddings.patch_embedding.weight", ("vision", "patch_embed", "kernel"), _CONV),
    (f"{v}.embeddings.class_embedding", ("vision", "class_embedding"), _COPY),
    (f"{v}.embeddings.position_embedding.weight", ("vision", "pos_embedding"), _COPY),
    *_ln(f"{v}.pre_layrnorm", ("vision", "ln_pre")),
    *_ln(f"{v}.post_layernorm", ("vision", "ln_post")),
    ("visual_projection.weight", ("visual_projection", "kernel"), _LINEAR),
    (f"{t}.embeddings.token_embedding.weight", ("text", "token_embedding", "embedding"), _COPY),
    (f"{t}.embeddings.position_embedding.weight", ("text", "pos_embedding"), _COPY),
    *_ln(f"{t}.final_layer_norm", ("text", "ln_final")),
    ("text_projection.weight", ("text_projection", "kernel"), _LINEAR),
    ("logit_scale", ("logit_scale",), _COPY),
  ]
  for tower, ext, n in (("vision", v, cfg.vision.layers), ("text", t, cfg.text.layers)):
    for i in range(n):
      m += _block_entries(f"{ext}.encoder.layers.{i}", (tower, "encoder", f"block_{i}"), False, _HF_BLOCK)
  return m


def _open_clip_map(cfg: ClipConfig) -> list:
  m = [
    ("visual.conv1.weight", ("vision", "patch_embed", "kernel"), _CONV),
    ("visual.class_embedding", ("vision", "class_embedding"), _COPY),
    ("visual.positional_embedding", ("vision", "pos_embedding"), _COPY),
    *_ln("visual.ln_pre", ("vision", "ln_pre")),
    *_ln("visual.ln_post", ("vision", "ln_post")),
    ("visual.proj", ("visual_projection", "kernel"), _COPY),  # used as x @ proj: already (in, out)
    ("token_embedding.weight", ("text", "token_embedding", "embedding"), _COPY),
    ("positional_embedding", ("text", "pos_embedding"), _COPY),
    *_ln("ln_final", ("text", "ln_final")),
    ("text_projection", ("text_projection", "kernel"), _COPY),
    ("logit_scale", ("logit_scale",), _COPY),
  ]
  towers = (("vision", "visual.transformer", cfg.vision.layers), ("text", "transformer", cfg.text.layers))
  for tower, ext, n in towers:
    for i in range(n):
      m += _block_entries(f"{ext}.resblocks.{i}", (tower, "encoder", f"block_{i}"), True, _OC_BLOCK)
  return m


# ----------------------------------------------------------------------------------------------------------
# Conversion


def _convert(state: dict[str, np.ndarray], cfg: ClipConfig, mapping: list, source: str) -> Any:
  """Builds the parameter tree from ``state`` through ``mapping``, checking every key and shape."""
  shapes = param_shapes(cfg)
  flat = {tuple(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in _leaves(shapes)}
  state = {k: v for k, v in state.items() if not k.endswith(_BUFFERS)}
  used = {ext for ext, _, _ in mapping}
  missing = sorted(used - state.keys())
  unexpected = sorted(state.keys() - used)
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"{len(missing)} missing key(s) ({_names(missing)})")
    if unexpected:
      parts.append(f"{len(unexpected)} unexpected key(s) ({_names(unexpected)})")
    raise InputError(f"checkpoint {source} does not fit the CLIP its config describes: {'; '.join(parts)}")
  out: dict[tuple[str, ...], np.ndarray] = {}
  for ext, path, fn in mapping:
    value = np.asarray(fn(np.asarray(state[ext])), np.float32)
    want = tuple(flat[path].shape)
    if value.shape != want:
      raise InputError(
        f"checkpoint {source}: {ext} has shape {tuple(np.shape(state[ext]))}, "
        f"the config needs {want} (as {'/'.join(path)})"
      )
    out[path] = value
  return _unflatten(out)


def _names(keys: list[str], limit: int = 4) -> str:
  more = f", ... {len(keys) - limit} more" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def _leaves(tree: Any) -> list:
  return jax.tree_util.tree_leaves_with_path(tree)


def _unflatten(flat: dict[tuple[str, ...], np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return tree


def from_hf_state(state: dict[str, np.ndarray], cfg: ClipConfig, source: str = "checkpoint") -> Any:
  """Parameters of ``CLIP(cfg)`` from a transformers ``CLIPModel`` state dict (numpy arrays)."""
  if any(k.endswith((".kernel", ".scale", ".embedding")) for k in state):
    state = _flax_names_to_torch(state)
  return _convert(state, cfg, _hf_map(cfg), source)


def from_open_clip_state(state: dict[str, np.ndarray], cfg: ClipConfig, source: str = "checkpoint") -> Any:
  """Parameters of ``CLIP(cfg)`` from an open_clip state dict (numpy arrays; ``module.`` prefixes dropped)."""
  state = {k.removeprefix("module."): v for k, v in state.items()}
  return _convert(state, cfg, _open_clip_map(cfg), source)


def to_hf_state(params: Any, cfg: ClipConfig) -> dict[str, np.ndarray]:
  """A transformers ``CLIPModel`` state dict (float32 numpy, contiguous) of ``params``."""
  flat = {tuple(str(getattr(k, "key", k)) for k in path): np.asarray(leaf) for path, leaf in _leaves(params)}
  back = {_LINEAR: _LINEAR, _COPY: _COPY, _CONV: _CONV_BACK}
  return {ext: np.array(back[fn](flat[path]), np.float32, order="C") for ext, path, fn in _hf_map(cfg)}


def _flax_names_to_torch(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers' Flax CLIP names (kernel/scale/embedding, HWIO convolution) -> its PyTorch names."""
  out = {}
  for k, a in state.items():
    a = np.asarray(a)
    if k.endswith(".kernel"):
      k, a = k[: -len("kernel")] + "weight", (_CONV_BACK(a) if a.ndim == 4 else a.T)
    elif k.endswith((".scale", ".embedding")):
      k = k.rsplit(".", 1)[0] + ".weight"
    out[k] = a
  return out


def read_state(path: str | Path) -> dict[str, np.ndarray]:
  """A checkpoint file as {name: numpy array}: ``.safetensors``, ``.msgpack`` (transformers' old Flax
  export), or a torch pickle (``.bin`` / ``.pt`` / ``.pth``, needs torch)."""
  path = Path(path)
  if path.suffix not in (".safetensors", ".msgpack"):
    return hf.read_torch(path)
  try:
    if path.suffix == ".safetensors":
      return hf.read_safetensors(path)
    from flax import serialization
    from flax.traverse_util import flatten_dict

    tree = serialization.msgpack_restore(path.read_bytes())
    return {".".join(k): np.asarray(v) for k, v in flatten_dict(tree).items()}
  except Exception as e:  # OSError, safetensors' own SafetensorError, msgpack errors
    raise InputError(f"cannot read checkpoint {path}: {type(e).__name__}: {hf.first_line(e)}") from None


def read_hf_folder(folder: Path) -> dict[str, np.ndarray]:
  """The tensors of a transformers checkpoint folder, or of its old Flax export (``flax_model.msgpack``)."""
  if hf.weight_format(folder) is None and (folder / "flax_model.msgpack").is_file():
    return read_state(folder / "flax_model.msgpack")
  return hf.read_tensors(folder)
