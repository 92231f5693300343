"""Helpers shared by experiment configs."""

from __future__ import annotations

import ast

import ml_collections


def parse_arg(arg: str, **defaults):
  """Parses ``"key=value,key2=value2"`` over ``defaults`` into a ConfigDict of typed values.

  Values are Python literals (``3``, ``0.5``, ``True``, ``'text'``); anything else is kept as a string.
  Unknown keys are rejected so that a typo does not silently run the default.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (s.strip() for s in (arg or "").split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"config argument {item!r} is not key=value")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
    out[key] = type(defaults[key])(parsed) if defaults[key] is not None else parsed
  return out
