"""CLIP through transformers' ``FlaxCLIPModel``: loading, jit-compiled batched encoders sharded over devices.

``load(name_or_dir)`` accepts a hub id (on a machine that can reach the hub or has it cached) or a local
directory written by ``save_pretrained`` holding the model, its tokenizer and (optionally) its image
processor config. The returned :class:`ClipBundle` encodes images and texts in fixed-size, device-sharded
batches; image preprocessing (shortest-edge resize, centre crop, rescale, normalise) runs inside the same
jit-compiled function as the encoder, so a batch of raw uint8 images goes to the devices once.

``save_random_clip(dir)`` writes a tiny random CLIP with a character-level tokenizer: the test model that
every method's tests load through ``load(dir)``.

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import parallel
from conceptjax.errors import InputError, check

__all__ = ["ClipBundle", "Preprocess", "load", "preprocess_images", "save_random_clip"]

# Batches are padded up to a power of two (at least the device count, at most ``batch_size``) so that
# calls with different numbers of rows reuse a handful of compiled shapes.
DEFAULT_BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Static image preprocessing settings, read from a ``CLIPImageProcessor`` (hashable: a jit static arg).

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
  def from_processor(cls, proc: Any) -> Preprocess:
    size = dict(proc.size) if getattr(proc, "do_resize", True) else {}
    crop = dict(proc.crop_size) if getattr(proc, "do_center_crop", False) else None
    method = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos3"}.get(int(getattr(proc, "resample", 3)))
    return cls(
      shortest_edge=size.get("shortest_edge"),
      resize_hw=(size["height"], size["width"]) if "height" in size else None,
      crop_hw=(crop["height"], crop["width"]) if crop else None,
      mean=tuple(float(m) for m in proc.image_mean),
      std=tuple(float(s) for s in proc.image_std),
      method=method or "bicubic",
    )


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
    channels_first: return [N, 3, h, w] (what ``FlaxCLIPModel.get_image_features`` and the image processor
      give) instead of [N, h, w, 3] (what the Flax vision module itself consumes).

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
  """A loaded CLIP: model, tokenizer, preprocessing and the jit-compiled encoders.

  Use ``encode_images`` / ``encode_texts``; both return raw (unnormalised) projected features as numpy
  float32 [N, d], computed in batches sharded over every device of ``mesh``.
  """

  name: str  # hub id or resolved directory path (for cache keys)
  model: Any  # transformers.FlaxCLIPModel
  tokenizer: Any  # CLIPTokenizer(Fast)
  preprocess: Preprocess
  max_length: int  # text context length (tokens)
  params: Any  # model parameters, replicated over ``mesh`` (the model itself holds none: _do_init=False)
  mesh: jax.sharding.Mesh
  image_fn: Callable[..., jax.Array]  # jit (images uint8 [b,H,W,3], params) -> [b, d]
  text_fn: Callable[..., jax.Array]  # jit (input_ids [b,L], attention_mask [b,L], params) -> [b, d]

  @property
  def dim(self) -> int:
    """Embedding width d."""
    return int(self.model.config.projection_dim)

  def encode_images(
    self, images: np.ndarray | Sequence[np.ndarray], batch_size: int = DEFAULT_BATCH_SIZE
  ) -> np.ndarray:
    """Image embeddings.

    Args:
      images: uint8 [N, H, W, 3] (any H, W: resized as the image processor does), or a list of
        [H_i, W_i, 3] images of different sizes (encoded in groups of equal size, order kept).
      batch_size: rows per device call (padded to a power of two, split over the devices).

    Returns:
      float32 [N, d].
    """
    if isinstance(images, np.ndarray | jax.Array) and np.ndim(images) == 4:
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
    tok = self.tokenizer(
      texts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="np"
    )
    ids = tok["input_ids"].astype(np.int32)
    mask = tok["attention_mask"].astype(np.int32)
    return _batched(self.text_fn, (ids, mask), self.params, batch_size, self.mesh, self.dim)


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


def _looks_like_path(name: str) -> bool:
  """A hub id is ``name`` or ``org/name``; anything else is meant as a local path."""
  return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1


def load(
  name_or_dir: str | os.PathLike,
  *,
  mesh: jax.sharding.Mesh | None = None,
  dtype: Any = jnp.float32,
) -> ClipBundle:
  """Loads a CLIP model, its tokenizer and image processor.

  Args:
    name_or_dir: a directory written by ``save_pretrained`` (model + tokenizer [+ preprocessor config]) or
      a hub id such as ``openai/clip-vit-base-patch32``.
    mesh: device mesh for the encoders (default: all devices, ``parallel.data_mesh()``).
    dtype: computation dtype of the model.

  Returns:
    A :class:`ClipBundle`.

  Raises:
    InputError: one line naming the model when it cannot be loaded (missing directory, unreachable hub,
      missing tokenizer files).
  """
  import transformers

  name = os.fspath(name_or_dir)
  path = Path(name).expanduser()
  hint = "pass a local directory written by save_pretrained (model, tokenizer and preprocessor files)"
  if path.exists():
    check(path.is_dir(), f"CLIP model {name!r} is a file, not a save_pretrained directory; {hint}")
    check((path / "config.json").is_file(), f"CLIP model directory {name!r} has no config.json; {hint}")
    source = str(path.resolve())
  else:
    check(
      not _looks_like_path(name),
      f"CLIP model directory {name!r} does not exist; {hint}",
    )
    source = name
  transformers.logging.set_verbosity_error()
  try:
    # _do_init=False: no random initialisation before loading (minutes on a busy CPU for a large model)
    model, params = transformers.FlaxCLIPModel.from_pretrained(source, dtype=dtype, _do_init=False)
  except (OSError, ValueError, TypeError) as e:
    where = "directory" if path.exists() else "hub id"
    raise InputError(
      f"could not load CLIP model {name!r} ({where}; hub unreachable, offline or unknown: "
      f"{str(e).splitlines()[0][:120]}); {hint}"
    ) from None
  tokenizer = _load_tokenizer(transformers, source, name, hint)
  try:
    proc = transformers.CLIPImageProcessor.from_pretrained(source)
  except (OSError, ValueError, TypeError):
    size = int(model.config.vision_config.image_size)  # no preprocessor config: CLIP defaults at this size
    proc = transformers.CLIPImageProcessor(
      size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
  mesh = parallel.data_mesh() if mesh is None else mesh
  prep = Preprocess.from_processor(proc)
  key = (model.config.to_json_string(), prep, jnp.dtype(dtype).name)
  if key not in _ENCODERS:  # models of one config share compiled encoders (params are an argument)
    _ENCODERS[key] = _encoders(model.module, prep)
  image_fn, text_fn = _ENCODERS[key]
  max_length = int(model.config.text_config.max_position_embeddings)
  return ClipBundle(
    name=source,
    model=model,
    tokenizer=tokenizer,
    preprocess=prep,
    max_length=max_length,
    params=parallel.replicate(params, mesh),
    mesh=mesh,
    image_fn=image_fn,
    text_fn=text_fn,
  )


def _load_tokenizer(transformers: Any, source: str, name: str, hint: str) -> Any:
  errors = []
  for cls in (transformers.CLIPTokenizerFast, transformers.CLIPTokenizer):
    try:
      return cls.from_pretrained(source)
    except (OSError, ValueError, TypeError, AttributeError) as e:  # TypeError: missing vocab file offline
      errors.append(str(e).splitlines()[0][:100] if str(e) else type(e).__name__)
  raise InputError(f"could not load the tokenizer of CLIP model {name!r} ({errors[-1]}); {hint}")


def _image_features(module: Any, pixel_values: jax.Array) -> jax.Array:
  """pixel_values: [N, h, w, 3] (the Flax module is channels-last; the public wrapper transposes)."""
  pooled = module.vision_model(pixel_values=pixel_values, deterministic=True)[1]
  return module.visual_projection(pooled)


def _text_features(module: Any, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
  positions = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
  pooled = module.text_model(
    input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, deterministic=True
  )[1]
  return module.text_projection(pooled)


_ENCODERS: dict[tuple[str, Preprocess, str], tuple[Callable[..., jax.Array], Callable[..., jax.Array]]] = {}


def _encoders(module: Any, prep: Preprocess) -> tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
  """Builds the two jit-compiled encoders for one model (compiled once per batch shape)."""

  @jax.jit
  def image_fn(images, params):
    return module.apply({"params": params}, preprocess_images(images, prep, False), method=_image_features)

  @jax.jit
  def text_fn(input_ids, attention_mask, params):
    return module.apply({"params": params}, input_ids, attention_mask, method=_text_features)

  return image_fn, text_fn


@functools.cache
def _byte_chars() -> tuple[str, ...]:
  from transformers.models.clip.tokenization_clip import bytes_to_unicode

  return tuple(bytes_to_unicode().values())


def save_random_clip(
  directory: str | os.PathLike,
  *,
  hidden: int = 32,
  layers: int = 2,
  image_size: int = 32,
  patch_size: int = 8,
  projection_dim: int = 16,
  max_length: int = 32,
  seed: int = 0,
) -> Path:
  """Writes a tiny random CLIP (model, character-level tokenizer, image processor) for tests and demos.

  The tokenizer is a valid byte-level ``CLIPTokenizer`` with no merges: 256 byte characters, the same with
  ``</w>``, ``<|startoftext|>`` and ``<|endoftext|>`` (514 tokens). Load it back with ``load(directory)``.

  Returns:
    The directory.
  """
  import transformers

  transformers.logging.set_verbosity_error()
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  chars = list(_byte_chars())
  vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
  bos, eos = len(vocab) - 2, len(vocab) - 1
  common = dict(
    hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2
  )
  config = transformers.CLIPConfig(
    text_config=dict(
      common,
      vocab_size=len(vocab),
      max_position_embeddings=max_length,
      bos_token_id=bos,
      eos_token_id=eos,
      pad_token_id=eos,
    ),
    vision_config=dict(common, image_size=image_size, patch_size=patch_size),
    projection_dim=projection_dim,
  )
  # Random parameters drawn in numpy on the shapes of an uninitialised model: FlaxCLIPModel's own init runs
  # op by op and takes about a minute on a busy 2-core machine; this takes well under a second.
  model = transformers.FlaxCLIPModel(config, _do_init=False)
  model.save_pretrained(directory, params=_random_params(model.params_shape_tree, seed))
  (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
  (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
  transformers.CLIPTokenizer(
    str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length
  ).save_pretrained(directory)
  transformers.CLIPImageProcessor(
    size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
  ).save_pretrained(directory)
  return directory


def _random_params(shapes: Any, seed: int) -> Any:
  """Random CLIP parameters for a shape tree: LayerNorm scales 1, biases 0, logit scale log(1/0.07),
  kernels N(0, 1/fan_in), embeddings N(0, 0.02^2)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    if name == "bias":
      return np.zeros(leaf.shape, np.float32)
    if name == "logit_scale":
      return np.asarray(np.log(1 / 0.07), np.float32)
    std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.02
    return (rng.standard_normal(leaf.shape) * std).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)
