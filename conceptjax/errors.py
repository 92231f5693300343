"""The project's user-facing error type.

Anything a user can get wrong (a path, a shape, a value) raises :class:`InputError` with one line naming
what is wrong. The CLI prints that line and exits with status 2 instead of a traceback.
"""


class InputError(ValueError):
  """Bad input detected at a boundary: the message is one line naming the path, row, shape or value."""


def check(condition: bool, message: str) -> None:
  """Raises ``InputError(message)`` unless ``condition`` holds."""
  if not condition:
    raise InputError(message)
