"""Functions shared by experiment configs."""

from __future__ import annotations

import ast

import ml_collections

from conceptjax.errors import check


def parse_arg(arg: str, **defaults):
  """Parses ``"key=value,key2=value2"`` over ``defaults`` into a ConfigDict of typed values.

  Values are Python literals (``3``, ``0.5``, ``True``, ``'text'``); anything else is kept as a string.
  Each value must fit its default's type (``true``/``false`` are accepted for booleans; ``seed=1.5`` is an
  error, not ``1``). Unknown keys are rejected so that a typo does not silently run the default. Errors are
  ``InputError`` (one line).
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, sep, value = item.partition("=")
    check(sep, f"config argument {item!r} is not key=value")
    check(key in defaults, f"unknown config argument {key!r}; known: {sorted(defaults)}")
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
    out[key] = _coerce(key, parsed, defaults[key])
  return out


def _coerce(key: str, value, default):
  """``value`` as the type of ``default`` (``InputError`` naming the key when it does not fit)."""
  bad = f"config argument {key}={value!r} is not a {type(default).__name__} (default {default!r})"
  if default is None:
    return value
  if isinstance(default, bool):
    if isinstance(value, str) and value.lower() in ("true", "false"):
      return value.lower() == "true"
    check(isinstance(value, bool) or value in (0, 1), bad)
    return bool(value)
  if isinstance(default, int):
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value), bad)
    return int(value)
  if isinstance(default, float):
    check(isinstance(value, (int, float)) and not isinstance(value, bool), bad)
    return float(value)
  if isinstance(default, (tuple, list)):
    check(isinstance(value, (tuple, list)), bad)
    return type(default)(value)
  return type(default)(value)
