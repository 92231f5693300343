"""One process of a multi-process test job: ``python tests/multihost/worker.py MODE OUT`` under
``python -m conceptjax.launch``. Process 0 writes what the test compares; every process writes its own rows.

Modes:
  projection: trains the CEIR concept projection with its rows split over the processes' devices.
  vae: joins the runtime, trains the tiny CEIR VAE for ``EPOCHS`` epochs (checkpoints in ``OUT/work``),
    encodes its own rows with the trained state, and maps a function over its own rows (uneven and empty
    shares).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

from conceptjax import ceir, io, parallel

TINY = ceir.VAEConfig(hidden=16, latent=4)
EPOCHS = 2
TRAIN = ceir.TrainConfig(batch_size=32, learning_rate=1e-3, epochs=EPOCHS)
KEY = 4


def tiny_data(n: int = 160, c: int = 6, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32)


def map_inputs() -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(13)
  return rng.normal(size=(13, 6)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)


def map_fn(a, b):
  return jax.numpy.tanh(a @ b)


def vae(out: Path) -> None:
  me = jax.process_index()
  data = tiny_data()
  state, log = ceir.fit_vae(jax.random.key(KEY), data, TINY, TRAIN, workdir=out / "work", save_every=1)
  rows = parallel.process_slice(len(data))
  mean, _ = ceir.encode(state, data[rows], TINY)
  x, w = map_inputs()
  fn = jax.jit(map_fn)
  mapped = parallel.map_batched(fn, (x[parallel.process_slice(len(x))],), (w,))
  one = parallel.map_batched(fn, (x[:1][parallel.process_slice(1)],), (w,))  # process 1 has no row
  io.save_npz(
    out / f"rows_p{me}.npz",
    start=np.int64(rows.start),
    mean=np.asarray(mean),
    mapped=np.asarray(mapped),
    one=np.asarray(one),
  )
  if me == 0:
    leaves = [np.asarray(a.addressable_data(0)) for a in jax.tree.leaves((state.params, state.batch_stats))]
    io.save_npz(out / "state.npz", **{f"leaf{i}": a for i, a in enumerate(leaves)})
    io.write_json(out / "log.json", log)
  print(f"process {me} of {jax.process_count()}: {jax.local_device_count()} of {jax.device_count()} devices")


def projection_data():
  from conceptjax.ceir._synthetic import planted_concepts

  d = planted_concepts(301, feature_dim=8, num_true=4, num_dead=0, num_noise=2, seed=5)  # 201 rows: uneven
  return d.features[:201], d.teacher[:201], d.features[201:], d.teacher[201:]


def projection(out: Path) -> None:
  mesh = parallel.data_mesh()
  assert parallel.spans_processes(mesh)
  cfg = ceir.ProjectionConfig(max_steps=100)
  res = ceir.train_projection(jax.random.key(2), *projection_data(), cfg, mesh=mesh)
  if jax.process_index() == 0:
    io.save_npz(out / "projection.npz", weight=np.asarray(res.weight), sim=np.asarray(res.val_similarity))


def main() -> int:
  mode, out = sys.argv[1], Path(sys.argv[2])
  parallel.initialize(timeout_s=60)
  {"vae": vae, "projection": projection}[mode](out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
