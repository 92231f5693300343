"""Orbax checkpointing for every trainer: the one checkpoint helper.

Usage inside a training loop::

  with Checkpointer(workdir / "checkpoints", save_every=100) as ckpt:
    state, start = ckpt.restore_or(state)          # resume if a checkpoint exists
    for step in range(start, num_steps):
      state, metrics = train_step(state, batch)
      ckpt.maybe_save(step + 1, state)
  # leaving the block waits for the asynchronous save to finish

Restores always go through an abstract target (``StandardRestore``), so optax states come back with their
own types rather than as plain lists and dicts (orbax 0.12 pitfall).

Several processes (``conceptjax.parallel.initialize``): every process builds the ``Checkpointer`` on the same
directory, on a filesystem they all share, and calls ``save``/``restore`` with the same global arrays at the
same steps; orbax writes each shard from a process that holds it and the metadata from process 0, and
commits a step only when every process has written. A restore places the arrays onto the target's
shardings, so a checkpoint written by N processes resumes on any other number (tests/multihost).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from conceptjax.errors import InputError


class Checkpointer:
  """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` keeping the last ``max_to_keep`` steps."""

  def __init__(self, directory: str | os.PathLike, *, save_every: int = 1, max_to_keep: int = 2):
    self.directory = Path(directory).absolute()
    self.save_every = save_every
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` at ``step`` (asynchronously; ``wait`` or leaving the ``with`` block finishes it)."""
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def maybe_save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves when ``step`` is a multiple of ``save_every`` (or ``force``). Returns whether it saved."""
    if force or step % self.save_every == 0:
      self.save(step, state)
      return True
    return False

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores the checkpoint at ``step`` (default latest) into the structure and shardings of ``target``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise InputError(f"no checkpoint to restore in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types; the user needs the path and the cause.
      raise InputError(
        f"unreadable checkpoint {self.directory}/{step}: {type(e).__name__}: {str(e).splitlines()[0]}"
      ) from e

  def restore_or(self, state: Any) -> tuple[Any, int]:
    """Returns (latest checkpoint restored into ``state``'s structure, its step), or (state, 0)."""
    step = self.latest_step()
    if step is None:
      return state, 0
    return self.restore(state, step), step

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
