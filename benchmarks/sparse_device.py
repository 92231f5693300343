"""``nonneg_lasso``'s two working-set paths (host loop, device program) against the dense product's floor.

Per problem and path: the first call (compilation included) and the median of warm calls, the floor (one
dense ``(B x d) @ (d x c)`` product, over all chunks for the chunked problem) at three precisions (float32
HIGHEST, DEFAULT: TF32 on NVIDIA GPUs, one bf16 pass on TPUs, float32 on CPUs; bfloat16 inputs), the
ratios to the floor, the largest KKT violation the solver reports and a float64 numpy recomputation of it
on up to ``check_rows`` rows, and the peak memory: the device's ``peak_bytes_in_use`` where
``memory_stats()`` has it (a peak over the process so far, so problems run smallest first), else the peak
resident memory of the process.

Presets (``--preset``): ``gpu`` (the default: the problems of ``benchmarks/sparse_solvers.py`` (a), (b),
(c) and 1,048,576 rows against the coherent 10,000 x 512 dictionary of (b), streamed in chunks sized by
the default memory budget; the host path is skipped on the 1M problem, where it takes minutes; written to
run within 5 minutes on one H200), ``tiny`` (seconds on CPU; the tests run it).

``--scaling`` instead solves N = 10^4 ... 10^6 rows (d=64, 3,000 coherent concepts) chunk by chunk
(``nonneg_lasso_chunks``, results checked and dropped) and records rows per second and the peak resident
memory above the level before each run (sampled every 20 ms): both should stay flat as N grows.

Usage::

  python -m benchmarks.sparse_device --out benchmarks/results               # one GPU, < 5 min
  python -m benchmarks.sparse_device --preset tiny --out /tmp/bench
  python -m benchmarks.sparse_device --scaling --rows 10000,100000,1000000 --out benchmarks/results

Writes ``sparse_device.json`` (or ``sparse_device_scaling.json``) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import benchmarking, io, sparse
from conceptjax.sparse import synthetic


@dataclasses.dataclass(frozen=True)
class Spec:
  """One problem: dictionary kind and sizes; ``paths`` the working-set paths timed on it."""

  name: str
  dictionary: str  # "gaussian" | "coherent"
  batch: int
  concepts: int
  dim: int
  lam: float = 0.25
  seed: int = 0
  paths: tuple[str, ...] = ("host", "device")
  memory_budget: int | None = None  # None: nonneg_lasso's default
  repeats: int = 3


_ISSUE = dict(concepts=10_000, dim=512)
PRESETS: dict[str, tuple[Spec, ...]] = {
  "gpu": (
    Spec("a", "gaussian", batch=256, **_ISSUE),
    Spec("b", "coherent", batch=256, **_ISSUE),
    Spec("c", "coherent", batch=1024, concepts=37_445, dim=512),
    Spec("1M", "coherent", batch=1 << 20, **_ISSUE, paths=("device",), repeats=1),
  ),
  "tiny": (
    Spec("a", "gaussian", batch=16, concepts=400, dim=32, repeats=2),
    Spec("b", "coherent", batch=16, concepts=400, dim=32, repeats=2),
    # three chunks of the others' shape (a budget of 16 rows)
    Spec(
      "chunked",
      "coherent",
      batch=40,
      concepts=400,
      dim=32,
      repeats=1,
      memory_budget=16 * sparse.row_bytes("working_set", 400, 32, 48),
    ),
  ),
}


def make_problem(spec: Spec, block: int = 65_536) -> tuple[jax.Array, np.ndarray]:
  """(dictionary [c, d] on the device, embeddings [B, d] numpy float32), a pure function of ``spec``;
  the embeddings drawn ``block`` rows at a time (each block its own key)."""
  k_dict, k_emb = jax.random.split(jax.random.key(spec.seed))
  make = {"gaussian": synthetic.gaussian_dictionary, "coherent": synthetic.coherent_dictionary}
  dictionary = make[spec.dictionary](k_dict, spec.concepts, spec.dim, dtype=jnp.float32)
  blocks = []
  for i, start in enumerate(range(0, spec.batch, block)):
    n = min(block, spec.batch - start)
    key = k_emb if spec.batch <= block else jax.random.fold_in(k_emb, i)
    blocks.append(np.asarray(synthetic.sparse_embeddings(key, dictionary, n).embeddings))
  return dictionary, np.concatenate(blocks)


@jax.jit
def _product_highest(z, c):
  return jnp.matmul(z, c.T, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def _product_default(z, c):
  return jnp.matmul(z, c.T, precision=jax.lax.Precision.DEFAULT)


@jax.jit
def _product_bf16(z, c):
  return jnp.matmul(z.astype(jnp.bfloat16), c.T.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


_PRODUCTS = {"highest": _product_highest, "default": _product_default, "bfloat16": _product_bf16}


def floors(dictionary: jax.Array, embeddings: np.ndarray, rows: int, repeats: int) -> dict[str, float]:
  """Seconds of the dense product over all rows, in chunks of ``rows`` (on the device), per precision."""
  chunk = jnp.asarray(embeddings[:rows])
  n_chunks = -(-embeddings.shape[0] // rows)
  out = {}
  for name, product in _PRODUCTS.items():
    timing, _ = benchmarking.time_call(
      lambda p=product: [p(chunk, dictionary) for _ in range(n_chunks)], repeats=max(repeats, 3)
    )
    out[name] = timing.median_s
  return out


def kkt64(dictionary: np.ndarray, z: np.ndarray, indices: np.ndarray, values: np.ndarray, lam: float):
  """[n] float64 KKT violation of sparse rows (``indices`` padded with -1)."""
  c64, z64 = dictionary.astype(np.float64), z.astype(np.float64)
  w = np.zeros((z.shape[0], c64.shape[0]))
  rows = np.broadcast_to(np.arange(z.shape[0])[:, None], indices.shape)
  keep = indices >= 0
  w[rows[keep], indices[keep]] = values[keep]
  g = 2.0 * (w @ c64 - z64) @ c64.T + lam
  return np.maximum(np.max(np.maximum(-g, 0), axis=1), np.max(np.where(w > 0, np.abs(g), 0), axis=1))


def peak_memory() -> tuple[float, str]:
  """(MiB, source): the first device's peak bytes in use where reported, else the peak RSS."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001  (not every backend implements memory_stats)
    stats = {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device peak_bytes_in_use"
  return benchmarking.peak_rss_mb(), "process peak RSS"


def run_problem(spec: Spec, check_rows: int, log) -> dict[str, Any]:
  dictionary, z = make_problem(spec)
  c_np = np.asarray(dictionary)
  b, c, d = z.shape[0], spec.concepts, spec.dim
  budget = sparse.default_memory_budget() if spec.memory_budget is None else spec.memory_budget
  rows = min(b, budget // sparse.row_bytes("working_set", c, d, 48))
  floor = floors(dictionary, z, rows, spec.repeats)
  floor_text = ", ".join(f"{k} {v:.4f} s" for k, v in floor.items())
  log(f"[{spec.name}] B={b} c={c} d={d}, chunks of {rows}: floor {floor_text}")
  record = {"spec": dataclasses.asdict(spec), "chunk_rows": rows, "floor_s": floor, "paths": {}}
  for path in spec.paths:

    def solve(path=path):
      return sparse.nonneg_lasso(dictionary, z, spec.lam, path=path, memory_budget=spec.memory_budget)

    timing, res = benchmarking.time_call(solve, repeats=spec.repeats)
    n = min(check_rows, b)
    kkt = kkt64(c_np, z[:n], np.asarray(res.indices[:n]), np.asarray(res.values[:n]), spec.lam)
    mem, source = peak_memory()
    rec = {
      "warm_s": timing.median_s,
      "first_s": timing.first_s,
      "compile_s": timing.compile_s,
      "converged": float(np.mean(np.asarray(res.converged))),
      "kkt_max": float(np.max(np.asarray(res.kkt_violation))),
      "kkt64_max_checked_rows": float(kkt.max()),
      "checked_rows": n,
      "iterations_max": int(np.max(np.asarray(res.iterations))),
      "mean_l0": float(np.mean(np.asarray(res.l0))),
      "peak_memory_mib": mem,
      "peak_memory_source": source,
      "x_floor": {k: timing.median_s / v for k, v in floor.items()},
    }
    record["paths"][path] = rec
    log(
      f"[{spec.name}] {path}: {timing.median_s:.4f} s warm ({rec['x_floor']['highest']:.1f}x f32 floor), "
      f"first {timing.first_s:.1f} s, kkt {rec['kkt_max']:.1e}, converged {rec['converged']:.4f}"
    )
  return record


def format_table(records: Sequence[dict[str, Any]]) -> str:
  cols = ("problem", "path", "warm s", "first s", "x f32", "x default", "x bf16", "kkt max", "kkt64", "conv")
  cols += ("peak MiB",)
  rows = []
  for r in records:
    s = r["spec"]
    name = f"{s['name']} (B={s['batch']}, c={s['concepts']})"
    rows.append((name, "floor", f"{r['floor_s']['highest']:.4f}", "", "1.0"))
    for path, p in r["paths"].items():
      x = p["x_floor"]
      rows.append(
        (
          "",
          path,
          f"{p['warm_s']:.4f}",
          f"{p['first_s']:.1f}",
          f"{x['highest']:.1f}",
          f"{x['default']:.1f}",
          f"{x['bfloat16']:.1f}",
          f"{p['kkt_max']:.1e}",
          f"{p['kkt64_max_checked_rows']:.1e}",
          f"{p['converged']:.4f}",
          f"{p['peak_memory_mib']:.0f}",
        )
      )
  rows = [r[: len(cols)] + ("",) * (len(cols) - len(r)) for r in rows]
  widths = [max(len(str(x[i])) for x in [cols, *rows]) for i in range(len(cols))]
  line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
  floors_line = "; ".join(
    f"{r['spec']['name']}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in r["floor_s"].items())
    for r in records
  )
  return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, rows), "floors: " + floors_line])


# ----------------------------------------------------------------------------------------------------------
# Scaling on CPU: rows per second and working memory against N.


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler:
  """Peak resident memory (MiB) while the ``with`` block runs, sampled every ``interval`` seconds."""

  def __init__(self, interval: float = 0.02):
    self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

  def __enter__(self):
    self.peak = _rss_mb()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss_mb())
      time.sleep(self.interval)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss_mb())


def run_scaling(
  ns: Sequence[int], concepts: int, dim: int, path: str, budget: int | None, log, done=lambda out: None
) -> list[dict]:
  """Rows per second and peak RSS above the level before, per N (``done(records so far)`` after each)."""
  spec = Spec("scaling", "coherent", batch=max(ns), concepts=concepts, dim=dim)
  dictionary, z_all = make_problem(spec, block=10_000)
  t0 = time.perf_counter()  # the first call compiles: one chunk, untimed below
  for _ in sparse.nonneg_lasso_chunks(dictionary, z_all[: min(ns)], 0.25, path=path, memory_budget=budget):
    break
  log(f"[scaling] warm-up (compilation) {time.perf_counter() - t0:.1f} s")
  out = []
  for n in ns:
    z = z_all[:n]
    base = _rss_mb()
    t0 = time.perf_counter()
    kkt, conv, chunks = 0.0, 0, 0
    with _RssSampler() as rss:
      for _, part in sparse.nonneg_lasso_chunks(dictionary, z, 0.25, path=path, memory_budget=budget):
        kkt = max(kkt, float(np.max(np.asarray(part.kkt_violation))))
        conv += int(np.sum(np.asarray(part.converged)))
        chunks += 1
    seconds = time.perf_counter() - t0
    rec = {
      "rows": n,
      "chunks": chunks,
      "seconds": seconds,
      "rows_per_s": n / seconds,
      "rss_before_mib": base,
      "peak_rss_above_before_mib": rss.peak - base,
      "converged": conv / n,
      "kkt_max": kkt,
    }
    out.append(rec)
    done(out)
    log(
      f"[scaling] N={n}: {chunks} chunks, {seconds:.1f} s, {n / seconds:.0f} rows/s, "
      f"peak RSS +{rss.peak - base:.0f} MiB"
    )
  return out


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.sparse_device", description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
  p.add_argument("--problems", default=None, help="comma list of the preset's problem names")
  p.add_argument("--paths", default=None, help="comma list of paths (host,device): overrides the preset's")
  p.add_argument("--check-rows", type=int, default=256, help="rows whose KKT is recomputed in float64")
  p.add_argument("--out", default="workdirs/sparse_device")
  p.add_argument("--scaling", action="store_true", help="rows/s and memory against N instead (CPU)")
  p.add_argument("--rows", default="10000,100000,1000000", help="--scaling: the N values")
  p.add_argument("--concepts", type=int, default=3000, help="--scaling: c")
  p.add_argument("--dim", type=int, default=64, help="--scaling: d")
  p.add_argument("--memory-budget", type=int, default=None, help="--scaling: bytes (default: nonneg_lasso's)")
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  log = lambda msg: print(f"{time.perf_counter() - t0:7.1f}s {msg}", file=sys.stderr, flush=True)  # noqa: E731
  command = "python -m benchmarks.sparse_device " + " ".join(argv if argv is not None else sys.argv[1:])
  report: dict[str, Any] = {"benchmark": "sparse_device", "command": command}
  report["environment"] = benchmarking.environment()
  if args.scaling:
    ns = [int(float(v)) for v in args.rows.split(",")]
    path = sparse.choose_path()
    path_out = os.path.join(args.out, "sparse_device_scaling.json")
    report.update(
      concepts=args.concepts,
      dim=args.dim,
      path=path,
      memory_budget=args.memory_budget or sparse.default_memory_budget(),
      load_average_before=os.getloadavg(),
    )

    def done(records):  # rewritten after every N, so a long run keeps what it measured
      report.update(scaling=records, seconds=time.perf_counter() - t0, load_average_after=os.getloadavg())
      report["complete"] = len(records) == len(ns)
      io.write_json(path_out, report)

    run_scaling(ns, args.concepts, args.dim, path, args.memory_budget, log, done)
  else:
    specs = PRESETS[args.preset]
    if args.problems:
      specs = tuple(s for s in specs if s.name in args.problems.split(","))
    if args.paths:
      specs = tuple(dataclasses.replace(s, paths=tuple(args.paths.split(","))) for s in specs)
    records = [run_problem(s, args.check_rows, log) for s in specs]
    print(format_table(records))
    report.update(preset=args.preset, problems=records, seconds=time.perf_counter() - t0)
    path_out = os.path.join(args.out, "sparse_device.json")
  io.write_json(path_out, report)
  print(f"wrote {path_out} ({time.perf_counter() - t0:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
