"""Content fingerprints of what made a store or a cache file, and the check that consumers run on them.

Every output records the fingerprints of its inputs: an embedding store records its model's (the
parameters' content, not the model's name or path); decomposed codes record their model's, their
vocabulary's and their input store's; cached dictionaries and image means are keyed by them. A consumer
compares what a file records with what it is given (:func:`check_same`): a mismatch is one ``InputError``
line naming both sides, unless the user passes ``--allow-mismatch`` (then it is a one-line warning).

A fingerprint is a sha256 hex digest. Messages show its first 12 digits.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from conceptjax.errors import InputError

SHOWN = 12  # hex digits of a fingerprint shown in messages

# id(bundle) -> (bundle, fingerprint): the bundle is held so that its id cannot be reused by another object.
_MODEL_FINGERPRINTS: dict[int, tuple[Any, str]] = {}


def fingerprint(*parts: str | bytes) -> str:
  """A 16-hex-digit key from text or byte parts (sha256; separated: ("ab", "c") != ("a", "bc"))."""
  h = hashlib.sha256()
  for p in parts:
    h.update(p.encode("utf-8") if isinstance(p, str) else p)
    h.update(b"\0")
  return h.hexdigest()[:16]


def _update_array(h: Any, name: str, a: np.ndarray) -> None:
  a = np.ascontiguousarray(a)
  h.update(json.dumps([name, str(a.dtype), list(a.shape)]).encode("utf-8"))
  h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode("utf-8"))


def params_fingerprint(params: Any) -> str:
  """sha256 over the sorted (path, dtype, shape, bytes) of a parameter pytree's leaves (fetched to host).

  Two models with equal parameters have the same fingerprint whatever their names, paths or shardings.
  """
  import jax

  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  h = hashlib.sha256()
  for path, leaf in sorted(((jax.tree_util.keystr(p), x) for p, x in leaves), key=lambda t: t[0]):
    _update_array(h, path, np.asarray(leaf))
  return h.hexdigest()


def model_fingerprint(model: Any) -> str:
  """``params_fingerprint(model.params)``, computed once per model object in a process."""
  hit = _MODEL_FINGERPRINTS.get(id(model))
  if hit is not None and hit[0] is model:
    return hit[1]
  fp = params_fingerprint(model.params)
  _MODEL_FINGERPRINTS[id(model)] = (model, fp)
  return fp


def concepts_fingerprint(concepts: Iterable[str]) -> str:
  """sha256 of a concept list, in order (one concept per line, UTF-8)."""
  return hashlib.sha256("".join(f"{c}\n" for c in concepts).encode("utf-8")).hexdigest()


def arrays_fingerprint(arrays: Mapping[str, Any]) -> str:
  """sha256 over the sorted (name, dtype, shape, bytes) of named arrays (a store chunk's content)."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    _update_array(h, name, np.asarray(arrays[name]))
  return h.hexdigest()


def combine(*parts: Any) -> str:
  """sha256 of JSON-serialisable parts (e.g. a list of chunk fingerprints and a row count)."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def short(fp: str | None) -> str:
  return "unrecorded" if not fp else fp[:SHOWN]


def check_same(
  what: str, recorded: str | None, given: str | None, recorded_side: str, given_side: str, allow: bool = False
) -> None:
  """Checks that a recorded fingerprint equals the one of what is given now.

  Args:
    what: the kind of input compared ("model", "vocabulary", "embedding store").
    recorded: the fingerprint a file records (None: the file predates fingerprints; nothing is checked).
    given: the fingerprint of the input given now.
    recorded_side: names the recording file, e.g. "embeddings in out/emb".
    given_side: names the given input, e.g. "--model clip_dir".
    allow: the user's override (``--allow-mismatch``): warn in one line instead of raising.

  Raises:
    InputError: one line naming both sides and both fingerprints, and the override flag.
  """
  if recorded is None or given is None or recorded == given:
    return
  line = (
    f"{what} mismatch: {recorded_side} were made with {what} {short(recorded)}, "
    f"but {given_side} is {what} {short(given)}"
  )
  if allow:
    warnings.warn(f"{line} (used anyway: --allow-mismatch)", stacklevel=2)
    return
  raise InputError(f"{line}; pass the matching {what}, or --allow-mismatch to use them anyway")
