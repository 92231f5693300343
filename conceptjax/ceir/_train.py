"""VAE training: a jit-compiled epoch (one ``lax.scan`` over batches), data parallel over all devices of all
processes, orbax checkpoints with resume, JSONL logs.

Two ways to feed an epoch, same batches and same result (to float rounding):

- resident (one process, default): the data sit replicated on every device; each step gathers its batch
  with indices split over the ``"data"`` mesh axis.
- streamed (default when the mesh spans processes, or ``stream=True``): each process gathers, on the host,
  only the rows its own devices hold of each batch of the epoch (``parallel.process_positions``) and the
  epoch's global ``[num_batches, batch_size, c]`` array is assembled with
  ``jax.make_array_from_process_local_data``. A process reads ``N / #processes`` rows per epoch, so ``data``
  may be a ``numpy.memmap`` on a shared filesystem.

Either way every device computes the forward/backward pass of its slice of the batch and XLA inserts the
gradient and BatchNorm all-reduces. Batch order depends only on the key and the epoch number, so results
do not depend on the number of devices or processes, and a resumed run repeats the uninterrupted one, on
any process count (checkpoints are written by all processes together and restored onto the current mesh).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conceptjax import parallel
from conceptjax.ceir._vae import VAE, VAEConfig, vae_loss, vae_loss_terms
from conceptjax.checkpoint import Checkpointer
from conceptjax.errors import check
from conceptjax.io import JsonlWriter


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Static training settings (authors' defaults: batch 256, Adam lr 5e-5, 450 epochs).

  Attributes:
    batch_size: global batch (a multiple of the device count); the last incomplete batch of each shuffled
      epoch is dropped so every step has the same shape.
    learning_rate: Adam step size.
    epochs: epochs to train in total (a resumed run continues up to this number).
  """

  batch_size: int = 256
  learning_rate: float = 5e-5
  epochs: int = 450


class TrainState(NamedTuple):
  params: Any  # flax params pytree
  batch_stats: Any  # BatchNorm running statistics
  opt_state: optax.OptState
  epoch: jax.Array  # [] int32, epochs completed


class EpochMetrics(NamedTuple):
  loss: jax.Array  # [] mean over the epoch's steps
  recon: jax.Array  # []
  kl: jax.Array  # []


def init_state(
  key: jax.Array, input_dim: int, model_config: VAEConfig, train_config: TrainConfig
) -> TrainState:
  """Fresh parameters (flax default initialisers), BatchNorm statistics and Adam state."""
  model = VAE(input_dim, model_config)
  variables = model.init(key, jnp.zeros((2, input_dim)), key, train=False)
  params = variables["params"]
  opt_state = optax.adam(train_config.learning_rate).init(params)
  return TrainState(params, variables["batch_stats"], opt_state, jnp.int32(0))


def epoch_indices(key: jax.Array, epoch: int, num_rows: int, batch_size: int) -> np.ndarray:
  """[num_batches, batch_size] row indices of one shuffled epoch (depends only on ``key`` and ``epoch``)."""
  nb = num_rows // batch_size
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_rows)
  return np.asarray(perm[: nb * batch_size]).reshape(nb, batch_size)


@functools.partial(jax.jit, static_argnames=("input_dim", "model_config", "train_config"), donate_argnums=0)
def train_epoch(
  state: TrainState,
  data: jax.Array,
  indices: jax.Array | None,
  key: jax.Array,
  *,
  input_dim: int,
  model_config: VAEConfig,
  train_config: TrainConfig,
) -> tuple[TrainState, EpochMetrics]:
  """One epoch as one ``lax.scan`` over batches.

  Args:
    state: TrainState (donated).
    data: [N, c] training concept scores, on device (replicated over the mesh); or, with ``indices=None``,
      the epoch's rows in batch order, [num_batches, batch_size, c] (axis 1 split over ``"data"``; built by
      ``epoch_batches``).
    indices: [num_batches, batch_size] int32 row indices (axis 1 split over the mesh's ``"data"`` axis), or
      None.
    key: PRNG key for the reparameterisation noise of this epoch.

  Returns:
    (new state, EpochMetrics averaged over the epoch's steps).
  """
  model = VAE(input_dim, model_config)
  opt = optax.adam(train_config.learning_rate)
  grad_fn = jax.value_and_grad(vae_loss, has_aux=True)

  def body(carry, inp):
    params, batch_stats, opt_state = carry
    i, b = inp
    x = b if indices is None else data[b]
    (loss, (terms, batch_stats)), grads = grad_fn(params, batch_stats, x, jax.random.fold_in(key, i), model)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, batch_stats, opt_state), jnp.stack([loss, terms["recon"], terms["kl"]])

  xs = data if indices is None else indices
  (params, batch_stats, opt_state), m = jax.lax.scan(
    body, (state.params, state.batch_stats, state.opt_state), (jnp.arange(xs.shape[0]), xs)
  )
  m = jnp.mean(m, axis=0)
  return TrainState(params, batch_stats, opt_state, state.epoch + 1), EpochMetrics(m[0], m[1], m[2])


def epoch_batches(data, indices: np.ndarray, mesh) -> jax.Array:
  """The epoch's global [num_batches, batch_size, c] float32 array; this process reads only its own rows.

  Args:
    data: [N, c] rows (a numpy array or memmap; only the rows this process's devices hold are read).
    indices: [num_batches, batch_size] row indices of the epoch (the same on every process).
    mesh: the training mesh; axis 1 of the result is split over its ``"data"`` axis.
  """
  cols = parallel.process_positions(mesh, indices.shape[1])
  local = np.asarray(data[indices[:, cols]], np.float32)  # [num_batches, batch_size / #processes, c]
  sharding = NamedSharding(mesh, P(None, parallel.DATA_AXIS, None))
  return jax.make_array_from_process_local_data(sharding, local, (*indices.shape, data.shape[1]))


@functools.partial(jax.jit, static_argnames=("input_dim", "model_config"))
def _encode(params, batch_stats, x, *, input_dim: int, model_config: VAEConfig):
  model = VAE(input_dim, model_config)
  return model.apply({"params": params, "batch_stats": batch_stats}, x, method=VAE.encode)


def encode(
  state: TrainState, x: np.ndarray, model_config: VAEConfig, *, mesh=None
) -> tuple[jax.Array, jax.Array]:
  """Eval-mode encoder (BatchNorm running statistics): [N, c] -> (mean [N, k], logvar [N, k]).

  The latent representation of CEIR is ``mean``. Rows are sharded over all devices of ``mesh``.
  """
  fn = functools.partial(_encode, input_dim=x.shape[1], model_config=model_config)
  return parallel.map_batched(lambda x, p, b: fn(p, b, x), (x,), (state.params, state.batch_stats), mesh=mesh)


@functools.partial(jax.jit, static_argnames=("input_dim", "model_config"))
def _eval_loss(params, batch_stats, x, key, *, input_dim: int, model_config: VAEConfig):
  model = VAE(input_dim, model_config)
  logits, mean, logvar = model.apply({"params": params, "batch_stats": batch_stats}, x, key, train=False)
  return vae_loss_terms(logits, mean, logvar, x, model_config)


def fit_vae(
  key: jax.Array,
  data: np.ndarray,
  model_config: VAEConfig = VAEConfig(),  # noqa: B008 (frozen dataclass)
  train_config: TrainConfig = TrainConfig(),  # noqa: B008
  *,
  workdir: str | Path | None = None,
  save_every: int = 10,
  val_data: np.ndarray | None = None,
  mesh=None,
  stream: bool | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
  """Trains the VAE on ``data`` [N, c] (z-scored concept scores).

  With ``workdir`` the state is checkpointed under ``workdir/checkpoints`` every ``save_every`` epochs and at
  the end, training resumes from the latest checkpoint, and one JSON line per epoch goes to
  ``workdir/vae_log.jsonl`` (epoch, loss, recon, kl, seconds, and val_loss when ``val_data`` is given).

  Several processes (``parallel.initialize``): every process calls ``fit_vae`` with the same arguments;
  ``data`` must be readable by all (e.g. a memmap on a shared filesystem), and with ``stream`` each reads
  and validates only its own rows. Checkpoints are written by all processes together (the workdir must be
  shared) and resume on any process count; process 0 writes the log. The returned state is replicated
  over ``mesh`` (global arrays: read a leaf with ``leaf.addressable_data(0)``).

  Args:
    key: PRNG key (initialisation, shuffling and noise all derive from it).
    data: [N, c] float training rows.
    val_data: optional [M, c] rows whose eval-mode loss is logged each epoch (never used for stopping).
    mesh: device mesh (default: all devices of all processes).
    stream: feed each epoch from the host (see the module docstring); default: exactly when ``mesh`` spans
      processes. Same batches and results either way.

  Returns:
    (final TrainState, list of this call's per-epoch log records).
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  multi = parallel.spans_processes(mesh)
  stream = multi if stream is None else stream
  if not stream or not hasattr(data, "shape"):
    data = np.asarray(data, np.float32)
  check(len(data.shape) == 2, f"VAE data must be [N, c], got shape {data.shape}")
  n, c = data.shape
  own = parallel.process_slice(n) if stream else slice(0, n)  # with stream, together the processes check all
  bad = ~np.isfinite(np.asarray(data[own], np.float32)).all(1)
  check(not bad.any(), f"VAE data has NaN/Inf in row {own.start + int(np.argmax(bad))}")
  bs = train_config.batch_size
  check(bs % mesh.size == 0, f"batch_size {bs} is not a multiple of the device count {mesh.size}")
  check(n >= bs, f"VAE data has {n} rows, fewer than one batch of {bs}")
  init_key, shuffle_key, noise_key = jax.random.split(key, 3)
  state = parallel.replicate(init_state(init_key, c, model_config, train_config), mesh)
  idx_sharding = NamedSharding(mesh, P(None, parallel.DATA_AXIS))
  # ``epochs`` does not change an epoch's computation: keep it out of the jit cache key.
  static_train = dataclasses.replace(train_config, epochs=0)
  step = functools.partial(train_epoch, input_dim=c, model_config=model_config, train_config=static_train)
  data_dev = None if stream else parallel.replicate(data, mesh)
  # keys and validation rows go to the mesh explicitly (a jit over global arrays cannot move local ones)
  place = functools.partial(parallel.replicate, mesh=mesh) if multi else lambda x: x
  val_dev = None if val_data is None else place(jnp.asarray(val_data, jnp.float32))
  log: list[dict[str, float]] = []
  ckpt = Checkpointer(Path(workdir) / "checkpoints", save_every=save_every) if workdir else None
  writer = JsonlWriter(Path(workdir) / "vae_log.jsonl") if workdir and jax.process_index() == 0 else None
  try:
    start = 0
    if ckpt is not None:
      state, start = ckpt.restore_or(state)
      if writer is not None:
        writer.drop_after("epoch", start)  # epochs logged after the checkpoint a killed run resumes from
    for epoch in range(start, train_config.epochs):
      t0 = time.perf_counter()
      idx = epoch_indices(shuffle_key, epoch, n, bs)
      epoch_key = place(jax.random.fold_in(noise_key, epoch))
      if stream:
        state, m = step(state, epoch_batches(data, idx, mesh), None, epoch_key)
      else:
        state, m = step(state, data_dev, jax.device_put(idx, idx_sharding), epoch_key)
      record = {"epoch": epoch + 1, "loss": _scalar(m.loss), "recon": _scalar(m.recon), "kl": _scalar(m.kl)}
      if val_dev is not None:
        vloss, _ = _eval_loss(
          state.params, state.batch_stats, val_dev, place(noise_key), input_dim=c, model_config=model_config
        )
        record["val_loss"] = _scalar(vloss)
      record["seconds"] = round(time.perf_counter() - t0, 4)
      log.append(record)
      if writer is not None:
        writer.write(record)
      if ckpt is not None:
        ckpt.maybe_save(epoch + 1, state, force=epoch + 1 == train_config.epochs)
  finally:
    if ckpt is not None:
      ckpt.close()
    if writer is not None:
      writer.close()
  return state, log


def _scalar(x: jax.Array) -> float:
  """A replicated scalar as a float (read from this process's first device: works for global arrays)."""
  return float(x.addressable_data(0))
