"""Device mesh, batch sharding and the multi-process runtime: the one place every sharded computation goes
through.

Every batch computation in conceptjax is data parallel: the leading (batch) axis of the inputs is split
over a one-dimensional mesh axis named ``"data"`` spanning all devices, everything else is replicated, and
XLA's SPMD partitioner does the rest under ``jax.jit``. A batch whose size is not a multiple of the number
of devices is padded (with copies of its last row, so padded rows are valid inputs) and the outputs are cut
back.

Typical use::

  mesh = parallel.data_mesh()
  out = parallel.map_batched(jitted_fn, (z,), (dictionary,), mesh=mesh)

Past one process (JAX's multi-controller runtime, one process per host; docs/scaling.md): call
``parallel.initialize()`` (or ``initialize_from_args`` behind ``add_distributed_args``) before anything else
touches JAX. ``data_mesh()`` then spans every process's devices, and the batch helpers take and return
*process-local* rows: each process passes only its own rows (``process_slice`` says which of ``N`` rows are
its own), ``shard_batch`` builds the global array with ``jax.make_array_from_process_local_data``, and
``map_batched`` hands each process back the outputs of the rows it passed. With one process nothing changes.
A mesh over ``local_mesh()`` runs a process's work on its own devices with no collective across processes
(for jobs whose processes work on disjoint rows independently, such as the host-driven sparse solvers);
``work_independently()`` makes it the default mesh, and ``barrier(name)`` is the one meeting point such jobs
need (``conceptjax.data.store.fill``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from conceptjax.errors import InputError
from conceptjax.launch import (  # noqa: F401 (add_distributed_args: re-exported, the options are read here)
  ENV_COORDINATOR,
  ENV_NUM_PROCESSES,
  ENV_PROCESS_ID,
  add_distributed_args,
)

DATA_AXIS = "data"

# Exit status of a process that could not join the runtime within its timeout (see ``initialize``).
EXIT_NO_COORDINATOR = 3


# ---------------------------------------------------------------------------------------------------------
# Joining the multi-controller runtime


def initialize(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  timeout_s: float = 300.0,
) -> bool:
  """Joins JAX's multi-controller runtime (``jax.distributed.initialize``), before anything touches JAX.

  Where the settings come from, in order: the arguments; the environment (``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, as set by ``python -m conceptjax.launch``); JAX's own
  cluster detection (SLURM, Open MPI, Cloud TPU pod slices, ...), which fills whatever is still unset.
  Calling it again after a successful join does nothing.

  The runtime's native connect cannot be interrupted and aborts the process with a stack trace when it
  gives up, so it runs in a watchdog thread: a process that has not joined after ``timeout_s`` (coordinator
  unreachable, or not every process started) prints one line to stderr and exits with status
  ``EXIT_NO_COORDINATOR`` (3) at once.

  Args:
    coordinator: ``HOST:PORT`` of process 0's coordinator service (process 0 binds the port).
    num_processes: number of processes in the job.
    process_id: this process's index in ``[0, num_processes)``.
    timeout_s: seconds to wait for every process to join.

  Returns:
    True (the process is part of a runtime of ``jax.process_count()`` processes).

  Raises:
    InputError: malformed settings, no cluster environment detected when none were given, or JAX
      already initialised by an earlier computation.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
  num_processes = _env_int(ENV_NUM_PROCESSES) if num_processes is None else num_processes
  process_id = _env_int(ENV_PROCESS_ID) if process_id is None else process_id
  if coordinator is not None:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
      raise InputError(f"coordinator must be HOST:PORT, got {coordinator!r}")
  if num_processes is not None and num_processes < 1:
    raise InputError(f"num_processes must be >= 1, got {num_processes}")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise InputError(f"process_id must be in [0, {num_processes}), got {process_id}")
  if timeout_s <= 0:
    raise InputError(f"timeout_s must be > 0, got {timeout_s}")
  who = f"process {'?' if process_id is None else process_id} of {num_processes or '?'}"
  where = coordinator or "the detected coordinator"
  outcome: dict[str, BaseException] = {}
  done = threading.Event()

  def join() -> None:
    try:
      jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        # the runtime's own deadline stays past the watchdog's, so the watchdog speaks first
        initialization_timeout=int(timeout_s) + 60,
      )
    except BaseException as e:  # handed to the calling thread
      outcome["error"] = e
    finally:
      done.set()

  threading.Thread(target=join, name="jax-distributed-initialize", daemon=True).start()
  if not done.wait(timeout_s):
    print(
      f"error: {who} could not join the JAX runtime at {where} within {timeout_s:g} s "
      "(is process 0 running and its port reachable, and did every process start?)",
      file=sys.stderr,
      flush=True,
    )
    os._exit(EXIT_NO_COORDINATOR)
  if "error" in outcome:
    e = outcome["error"]
    first = (str(e).strip().splitlines() or [""])[0]
    if "coordinator_address should be defined" in first:
      raise InputError(
        "no cluster environment detected (SLURM, Open MPI, Cloud TPU, ...): "
        "give --coordinator HOST:PORT --num-processes N --process-id I"
      ) from e
    raise InputError(f"{who} cannot join the JAX runtime at {where}: {type(e).__name__}: {first}") from e
  return True


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise InputError(f"environment variable {name} must be an integer, got {value!r}") from None


def initialize_from_args(args: argparse.Namespace) -> bool:
  """Joins the runtime when the options of ``add_distributed_args`` or the launcher's environment ask for it.

  Returns:
    Whether the process joined a runtime (False: a plain single process; nothing was done).
  """
  wanted = (
    args.distributed
    or args.coordinator is not None
    or args.num_processes is not None
    or args.process_id is not None
    or bool(os.environ.get(ENV_COORDINATOR))
  )
  if not wanted:
    return False
  return initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=args.init_timeout)


# ---------------------------------------------------------------------------------------------------------
# Meshes and shardings


@functools.cache
def _cached_mesh(device_ids: tuple[int, ...]) -> Mesh:
  devices = [d for d in jax.devices() if d.id in set(device_ids)]
  if len({d.process_index for d in devices}) > 1:
    # Each process's devices form one contiguous block of the axis: a process's rows of a batch are then
    # one contiguous block too (what ``make_array_from_process_local_data`` and its inverse expect).
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.make_mesh(
    (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


_independent = False  # set by work_independently(): the default mesh is this process's devices


def work_independently(enabled: bool = True) -> None:
  """Makes ``data_mesh()``'s default this process's own devices (``local_mesh()``).

  For batch jobs whose processes each take their own rows and never meet in a collective (``conceptjax
  embed``/``decompose``/``zeroshot``): a process then calls the model and the solvers as often as its own
  rows need, and no process waits for another one's device work.
  """
  global _independent
  _independent = enabled


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all processes, or this
  process's after ``work_independently()``). Cached.

  Auto axis types are used so that jit's partitioner propagates shardings (JAX 0.10 defaults to Explicit).
  """
  if devices is None:
    devices = jax.local_devices() if _independent else jax.devices()
  return _cached_mesh(tuple(d.id for d in devices))


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier ``name`` (the same name on all); no-op alone."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def local_mesh() -> Mesh:
  """``data_mesh`` over this process's own devices: work on it needs no other process."""
  return data_mesh(jax.local_devices())


def spans_processes(mesh: Mesh) -> bool:
  """Whether ``mesh`` holds devices of more than one process (its arrays are then global arrays)."""
  return len({d.process_index for d in mesh.devices.flat}) > 1


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


def _host(a: Any) -> tuple[np.ndarray, Callable[[jax.Array], jax.Array]]:
  """A leaf as numpy, and the function that turns a device array of that numpy back into the leaf's kind
  (typed PRNG keys travel as their key data)."""
  if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
    impl = jax.random.key_impl(a)
    return np.asarray(jax.random.key_data(a)), lambda g: jax.random.wrap_key_data(g, impl=impl)
  return np.asarray(a), lambda g: g


def process_positions(mesh: Mesh, size: int) -> np.ndarray:
  """[size / #processes] positions of a ``size``-long axis split over ``"data"`` that this process's devices
  hold, in the order ``jax.make_array_from_process_local_data`` fills them (``arange(size)`` for one process).
  """
  spans = {
    (s[0].start or 0, size if s[0].stop is None else s[0].stop)
    for s in batch_sharding(mesh).addressable_devices_indices_map((size,)).values()
  }
  return np.concatenate([np.arange(a, b) for a, b in sorted(spans)])


def _global_rows(x: Any, mesh: Mesh) -> tuple[Any, int]:
  """Process-local rows -> global arrays batch-sharded over a mesh that spans processes.

  Processes may pass different row counts (one collective agrees on the largest): each pads its rows to
  that count rounded up to its device count, so the global batch is ``#processes x`` that count.
  """
  leaves = jax.tree.leaves(x)
  n = leaves[0].shape[0] if leaves else 0
  local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  counts = np.asarray(multihost_utils.process_allgather(np.int64(n)))
  per = -(-max(int(counts.max()), 1) // local) * local
  num_proc = mesh.size // local

  def place(a):
    a, back = _host(a)
    if a.shape[0] == 0:  # nothing to do here, but the collective needs this process's share
      padded = np.zeros((per, *a.shape[1:]), a.dtype)
    else:
      padded = np.concatenate([a, np.repeat(a[-1:], per - a.shape[0], axis=0)], axis=0)
    sharding = batch_sharding(mesh, a.ndim)
    return back(jax.make_array_from_process_local_data(sharding, padded, (per * num_proc, *a.shape[1:])))

  return jax.tree.map(place, x), n


def _local_rows(x: Any, mesh: Mesh, n: int) -> Any:
  """Global batch-sharded outputs -> this process's first ``n`` rows (undoes ``_global_rows``)."""

  def take(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      a = multihost_utils.global_array_to_host_local_array(a, mesh, P(DATA_AXIS))
    return a[:n] if np.ndim(a) > 0 else a

  return jax.tree.map(take, x)


def shard_batch(x: Any, mesh: Mesh | None = None) -> tuple[Any, int]:
  """Pads a pytree of batch-leading arrays to the device count and places it sharded over ``"data"``.

  On a mesh that spans processes, ``x`` holds this process's rows only (counts may differ between
  processes); the result is the global array of every process's rows, padded per process.

  Returns:
    (sharded tree, this process's batch size before padding).
  """
  mesh = data_mesh() if mesh is None else mesh
  if spans_processes(mesh):
    return _global_rows(x, mesh)
  x, n = pad_to_multiple(x, mesh.size)
  x = jax.tree.map(lambda a: jax.device_put(a, batch_sharding(mesh, np.ndim(a))), x)
  return x, n


def replicate(x: Any, mesh: Mesh | None = None) -> Any:
  """Places a pytree fully replicated on every device of ``mesh``.

  On a mesh that spans processes every process must pass the same values (host data, or arrays already
  global).
  """
  mesh = data_mesh() if mesh is None else mesh
  if not spans_processes(mesh):
    return jax.device_put(x, replicated(mesh))
  sharding = replicated(mesh)

  def place(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return a if a.sharding.is_equivalent_to(sharding, a.ndim) else jax.device_put(a, sharding)
    host, back = _host(a)
    return back(jax.device_put(host, sharding))

  return jax.tree.map(place, x)


def to_host(x: Any) -> Any:
  """A pytree of arrays on the host as numpy. Replicated global arrays (a mesh over several processes)
  give the copy on this process's first device; other arrays are fetched whole."""

  def fetch(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(a.addressable_data(0))
    return jax.device_get(a)

  return jax.tree.map(fetch, x)


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

  On a mesh that spans processes every process calls ``map_batched`` the same number of times, each with
  its own rows (``B`` may differ per process; ``shared`` must be equal), and gets back the outputs of its
  own rows, on its own devices. Collect them on every process with
  ``jax.experimental.multihost_utils.process_allgather`` where needed.
  """
  mesh = data_mesh() if mesh is None else mesh
  batched, n = shard_batch(tuple(batched), mesh)
  shared = replicate(tuple(shared), mesh)
  out = fn(*batched, *shared)
  return _local_rows(out, mesh, n) if spans_processes(mesh) else unpad(out, n)


def process_slice(num_rows: int, index: int | None = None, count: int | None = None) -> slice:
  """The rows ``[start, stop)`` this process owns when ``num_rows`` are split over all processes.

  Contiguous blocks in process order, sizes differing by at most one (``num_rows`` for one process).
  ``index``/``count`` default to ``jax.process_index()``/``jax.process_count()``.
  """
  p = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  per, extra = divmod(num_rows, count)
  start = p * per + min(p, extra)
  return slice(start, start + per + (p < extra))
