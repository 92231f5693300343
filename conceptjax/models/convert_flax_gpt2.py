"""Converts a GPT-2 folder saved by transformers' Flax class (flax_model.msgpack) to model.safetensors.

transformers 4.x ``FlaxGPT2LMHeadModel.save_pretrained`` wrote ``flax_model.msgpack`` with the parameter
tree this project's :class:`conceptjax.models.gpt2.GPT2LMHead` uses, except that its ``Conv1D`` kernels
are stored [out, in]. The msgpack is read with ``flax.serialization.msgpack_restore`` (no transformers
class), the kernels are transposed, and the weights are written in PyTorch naming beside the folder's
``config.json``; the result is loaded back and compared before the msgpack is removed. The shipped
``conceptjax/assets/shapesworld_lm`` was converted this way (2026-12-04)::

  python -m conceptjax.models.convert_flax_gpt2 conceptjax/assets/shapesworld_lm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from conceptjax.errors import InputError, check
from conceptjax.models import gpt2, hf

MSGPACK = "flax_model.msgpack"


def params_from_flax_tree(tree: dict) -> dict:
  """transformers' Flax GPT-2 tree -> this project's tree (``Conv1D`` kernels [out, in] -> [in, out])."""

  def convert(node, path):
    if isinstance(node, dict):
      return {k: convert(v, (*path, k)) for k, v in node.items()}
    value = np.asarray(node, np.float32)
    return value.T.copy() if path[0] == "transformer" and path[-1] == "kernel" else value

  return convert(tree, ())


def convert(folder: str | Path, *, keep: bool = False) -> Path:
  """Writes ``folder/model.safetensors`` from ``folder/flax_model.msgpack`` and removes the msgpack.

  Args:
    folder: a folder with ``config.json`` and ``flax_model.msgpack``.
    keep: keep the msgpack.

  Returns:
    the path of the written ``model.safetensors``.
  """
  from flax.serialization import msgpack_restore

  folder = Path(folder)
  check((folder / MSGPACK).is_file(), f"{folder}: no {MSGPACK} to convert")
  config = gpt2.GPT2Config.from_hf(hf.read_config(folder), str(folder / hf.CONFIG))
  tree = msgpack_restore((folder / MSGPACK).read_bytes())
  params = params_from_flax_tree(tree.get("params", tree))
  # Through the checking loader first: every key and shape of the msgpack must fit the config.
  tensors = hf.tensors_from_params(params, gpt2.key_map(config))
  gpt2.params_from_hf(tensors, config, str(folder / MSGPACK))
  hf.write_tensors(folder / hf.SAFETENSORS, tensors)
  _, back = gpt2.load_params(folder)
  reread = hf.tensors_from_params(back, gpt2.key_map(config))
  check(
    all(np.array_equal(tensors[k], reread[k]) for k in tensors), f"{folder}: conversion did not round-trip"
  )
  if not keep:
    (folder / MSGPACK).unlink()
  return folder / hf.SAFETENSORS


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("folder")
  parser.add_argument("--keep", action="store_true", help=f"keep {MSGPACK}")
  args = parser.parse_args(argv)
  try:
    print(convert(args.folder, keep=args.keep))
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
