"""Hugging Face checkpoint folders: finding them (local or hub), reading and writing their tensors.

A checkpoint folder holds ``config.json`` and the weights as ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``), or as ``pytorch_model.bin`` (read only where torch is installed). Tensor
names are PyTorch's (``transformer.h.0.attn.c_attn.weight``). A model module turns them into its parameter
tree with :func:`params_from_tensors`, through an explicit map from external names to parameter paths that
checks every key and shape; every mismatch is named in one line (:class:`conceptjax.errors.InputError`).

Nothing here imports transformers or torch at module level; hub look-ups go through ``huggingface_hub``
(which honours ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from conceptjax import io
from conceptjax.errors import InputError, check

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"


class Entry(NamedTuple):
  """Where one external tensor goes: the parameter path and whether its 2-D matrix is transposed."""

  path: tuple[str, ...]
  transpose: bool = False


def resolve(
  name_or_dir: str | os.PathLike,
  what: str,
  allow_patterns: Sequence[str],
  *,
  fallbacks: Sequence[str] = (TORCH_BIN,),
  has_weights: Callable[[Path], bool] | None = None,
) -> Path:
  """A local checkpoint folder for ``name_or_dir``: the folder itself, or a hub snapshot.

  A hub id (``org/name`` or ``name``) is fetched with ``huggingface_hub.snapshot_download`` restricted to
  ``allow_patterns`` (from the local cache when ``HF_HUB_OFFLINE=1``); while the snapshot has no weights
  (``has_weights``, default: a file :func:`weight_format` knows), each of ``fallbacks`` is fetched in turn, so
  one weights format is downloaded, never all the repository holds.

  Raises:
    InputError: a path that is not a folder, or a hub id that cannot be fetched (one line).
  """
  where = str(name_or_dir)
  if Path(where).expanduser().is_dir():
    return Path(where).expanduser()
  looks_like_path = where.startswith((".", "/", "~")) or where.count("/") > 1 or Path(where).exists()
  if looks_like_path or not where:
    raise InputError(f"{what} folder not found: {where}")
  has_weights = has_weights or (lambda folder: weight_format(folder) is not None)
  try:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(where, allow_patterns=list(allow_patterns)))
    for pattern in fallbacks:
      if has_weights(folder):
        break
      folder = Path(snapshot_download(where, allow_patterns=[pattern]))
  except Exception as e:  # LocalEntryNotFoundError offline, RepositoryNotFoundError, HTTP errors, ...
    raise InputError(
      f"cannot load {what} {where!r} (hub unreachable or unknown id; offline runs need a local folder): "
      f"{type(e).__name__}: {first_line(e)}"
    ) from e
  return folder


def first_line(e: BaseException) -> str:
  """The first line of an exception's message (empty for an empty one)."""
  lines = str(e).strip().splitlines()
  return lines[0] if lines else ""


def read_config(folder: Path) -> dict:
  """The folder's ``config.json`` as a dict (InputError naming the file when absent or not JSON)."""
  path = folder / CONFIG
  check(path.is_file(), f"{folder}: no {CONFIG}")
  return read_json(path)


def read_json(path: Path) -> dict:
  """A JSON object file as a dict, or one line naming the file."""
  try:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise InputError(f"{path}: unreadable ({type(e).__name__}: {first_line(e)})") from e
  check(isinstance(d, dict), f"{path}: not a JSON object")
  return d


def weight_format(folder: Path) -> str | None:
  """The weight file the folder holds: safetensors (single or sharded) first, then the torch pickle."""
  for name in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN):
    if (folder / name).is_file():
      return name
  return None


def read_tensors(folder: Path, hint: str = "") -> dict[str, np.ndarray]:
  """All tensors of the folder's weight file(s) as numpy arrays, by external name.

  Args:
    folder: a checkpoint folder.
    hint: appended to the error when no weight file is found (e.g. how to convert an older format).

  Raises:
    InputError: no weight file, an unreadable file, or ``pytorch_model.bin`` without torch installed.
  """
  name = weight_format(folder)
  check(name is not None, f"{folder}: no {SAFETENSORS} or {TORCH_BIN}{hint}")
  path = folder / name
  try:
    if name == SAFETENSORS:
      return read_safetensors(path)
    if name == SAFETENSORS_INDEX:
      shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
      out: dict[str, np.ndarray] = {}
      for shard in shards:
        out.update(read_safetensors(folder / shard))
      return out
  except InputError:
    raise
  except Exception as e:  # a truncated file, a bad header, a missing shard
    raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first_line(e)})") from e
  return read_torch(path)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """A safetensors file's tensors as numpy arrays (bfloat16 ones as ``ml_dtypes.bfloat16``)."""
  from safetensors import safe_open

  out = {}
  with safe_open(str(path), framework="numpy") as f:
    keys = list(f.keys())
    bf16 = [k for k in keys if f.get_slice(k).get_dtype() == "BF16"]  # numpy has no bfloat16
    for k in keys:
      if k not in bf16:
        out[k] = f.get_tensor(k)
  if bf16:
    with safe_open(str(path), framework="flax") as f:
      out.update({k: np.asarray(f.get_tensor(k)) for k in bf16})  # ml_dtypes.bfloat16 arrays
  return out


def read_torch(path: Path) -> dict[str, np.ndarray]:
  """A torch pickle's tensors as numpy arrays (floating ones as float32); needs torch."""
  try:
    import torch
  except ImportError:
    raise InputError(
      f"{path}: reading {TORCH_BIN} needs torch; install it or convert the checkpoint to {SAFETENSORS}"
    ) from None
  try:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:
    raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first_line(e)})") from e
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]  # training checkpoints (open_clip's among them) wrap the state dict
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def params_from_tensors(
  tensors: Mapping[str, np.ndarray],
  key_map: Mapping[str, Entry],
  expected: Mapping[tuple[str, ...], tuple[int, ...]],
  where: str,
  *,
  ignore: Callable[[str], bool] = lambda name: False,
  dtype: Any = np.float32,
) -> dict:
  """The nested parameter tree from external tensors, checking every key and shape.

  Args:
    tensors: external name -> array.
    key_map: external name -> ``Entry(parameter path, transpose)``, covering every parameter.
    expected: parameter path -> shape, from the module's own initialisation (``jax.eval_shape``).
    where: the checkpoint's name for messages.
    ignore: external names that may be present and are dropped (buffers, tied copies).
    dtype: floating dtype of the returned arrays.

  Returns:
    the nested dict of numpy arrays.

  Raises:
    InputError: one line naming the missing keys, unexpected keys and mismatched shapes.
  """
  mapped = {entry.path for entry in key_map.values()}
  assert mapped == set(expected), sorted(mapped ^ set(expected))  # the map itself is complete
  missing = [name for name in key_map if name not in tensors]
  unexpected = [name for name in tensors if name not in key_map and not ignore(name)]
  wrong = []
  for name, entry in key_map.items():
    if name in tensors:
      shape = tuple(tensors[name].shape)
      if entry.transpose:
        shape = shape[::-1]
      if shape != tuple(expected[entry.path]):
        want = tuple(expected[entry.path])
        wrong.append(
          f"{name} {tuple(tensors[name].shape)} (expected {want[::-1] if entry.transpose else want})"
        )
  problems = [
    _listed("missing", missing),
    _listed("unexpected", unexpected),
    _listed("wrong shape", wrong),
  ]
  problems = [p for p in problems if p]
  if problems:
    raise InputError(f"{where}: checkpoint does not match the model: {'; '.join(problems)}")
  params: dict = {}
  for name, entry in key_map.items():
    value = np.asarray(tensors[name])
    value = value.T if entry.transpose else value
    if np.issubdtype(value.dtype, np.floating) or value.dtype.kind == "V":  # "V": ml_dtypes.bfloat16
      value = value.astype(dtype)
    node = params
    for part in entry.path[:-1]:
      node = node.setdefault(part, {})
    node[entry.path[-1]] = np.ascontiguousarray(value)
  return params


def _listed(kind: str, names: list[str], show: int = 4) -> str:
  if not names:
    return ""
  more = f", ... ({len(names) - show} more)" if len(names) > show else ""
  return f"{len(names)} {kind} ({', '.join(names[:show])}{more})"


def tensors_from_params(params: Mapping, key_map: Mapping[str, Entry]) -> dict[str, np.ndarray]:
  """The inverse of :func:`params_from_tensors`: external name -> contiguous numpy array."""
  out = {}
  for name, entry in key_map.items():
    node = params
    for part in entry.path:
      node = node[part]
    value = np.asarray(node)
    out[name] = np.ascontiguousarray(value.T if entry.transpose else value)
  return out


def write(folder: str | os.PathLike, config: Mapping, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes ``config.json`` and ``model.safetensors`` (see :func:`write_tensors`), each atomically."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  io.write_json(folder / CONFIG, dict(config))
  write_tensors(folder / SAFETENSORS, tensors)


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes a safetensors file with PyTorch metadata, so transformers' PyTorch classes read it with
  ``from_pretrained``."""
  from safetensors.numpy import save

  io.write_bytes(path, save(dict(tensors), metadata={"format": "pt"}))


def flat_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Parameter path -> shape of a nested dict of arrays (or ``jax.ShapeDtypeStruct``)."""
  out = {}

  def walk(node, prefix):
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, (*prefix, str(k)))
    else:
      out[prefix] = tuple(node.shape)

  walk(tree, ())
  return out


def layer_pattern(prefix: str, names: Iterable[str]) -> Callable[[str], bool]:
  """A predicate matching ``{prefix}{layer}.{name}`` for any layer number and one of ``names``."""
  pattern = re.compile(rf"{re.escape(prefix)}\d+\.(?:{'|'.join(re.escape(n) for n in names)})$")
  return lambda key: pattern.match(key) is not None
