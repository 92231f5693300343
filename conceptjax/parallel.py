"""Device mesh and batch sharding: the one place every sharded computation goes through.

Every batch computation in conceptjax is data parallel: the leading (batch) axis of the inputs is split
over a one-dimensional mesh axis named ``"data"`` spanning all devices, everything else is replicated, and
XLA's SPMD partitioner does the rest under ``jax.jit``. A batch whose size is not a multiple of the number
of devices is padded (with copies of its last row, so padded rows are valid inputs) and the outputs are cut
back.

Typical use::

  mesh = parallel.data_mesh()
  out = parallel.map_batched(jitted_fn, (z,), (dictionary,), mesh=mesh)

Multi-host: call ``jax.distributed.initialize()`` before anything else; ``data_mesh()`` then spans every
process's devices, and each process feeds its own slice (see ``process_slice``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


@functools.cache
def _cached_mesh(device_ids: tuple[int, ...]) -> Mesh:
  devices = [d for d in jax.devices() if d.id in set(device_ids)]
  return jax.make_mesh(
    (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices). Cached per device set.

  Auto axis types are used so that jit's partitioner propagates shardings (JAX 0.10 defaults to Explicit).
  """
  devices = jax.devices() if devices is None else list(devices)
  return _cached_mesh(tuple(d.id for d in devices))


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Sharding that splits axis 0 over ``"data"`` and replicates the other ``ndim - 1`` axes."""
  return NamedSharding(mesh, P(DATA_AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that puts a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def pad_to_multiple(x: Any, multiple: int) -> tuple[Any, int]:
  """Pads the leading axis of every leaf to a multiple of ``multiple`` by repeating the last row.

  Returns:
    (padded tree, original batch size). Repeating a real row keeps padded inputs valid (no zero-norm or
    NaN rows reach a solver).
  """
  leaves = jax.tree.leaves(x)
  if not leaves:
    return x, 0
  n = leaves[0].shape[0]
  pad = (-n) % multiple
  if pad == 0:
    return x, n

  def _pad(a):
    a = jnp.asarray(a) if not isinstance(a, np.ndarray) else a
    xp = np if isinstance(a, np.ndarray) else jnp
    return xp.concatenate([a, xp.repeat(a[-1:], pad, axis=0)], axis=0)

  return jax.tree.map(_pad, x), n


def shard_batch(x: Any, mesh: Mesh | None = None) -> tuple[Any, int]:
  """Pads a pytree of batch-leading arrays to the device count and places it sharded over ``"data"``.

  Returns:
    (sharded tree, original batch size).
  """
  mesh = data_mesh() if mesh is None else mesh
  x, n = pad_to_multiple(x, mesh.size)
  x = jax.tree.map(lambda a: jax.device_put(a, batch_sharding(mesh, np.ndim(a))), x)
  return x, n


def replicate(x: Any, mesh: Mesh | None = None) -> Any:
  """Places a pytree fully replicated on every device of ``mesh``."""
  mesh = data_mesh() if mesh is None else mesh
  return jax.device_put(x, replicated(mesh))


def unpad(x: Any, n: int) -> Any:
  """Cuts the leading axis of every leaf back to ``n`` rows (undoes ``pad_to_multiple``)."""
  return jax.tree.map(lambda a: a[:n] if np.ndim(a) > 0 else a, x)


def map_batched(
  fn: Callable[..., Any],
  batched: Sequence[Any],
  shared: Sequence[Any] = (),
  *,
  mesh: Mesh | None = None,
) -> Any:
  """Calls ``fn(*batched, *shared)`` with ``batched`` split over devices and ``shared`` replicated.

  ``fn`` should be jit-compiled (its static settings bound, e.g. with functools.partial). Every leaf of
  every ``batched`` argument must share the leading batch size ``B``; every leaf of the output must have
  leading axis ``B`` too (it is cut back after padding).
  """
  mesh = data_mesh() if mesh is None else mesh
  batched, n = shard_batch(tuple(batched), mesh)
  shared = replicate(tuple(shared), mesh)
  return unpad(fn(*batched, *shared), n)


def process_slice(num_rows: int) -> slice:
  """The rows ``[start, stop)`` this process owns when ``num_rows`` are split over all processes."""
  per = -(-num_rows // jax.process_count())
  start = min(jax.process_index() * per, num_rows)
  return slice(start, min(start + per, num_rows))
