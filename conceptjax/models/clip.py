"""CLIP: loading checkpoints into the project's Flax CLIP, jit-compiled batched encoders sharded over devices.

``load(name_or_dir)`` reads

* a transformers-format directory (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin`` + tokenizer
  files [+ ``preprocessor_config.json``]), e.g. OpenAI's ``openai/clip-vit-base-patch32`` or LAION's
  ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` (SpLiCE's default);
* an open_clip directory (``open_clip_config.json`` + ``open_clip_model.safetensors`` /
  ``open_clip_pytorch_model.bin`` + tokenizer files), or a bare open_clip state-dict file with
  ``arch="ViT-B-32"`` (``clip_weights.OPEN_CLIP_ARCHS``) and ``tokenizer=DIR``;
* a hub id of either kind, downloaded with ``huggingface_hub`` where the hub is reachable.

The model is ``clip_model.CLIP`` (the project's own; see ``clip_weights`` for the name maps). The returned
:class:`ClipBundle` encodes images and texts in fixed-size, device-sharded batches; image preprocessing
(shortest-edge resize, centre crop, rescale, normalise, as the checkpoint's preprocessor config says) runs
inside the same jit-compiled function as the encoder, so a batch of raw uint8 images goes to the devices once.

``save(directory, cfg, params, tokenizer)`` writes transformers' format (loadable by its PyTorch
``CLIPModel`` too); ``save_random_clip(dir)`` writes a tiny random CLIP with a character-level tokenizer: the
test model that every method's tests load through ``load(dir)``.

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import parallel
from conceptjax.errors import InputError, check
from conceptjax.models import clip_weights as cw
from conceptjax.models import hf as hf_lib
from conceptjax.models.clip_model import CLIP, ClipConfig, TextConfig, VisionConfig, random_params

__all__ = ["ClipBundle", "Preprocess", "load", "preprocess_images", "save", "save_random_clip", "tokenize"]

# Batches are padded up to a power of two (at least the device count, at most ``batch_size``) so that
# calls with different numbers of rows reuse a handful of compiled shapes.
DEFAULT_BATCH_SIZE = 256
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos3"}
# What a hub download fetches: configs, tokenizer files and one weights format (transformers' if the
# repository has it, else the first fallback it has; LAION's repositories hold both formats).
_HUB_FILES = ["*.json", "merges.txt", "vocab.txt", hf_lib.SAFETENSORS, hf_lib.SAFETENSORS_INDEX]
_HUB_FILES.append("model-*.safetensors")  # the shards an index lists
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HUB_FALLBACKS = (hf_lib.TORCH_BIN, *_OPEN_CLIP_WEIGHTS)


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Static image preprocessing settings, read from a checkpoint's config (hashable: a jit static arg).

  Attributes:
    shortest_edge: resize so the shorter side has this length (None: resize to ``resize_hw``).
    resize_hw: (height, width) for processors that resize to a fixed size; used when shortest_edge is None.
    crop_hw: centre crop (height, width), or None for no crop.
    mean, std: per-channel normalisation applied after rescaling to [0, 1].
    method: ``jax.image.resize`` method ("bicubic" for CLIP's PIL BICUBIC).
  """

  shortest_edge: int | None
  resize_hw: tuple[int, int] | None
  crop_hw: tuple[int, int] | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  method: str = "bicubic"

  @classmethod
  def from_config(cls, d: dict[str, Any], image_size: int) -> Preprocess:
    """From a ``preprocessor_config.json`` dict (transformers' ``CLIPImageProcessor`` keys and defaults)."""
    size = d.get("size", image_size) if d.get("do_resize", True) else None
    crop = d.get("crop_size", image_size) if d.get("do_center_crop", True) else None
    if isinstance(size, int | float):
      size = {"shortest_edge": int(size)}
    if isinstance(crop, int | float):
      crop = {"height": int(crop), "width": int(crop)}
    size = size or {}
    return cls(
      shortest_edge=size.get("shortest_edge"),
      resize_hw=(size["height"], size["width"]) if "height" in size else None,
      crop_hw=(crop["height"], crop["width"]) if crop else None,
      mean=tuple(float(m) for m in d.get("image_mean", CLIP_MEAN)),
      std=tuple(float(s) for s in d.get("image_std", CLIP_STD)),
      method=_RESAMPLE.get(int(d.get("resample", 3)), "bicubic"),
    )

  @classmethod
  def from_open_clip(cls, d: dict[str, Any], image_size: int) -> Preprocess:
    """From an ``open_clip_config.json``'s ``preprocess_cfg`` (shortest-edge resize, then centre crop)."""
    method = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(
      d.get("interpolation", "bicubic"), "bicubic"
    )
    return cls(
      shortest_edge=image_size,
      resize_hw=None,
      crop_hw=(image_size, image_size),
      mean=tuple(float(m) for m in d.get("mean", CLIP_MEAN)),
      std=tuple(float(s) for s in d.get("std", CLIP_STD)),
      method=method,
    )

  def to_config(self) -> dict[str, Any]:
    """The ``preprocessor_config.json`` dict (``CLIPImageProcessor``) of these settings."""
    size = {"shortest_edge": self.shortest_edge} if self.shortest_edge else None
    if size is None and self.resize_hw:
      size = {"height": self.resize_hw[0], "width": self.resize_hw[1]}
    d = {
      "image_processor_type": "CLIPImageProcessor",
      "do_resize": size is not None,
      "do_center_crop": self.crop_hw is not None,
      "do_rescale": True,
      "rescale_factor": 1 / 255,
      "do_normalize": True,
      "do_convert_rgb": True,
      "image_mean": list(self.mean),
      "image_std": list(self.std),
      "resample": {v: k for k, v in _RESAMPLE.items()}[self.method],
    }
    if size:
      d["size"] = size
    if self.crop_hw:
      d["crop_size"] = {"height": self.crop_hw[0], "width": self.crop_hw[1]}
    return d

  @classmethod
  def default(cls, image_size: int) -> Preprocess:
    """CLIP's preprocessing at ``image_size`` (shortest edge, centre crop, OpenAI mean and std)."""
    return cls.from_config({}, image_size)


def _resized_hw(h: int, w: int, prep: Preprocess) -> tuple[int, int]:
  """Output size of the resize step, exactly as transformers' ``get_resize_output_image_size``."""
  if prep.shortest_edge is None:
    return prep.resize_hw if prep.resize_hw is not None else (h, w)
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = prep.shortest_edge, int(prep.shortest_edge * long / short)
  return (new_long, new_short) if w <= h else (new_short, new_long)


def preprocess_images(images: jax.Array, prep: Preprocess, channels_first: bool = True) -> jax.Array:
  """Resizes, centre-crops and normalises a batch of uint8 images, as ``CLIPImageProcessor`` does.

  Args:
    images: uint8 [N, H, W, 3].
    prep: static settings.
    channels_first: return [N, 3, h, w] (what the image processor and PyTorch models take) instead of
      [N, h, w, 3] (what the Flax vision tower consumes).

  Returns:
    float32 [N, 3, h, w] pixels (or [N, h, w, 3]).
  """
  x = images.astype(jnp.float32)
  n, h, w, _ = x.shape
  rh, rw = _resized_hw(h, w, prep)
  if (rh, rw) != (h, w):
    x = jax.image.resize(x, (n, rh, rw, 3), method=prep.method, antialias=True)
    x = jnp.clip(jnp.round(x), 0.0, 255.0)  # the processor resizes uint8 images through PIL
  if prep.crop_hw is not None:
    ch, cw = prep.crop_hw
    if rh < ch or rw < cw:  # the processor zero-pads images smaller than the crop, centred
      ph, pw = max(ch, rh), max(cw, rw)
      top_pad, left_pad = -(-(ph - rh) // 2), -(-(pw - rw) // 2)
      x = jnp.pad(x, ((0, 0), (top_pad, ph - rh - top_pad), (left_pad, pw - rw - left_pad), (0, 0)))
      rh, rw = ph, pw
    top, left = (rh - ch) // 2, (rw - cw) // 2
    x = x[:, top : top + ch, left : left + cw]
  x = (x / 255.0 - jnp.asarray(prep.mean)) / jnp.asarray(prep.std)
  return jnp.transpose(x, (0, 3, 1, 2)) if channels_first else x


class ClipBundle(NamedTuple):
  """A loaded CLIP: config, module, tokenizer, preprocessing and the jit-compiled encoders.

  Use ``encode_images`` / ``encode_texts``; both return raw (unnormalised) projected features as numpy
  float32 [N, d], computed in batches sharded over every device of ``mesh``.
  """

  name: str  # hub id or resolved directory / file path
  config: ClipConfig
  module: CLIP  # the Flax module (holds no parameters)
  tokenizer: Any  # transformers CLIPTokenizer (tokenizers-backed)
  preprocess: Preprocess
  max_length: int  # text context length (tokens)
  params: Any  # parameters, replicated over ``mesh``
  mesh: jax.sharding.Mesh
  image_fn: Callable[..., jax.Array]  # jit (images uint8 [b,H,W,3], params) -> [b, d]
  text_fn: Callable[..., jax.Array]  # jit (input_ids [b,L], attention_mask [b,L], params) -> [b, d]

  @property
  def dim(self) -> int:
    """Embedding width d."""
    return int(self.config.embed_dim)

  @property
  def dtype(self) -> Any:
    """Compute dtype of the encoders."""
    return self.module.dtype

  def encode_images(
    self, images: np.ndarray | Sequence[np.ndarray], batch_size: int = DEFAULT_BATCH_SIZE
  ) -> np.ndarray:
    """Image embeddings.

    Args:
      images: uint8 [N, H, W, 3] (any H, W: resized as the checkpoint's preprocessor config says), or a list
        of [H_i, W_i, 3] images of different sizes (encoded in groups of equal size, order kept).
      batch_size: rows per device call (padded to a power of two, split over the devices).

    Returns:
      float32 [N, d].
    """
    if isinstance(images, np.ndarray | jax.Array):
      arr = np.asarray(images)
      _check_images(arr)
      return _batched(self.image_fn, (arr,), self.params, batch_size, self.mesh, self.dim)
    images = [np.asarray(im) for im in images]
    out = np.zeros((len(images), self.dim), np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
      check(im.ndim == 3, f"image {i} has shape {im.shape}; expected [H, W, 3]")
      groups.setdefault(im.shape, []).append(i)
    for rows in groups.values():
      out[rows] = self.encode_images(np.stack([images[i] for i in rows]), batch_size)
    return out

  def encode_texts(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Text embeddings of ``texts`` as-is (no prompt template), truncated to the context length.

    Returns:
      float32 [N, d].
    """
    texts = list(texts)
    for i, t in enumerate(texts):
      check(isinstance(t, str), f"text {i} is {type(t).__name__}, not str")
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    ids, mask = tokenize(self.tokenizer, texts, self.max_length)
    return _batched(self.text_fn, (ids, mask), self.params, batch_size, self.mesh, self.dim)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and attention mask, int32 [N, max_length] (padded to ``max_length``, truncated)."""
  tok = tokenizer(
    list(texts), padding="max_length", max_length=max_length, truncation=True, return_tensors="np"
  )
  return tok["input_ids"].astype(np.int32), tok["attention_mask"].astype(np.int32)


def _check_images(images: np.ndarray) -> None:
  check(
    images.ndim == 4 and images.shape[-1] == 3,
    f"images have shape {images.shape}; expected uint8 [N, H, W, 3]",
  )
  check(images.dtype == np.uint8, f"images have dtype {images.dtype}; expected uint8 [N, H, W, 3]")


def _bucket(n: int, batch_size: int, devices: int) -> int:
  """Padded batch size for ``n`` rows: the next power of two, capped at batch_size, a multiple of devices."""
  size = min(1 << max(n - 1, 0).bit_length(), max(batch_size, 1))
  return -(-max(size, devices) // devices) * devices


def _batched(
  fn: Callable[..., jax.Array],
  arrays: tuple[np.ndarray, ...],
  params: Any,
  batch_size: int,
  mesh: jax.sharding.Mesh,
  dim: int,
) -> np.ndarray:
  n = arrays[0].shape[0]
  out = np.zeros((n, dim), np.float32)
  if n == 0:
    return out
  size = _bucket(n, batch_size, mesh.size)
  for start in range(0, n, size):
    chunk = tuple(a[start : start + size] for a in arrays)
    chunk, rows = parallel.pad_to_multiple(chunk, size)
    res = parallel.map_batched(fn, chunk, (params,), mesh=mesh)
    out[start : start + rows] = np.asarray(res)[:rows]
  return out


# ----------------------------------------------------------------------------------------------------------
# Loading


class _Checkpoint(NamedTuple):
  """What ``_resolve`` found: the config, where the weights are, which map reads them."""

  config: ClipConfig
  weights: Path  # the open_clip weights file, or the transformers checkpoint folder
  open_clip: bool
  tokenizer_dir: Path | None
  preprocess: Preprocess
  where: str  # the resolved local path, or the hub id


_HINT = (
  "pass a transformers CLIP directory (config.json + model.safetensors + tokenizer files), an open_clip "
  "directory (open_clip_config.json + open_clip_model.safetensors), or an open_clip state-dict file "
  "with arch="
)


def _has_weights(folder: Path) -> bool:
  return hf_lib.weight_format(folder) is not None or any((folder / w).is_file() for w in _OPEN_CLIP_WEIGHTS)


def _resolve(name: str, arch: str | None, tokenizer: str | os.PathLike | None) -> _Checkpoint:
  path = Path(name).expanduser()
  where = str(path.resolve())
  if not path.exists():
    path = hf_lib.resolve(name, "CLIP model", _HUB_FILES, fallbacks=_HUB_FALLBACKS, has_weights=_has_weights)
    where = name
  tok_dir = Path(tokenizer).expanduser() if tokenizer is not None else None
  if path.is_file():
    check(
      arch is not None,
      f"CLIP checkpoint {name!r} is a file: pass arch= (one of {', '.join(cw.OPEN_CLIP_ARCHS)}) for an "
      "open_clip state dict, or a directory for a transformers checkpoint",
    )
    known = ", ".join(cw.OPEN_CLIP_ARCHS)
    check(arch in cw.OPEN_CLIP_ARCHS, f"unknown open_clip arch {arch!r}; known: {known}")
    cfg = cw.config_from_open_clip(cw.OPEN_CLIP_ARCHS[arch], arch)
    return _Checkpoint(cfg, path, True, tok_dir, Preprocess.default(cfg.vision.image_size), where)
  tok_dir = tok_dir or path
  hf_cfg, oc = path / hf_lib.CONFIG, path / "open_clip_config.json"
  if hf_cfg.is_file() and (arch is None or not oc.is_file()):
    cfg = cw.config_from_hf(hf_lib.read_json(hf_cfg), str(hf_cfg))
    prep_file = path / "preprocessor_config.json"
    prep = hf_lib.read_json(prep_file) if prep_file.is_file() else {}
    prep = Preprocess.from_config(prep, cfg.vision.image_size)
    return _Checkpoint(cfg, path, False, tok_dir, prep, where)
  if oc.is_file():
    d = hf_lib.read_json(oc)
    cfg = cw.config_from_open_clip(d.get("model_cfg", d), str(oc))
    weights = [path / w for w in _OPEN_CLIP_WEIGHTS if (path / w).is_file()]
    check(bool(weights), f"open_clip directory {path} has no open_clip_model.safetensors / .bin")
    prep = Preprocess.from_open_clip(d.get("preprocess_cfg", {}), cfg.vision.image_size)
    return _Checkpoint(cfg, weights[0], True, tok_dir, prep, where)
  raise InputError(
    f"CLIP model directory {name!r} has neither config.json nor open_clip_config.json; {_HINT}"
  )


def _read_weights(ckpt: _Checkpoint) -> Any:
  if ckpt.open_clip:
    return cw.from_open_clip_state(cw.read_state(ckpt.weights), ckpt.config, str(ckpt.weights))
  source = ckpt.weights / (hf_lib.weight_format(ckpt.weights) or "flax_model.msgpack")
  return cw.from_hf_state(cw.read_hf_folder(ckpt.weights), ckpt.config, str(source))


def load(
  name_or_dir: str | os.PathLike,
  *,
  mesh: jax.sharding.Mesh | None = None,
  dtype: Any = jnp.float32,
  arch: str | None = None,
  tokenizer: str | os.PathLike | None = None,
) -> ClipBundle:
  """Loads a CLIP checkpoint, its tokenizer and its preprocessing into the project's Flax CLIP.

  Args:
    name_or_dir: a transformers CLIP directory, an open_clip directory, an open_clip state-dict file (with
      ``arch``), or a hub id such as ``openai/clip-vit-base-patch32``.
    mesh: device mesh for the encoders (default: all devices, ``parallel.data_mesh()``).
    dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters stay float32.
    arch: open_clip architecture of a bare state-dict file (``clip_weights.OPEN_CLIP_ARCHS``), or, for a
      directory holding both formats, a request to read the open_clip one.
    tokenizer: directory of the CLIPTokenizer files (default: the checkpoint directory).

  Returns:
    A :class:`ClipBundle`.

  Raises:
    InputError: one line naming the problem: a missing directory, an unreachable hub, an unknown
      architecture, a checkpoint whose keys or shapes do not fit its config, missing tokenizer files.
  """
  name = os.fspath(name_or_dir)
  check(
    jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)),
    f"CLIP dtype {jnp.dtype(dtype).name} is not supported; use float32 or bfloat16",
  )
  ckpt = _resolve(name, arch, tokenizer)
  params = _read_weights(ckpt)
  tok = _load_tokenizer(ckpt.tokenizer_dir, name)
  mesh = parallel.data_mesh() if mesh is None else mesh
  module = CLIP(ckpt.config, dtype=jnp.dtype(dtype))
  image_fn, text_fn = _encoders(module, ckpt.preprocess)
  return ClipBundle(
    name=ckpt.where,
    config=ckpt.config,
    module=module,
    tokenizer=tok,
    preprocess=ckpt.preprocess,
    max_length=ckpt.config.text.context_length,
    params=parallel.replicate(params, mesh),
    mesh=mesh,
    image_fn=image_fn,
    text_fn=text_fn,
  )


def _load_tokenizer(directory: Path | None, name: str) -> Any:
  import transformers

  transformers.logging.set_verbosity_error()
  where = "" if directory is None else str(directory)
  if directory is None or not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.json")):
    raise InputError(
      f"CLIP model {name!r} has no tokenizer files (tokenizer.json or vocab.json + merges.txt) in "
      f"{where or 'its folder'}; pass tokenizer=DIR"
    )
  try:
    tok = transformers.CLIPTokenizerFast.from_pretrained(str(directory), local_files_only=True)
  except Exception as e:  # a malformed file raises anything from OSError to a tokenizers exception
    raise InputError(
      f"could not load the tokenizer of CLIP model {name!r} from {where}: {type(e).__name__}: "
      f"{hf_lib.first_line(e)}"
    ) from None
  return tok


# Compiled encoders are shared by bundles of one config, preprocessing and dtype (params are an argument).
_Encoders = tuple[Callable[..., jax.Array], Callable[..., jax.Array]]
_ENCODERS: dict[tuple[ClipConfig, Preprocess, str], _Encoders] = {}


def _encoders(module: CLIP, prep: Preprocess) -> _Encoders:
  """The two jit-compiled encoders for one model (compiled once per batch shape)."""
  key = (module.cfg, prep, jnp.dtype(module.dtype).name)
  if key not in _ENCODERS:

    @jax.jit
    def image_fn(images, params):
      pixels = preprocess_images(images, prep, channels_first=False)
      return module.apply({"params": params}, pixels, method=CLIP.encode_image)

    @jax.jit
    def text_fn(input_ids, attention_mask, params):
      return module.apply({"params": params}, input_ids, attention_mask, method=CLIP.encode_text)

    _ENCODERS[key] = (image_fn, text_fn)
  return _ENCODERS[key]


# ----------------------------------------------------------------------------------------------------------
# Saving


def save(
  directory: str | os.PathLike,
  cfg: ClipConfig,
  params: Any,
  tokenizer: Any = None,
  preprocess: Preprocess | None = None,
) -> Path:
  """Writes a CLIP in transformers' format: ``config.json``, ``model.safetensors`` (PyTorch names),
  ``preprocessor_config.json`` and, when given, the tokenizer's files.

  The directory loads with :func:`load` and with transformers' PyTorch ``CLIPModel.from_pretrained``.
  """
  from conceptjax import io

  directory = Path(directory)
  extra = {}
  if tokenizer is not None:
    extra = {"bos_id": int(tokenizer.bos_token_id), "pad_id": int(tokenizer.pad_token_id)}
  state = cw.to_hf_state(jax.device_get(params), cfg)
  hf_lib.write(directory, cw.config_to_hf(cfg, **extra), state)
  prep = preprocess or Preprocess.default(cfg.vision.image_size)
  io.write_json(directory / "preprocessor_config.json", prep.to_config())
  if tokenizer is not None:
    from conceptjax.models import tokenizer as tok_lib

    tok_lib.save(tokenizer, directory)
  return directory


def save_random_clip(
  directory: str | os.PathLike,
  *,
  hidden: int = 32,
  layers: int = 2,
  image_size: int = 32,
  patch_size: int = 8,
  projection_dim: int = 16,
  max_length: int = 32,
  act: str = "quick_gelu",
  seed: int = 0,
) -> Path:
  """Writes a tiny random CLIP (model, character-level tokenizer, image processor) for tests and demos.

  The tokenizer is a valid byte-level ``CLIPTokenizer`` with no merges: 256 byte characters, the same with
  ``</w>``, ``<|startoftext|>`` and ``<|endoftext|>`` (514 tokens). Load it back with ``load(directory)``.

  Returns:
    The directory.
  """
  from conceptjax.models import tokenizer as tok_lib

  directory = Path(directory)
  chars = tok_lib.byte_symbols()
  vocab = chars + [c + "</w>" for c in chars] + [tok_lib.BOS, tok_lib.EOS]
  ids = {t: i for i, t in enumerate(vocab)}
  tok = tok_lib.save_clip_tokenizer(ids, [], directory, max_length=max_length)
  tower = dict(width=hidden, layers=layers, heads=2, mlp_dim=2 * hidden, act=act)
  cfg = ClipConfig(
    vision=VisionConfig(image_size=image_size, patch_size=patch_size, **tower),
    text=TextConfig(vocab_size=len(vocab), context_length=max_length, eos_id=len(vocab) - 1, **tower),
    embed_dim=projection_dim,
  )
  return save(directory, cfg, random_params(cfg, seed), tok)
