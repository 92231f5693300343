"""The project's user-facing error type.

Anything a user can get wrong (a path, a shape, a value) raises :class:`InputError` with one line naming
what is wrong. The CLI prints that line and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class InputError(ValueError):
  """Bad input detected at a boundary: the message is one line naming the path, row, shape or value."""


def check(condition: bool, message: str) -> None:
  """Raises ``InputError(message)`` unless ``condition`` holds."""
  if not condition:
    raise InputError(message)


def check_finite(x: Any, what: str) -> None:
  """InputError naming the first row of ``x`` that holds NaN or Inf."""
  bad = ~np.isfinite(np.asarray(x))
  if bad.any():
    raise InputError(f"{what}: row {int(np.argwhere(bad)[0][0])} holds NaN or Inf")


def check_rows(x: Any, what: str) -> np.ndarray:
  """Validates an embedding matrix: 2-D [N, d], finite, no zero-norm row (each named by its index).

  Returns:
    ``x`` as float32 numpy.
  """
  x = np.asarray(x, np.float32)
  check(x.ndim == 2, f"{what}: expected a 2-D [N, d] array, got shape {x.shape}")
  check_finite(x, what)
  norms = np.linalg.norm(x, axis=1)
  if x.shape[0] and norms.min() == 0:
    raise InputError(f"{what}: row {int(np.argmin(norms))} has zero norm")
  return x
