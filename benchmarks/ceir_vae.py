"""CEIR benchmark: VAE training throughput and the concept projection's time, compile apart.

Sizes (``--preset authors``): N = 60,000 rows, batch 256, (c, hidden, latent) = (143, 256, 128),
(824, 256, 128), (4,500, 512, 256): the CEIR authors' CIFAR10 / CIFAR100 / ImageNet settings. One epoch is
one jit-compiled ``lax.scan`` over all 234 batches with the data on device (``ceir.train_epoch``); the first
call (compile + run) is reported apart from the median of warm epochs. Projection: one Adam step of the cos^3
loss on N_proj x 768 backbone features and ~180 concepts (full batch, as Label-free CBM), and the first
50-step stretch (one validation check) of ``train_projection``.

PyTorch peer (``benchmarks/ceir_vae_torch.py``): the authors' loop (DataLoader, batch 256, Adam, their VAE,
summed BCE + KL) in float64 (their setting) and float32, ``torch.set_num_threads(2)``, timed in the same
process with the JAX epochs interleaved. torch is optional (``requirements-bench.txt``, installed by
``make bench``); without it the torch columns are skipped with a note and only the reference figures
(``TORCH_QUOTED_S_PER_EPOCH_F64``, documented in docs/benchmarks.md) are shown. Every row records wall and
process-CPU seconds and the 1-minute load average.

Where the JAX epoch's time goes (c=143, profiled with ``jax.profiler`` on this 2-core AMD EPYC (Zen 1, AVX2,
no AVX-512), float32; 2026-11-23, commit f64ee62): about 12.3 ms of CPU per step, i.e. ~20 GFLOP per
CPU-second for the ~245 MFLOP of a step's forward and backward matmuls, against 23-28 GFLOP/s for a lone JAX
matmul of the same shapes; the matmuls (XLA's YNNPACK fusions and Eigen dots) take ~65% of the op time, the
threefry noise ~12%, BatchNorm, loss and Adam the rest. Measured alternatives, each in the same run (CPU
seconds for 60 steps, median of 5): current 0.736; one fused Dense(2 * latent) head 0.757; "rbg" PRNG 0.737;
the epoch's noise drawn before the scan 0.742; Adam on one flattened vector (``optax.flatten``) 0.858 (worse);
scan unroll 2 no better. The 1-device mesh adds no collectives; float64 is never used (x64 off); the state is
donated. So the epoch is kept as it is: what is left is matmul throughput on this CPU.

Run:
  .venv/bin/python -m benchmarks.ceir_vae                 # authors' sizes, ~15 min on 2 quiet cores
  .venv/bin/python -m benchmarks.ceir_vae --preset tiny   # seconds (a test runs this)
  .venv/bin/python -m benchmarks.ceir_vae --sizes 143 --no-torch --skip-projection
Writes ``benchmarks/results/ceir_vae[_tiny].json`` and ``.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conceptjax import benchmarking, ceir, io, parallel

# Reference figures for the authors' PyTorch loop (docs/benchmarks.md, "CEIR VAE: reference figures"):
# seconds per epoch, float64, N=60,000, batch 256, 2 threads, torch 2.14 on a quiet 2-core machine.
TORCH_QUOTED_S_PER_EPOCH_F64 = {143: 2.6, 824: 5.3, 4500: 37.6}

PRESETS = {
  "authors": {
    "n": 60_000,
    "batch": 256,
    "sizes": [(143, 256, 128), (824, 256, 128), (4500, 512, 256)],
    "proj_n": 50_000,
    "proj_d": 768,
    "proj_c": 180,
    "repeats": 3,
  },
  "tiny": {
    "n": 512,
    "batch": 64,
    "sizes": [(16, 16, 8)],
    "proj_n": 256,
    "proj_d": 32,
    "proj_c": 12,
    "repeats": 2,
  },
}


def _try_torch():
  """The torch peer module, or None (with the reason) when torch is not installed."""
  try:
    from benchmarks import ceir_vae_torch
  except ImportError as e:  # torch is optional (requirements-bench.txt)
    return None, f"torch not importable ({e}); PyTorch columns skipped"
  return ceir_vae_torch, None


def bench_vae(
  n: int,
  c: int,
  hidden: int,
  latent: int,
  batch: int,
  repeats: int,
  *,
  recon: str = "bce",
  torch_dtypes: tuple[str, ...] = ("float64", "float32"),
  torch_threads: int = 2,
  seed: int = 0,
) -> dict:
  """Times training epochs at one size: JAX (compile apart) and, when torch is importable, the authors'
  PyTorch loop side by side. After one warm-up epoch each, the timed epochs are interleaved (JAX, torch
  float64, torch float32, JAX, ...) so that load from other processes falls on every column alike.

  The data are uniform in [0, 1] (torch's BCE rejects targets outside [0, 1]); ``recon`` picks the JAX loss
  ("bce" = the authors' summed BCE + KL, as the torch loop computes). Throughput is what is measured: every
  JAX epoch reuses one batch order and noise key (``ceir.fit_vae`` draws both per epoch), and the two
  frameworks initialise differently (flax LeCun-normal, torch uniform +-1/sqrt(fan_in)), so the recorded
  losses are a finiteness check, not comparable epoch for epoch.
  """
  mesh = parallel.data_mesh()
  model_cfg = ceir.VAEConfig(hidden=hidden, latent=latent, recon=recon)
  train_cfg = ceir.TrainConfig(batch_size=batch, learning_rate=5e-5, epochs=0)
  rng = np.random.default_rng(seed)
  host_data = rng.uniform(size=(n, c)).astype(np.float32)
  data = parallel.replicate(host_data, mesh)
  key = jax.random.key(seed)
  idx = jax.device_put(
    ceir._train.epoch_indices(key, 0, n, batch), NamedSharding(mesh, P(None, parallel.DATA_AXIS))
  )
  step = functools.partial(ceir.train_epoch, input_dim=c, model_config=model_cfg, train_config=train_cfg)
  holder = {"state": parallel.replicate(ceir.init_state(key, c, model_cfg, train_cfg), mesh), "losses": []}

  def one_epoch():
    holder["state"], m = step(holder["state"], data, idx, key)
    holder["losses"].append(m.loss)
    return holder["state"].params

  tmod, skipped = _try_torch() if torch_dtypes else (None, "torch columns not requested")
  runners = {}
  if tmod is not None:
    runners = {
      dt: tmod.TorchEpochs(host_data, hidden, latent, batch, dt, torch_threads, seed) for dt in torch_dtypes
    }
  # warm-up: JAX's first call compiles; torch's first epoch allocates
  t0 = time.perf_counter()
  benchmarking.block(one_epoch())
  first = time.perf_counter() - t0
  torch_first = {}
  for dt, r in runners.items():
    t0 = time.perf_counter()
    r.epoch()
    torch_first[dt] = time.perf_counter() - t0
  jax_wall, jax_cpu = [], []
  torch_wall = {dt: [] for dt in runners}
  torch_cpu = {dt: [] for dt in runners}
  torch_loss = {dt: [] for dt in runners}
  load = [os.getloadavg()[0]]
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    benchmarking.block(one_epoch())
    jax_wall.append(time.perf_counter() - t0)
    jax_cpu.append(time.process_time() - c0)
    for dt, r in runners.items():
      t0, c0 = time.perf_counter(), time.process_time()
      torch_loss[dt].append(r.epoch())
      torch_wall[dt].append(time.perf_counter() - t0)
      torch_cpu[dt].append(time.process_time() - c0)
    load.append(os.getloadavg()[0])
  steps = n // batch
  med = statistics.median(jax_wall)
  losses = [float(x) for x in holder["losses"]]
  row = {
    "c": c,
    "hidden": hidden,
    "latent": latent,
    "n": n,
    "batch": batch,
    "recon": recon,
    "steps_per_epoch": steps,
    "first_epoch_s": first,
    "compile_s": max(first - med, 0.0),
    "s_per_epoch": med,
    "cpu_s_per_epoch": statistics.median(jax_cpu),
    "ms_per_step": 1e3 * med / steps,
    "samples_per_s": steps * batch / med,
    "epoch_times_s": jax_wall,
    "epoch_cpu_s": jax_cpu,
    "loss_first_epoch": losses[0],
    "loss_last_epoch": losses[-1],
    "loss_finite_and_decreasing": bool(np.all(np.isfinite(losses)) and losses[-1] < losses[0]),
    "load_average_1min": load,
    "torch_quoted_s_per_epoch_f64": TORCH_QUOTED_S_PER_EPOCH_F64.get(c),
    "torch": {},
  }
  if skipped:
    row["torch_skipped"] = skipped
  for dt in runners:
    # the authors' DataLoader keeps the last partial batch: an epoch is all n rows
    t_med = statistics.median(torch_wall[dt])
    paired = [t / j * (steps * batch) / n for t, j in zip(torch_wall[dt], jax_wall, strict=True)]
    row["torch"][dt] = {
      "version": tmod.version(),
      "threads": torch_threads,
      "first_epoch_s": torch_first[dt],
      "s_per_epoch": t_med,
      "cpu_s_per_epoch": statistics.median(torch_cpu[dt]),
      "samples_per_s": n / t_med,
      "epoch_times_s": torch_wall[dt],
      "epoch_cpu_s": torch_cpu[dt],
      "losses": torch_loss[dt],
      # JAX samples/s over torch samples/s: from the medians, and the median of the interleaved pairs
      "jax_speedup": (steps * batch / med) / (n / t_med),
      "jax_speedup_paired_median": statistics.median(paired),
      "jax_speedup_cpu_time": (statistics.median(torch_cpu[dt]) / n)
      / (statistics.median(jax_cpu) / (steps * batch)),
    }
  return row


def bench_projection(n: int, d: int, c: int, repeats: int, seed: int = 0) -> dict:
  """Times one full-batch Adam step of the cos^3 loss and the first 50-step stretch of train_projection."""
  rng = np.random.default_rng(seed)
  feats = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
  a = rng.normal(size=(d, c)).astype(np.float32) / np.sqrt(d)
  target = jnp.asarray(
    0.25 + 0.03 * (np.asarray(feats) @ a) + 0.01 * rng.normal(size=(n, c)).astype(np.float32)
  )
  nval = max(n // 10, 8)
  vfeats, vtarget = feats[:nval], target[:nval]
  import optax

  opt = optax.adam(1e-3)
  w0 = ceir._projection.init_projection(jax.random.key(seed), c, d)

  @jax.jit
  def adam_step(w, s, feats, target):  # data as arguments: closed-over arrays would be constant-folded
    g = jax.grad(ceir.cos3_loss)(w, feats, target)
    u, s = opt.update(g, s, w)
    return optax.apply_updates(w, u), s

  st = {"w": w0, "s": opt.init(w0)}

  def step():
    st["w"], st["s"] = adam_step(st["w"], st["s"], feats, target)
    return st["w"]

  t_step, _ = benchmarking.time_call(step, repeats=max(repeats, 3))
  cfg = ceir.ProjectionConfig(max_steps=50, check_every=50)
  run = lambda: ceir.train_projection(jax.random.key(seed), feats, target, vfeats, vtarget, cfg)
  t_50, res = benchmarking.time_call(run, repeats=repeats)
  return {
    "n": n,
    "feature_dim": d,
    "concepts": c,
    "adam_step_s": t_step.median_s,
    "adam_step_compile_s": t_step.compile_s,
    "train_projection_50_steps_s": t_50.median_s,
    "train_projection_compile_s": t_50.compile_s,
    "projected_1000_steps_s": 20 * t_50.median_s,
    "val_cos3_mean_after_50_steps": float(jnp.mean(res.val_similarity)),
  }


def _plot(rows: list[dict], path: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 3.5))
  labels = [f"c={r['c']}" for r in rows]
  x = np.arange(len(rows))
  # seconds per 60,000-row epoch, so the torch loop's extra partial batch does not count against it
  cols = [("JAX f32 (jit epoch)", [r["n"] / r["samples_per_s"] for r in rows])]
  for dt in ("float64", "float32"):
    if any(dt in r["torch"] for r in rows):
      cols.append(
        (f"PyTorch {dt} (authors' loop)", [r["torch"].get(dt, {}).get("s_per_epoch", 0) for r in rows])
      )
  if not any(r["torch"] for r in rows):
    cols.append(("PyTorch f64 (reference figures)", [r["torch_quoted_s_per_epoch_f64"] or 0 for r in rows]))
  w = 0.8 / len(cols)
  for i, (name, vals) in enumerate(cols):
    ax.bar(x - 0.4 + w * (i + 0.5), vals, w, label=name)
  ax.set_xticks(x, labels)
  ax.set_ylabel("seconds per epoch")
  ax.set_yscale("log")
  ax.legend(fontsize=7)
  ax.set_title("CEIR VAE epoch time, measured side by side")
  fig.tight_layout()
  with io.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="authors")
  parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON and the plot")
  parser.add_argument("--repeats", type=int, default=None, help="warm epochs per size (default from preset)")
  parser.add_argument(
    "--sizes", type=int, nargs="*", default=None, help="concept counts c to run (default all)"
  )
  parser.add_argument("--recon", choices=ceir._vae.RECON_LOSSES, default="bce", help="JAX loss (torch: bce)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
  parser.add_argument(
    "--torch-dtypes", default="float64,float32", help="PyTorch columns to run (comma list; float64 is slow)"
  )
  parser.add_argument("--skip-projection", action="store_true")
  parser.add_argument(
    "--n",
    type=int,
    default=None,
    help="rows per epoch (default from preset; fewer = a shorter epoch, same steps)",
  )
  parser.add_argument("--name", default=None, help="result file stem (default ceir_vae[_PRESET])")
  args = parser.parse_args(argv)
  preset = dict(PRESETS[args.preset])
  if args.n:
    preset["n"] = args.n
  repeats = args.repeats or preset["repeats"]
  sizes = [s for s in preset["sizes"] if args.sizes is None or s[0] in args.sizes]
  stem = args.name or ("ceir_vae" if args.preset == "authors" else f"ceir_vae_{args.preset}")
  out = Path(args.out)
  torch_dtypes = () if args.no_torch else tuple(filter(None, args.torch_dtypes.split(",")))
  bad = [dt for dt in torch_dtypes if dt not in ("float64", "float32")]
  if bad:
    parser.error(f"--torch-dtypes: unknown dtype(s) {bad}; choose from float64, float32")
  _, torch_note = _try_torch() if torch_dtypes else (None, "--no-torch")
  result = {
    "benchmark": "ceir_vae",
    "preset": args.preset,
    "command": "python -m benchmarks.ceir_vae " + " ".join(argv if argv is not None else sys.argv[1:]),
    "environment": benchmarking.environment(),
    "note": torch_note or "PyTorch columns measured in this run, interleaved with the JAX epochs.",
    "config": {k: v for k, v in preset.items()} | {"repeats": repeats, "dtype": "float32", "sizes": sizes},
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "vae": [],
    "projection": None,
    # other jobs on the machine inflate every figure: the 1-minute load average is recorded beside them
    "load_average_start": os.getloadavg()[0],
  }
  path = out / f"{stem}.json"
  # the JSON is rewritten after each part so a long run that is stopped keeps what it measured.
  if not args.skip_projection:
    result["projection"] = bench_projection(preset["proj_n"], preset["proj_d"], preset["proj_c"], repeats)
    io.write_json(path, result)
  rows = result["vae"]
  for c, h, k in sizes:
    rows.append(
      bench_vae(preset["n"], c, h, k, preset["batch"], repeats, recon=args.recon, torch_dtypes=torch_dtypes)
    )
    result["peak_rss_mb"] = benchmarking.peak_rss_mb()
    result["load_average_end"] = os.getloadavg()[0]
    io.write_json(path, result)
  _plot(rows, out / f"{stem}.png")
  print(
    f"{'c':>6} {'hidden':>6} {'compile s':>9} {'JAX s/ep':>8} {'ms/step':>8}"
    f" {'torch64 s':>9} {'torch32 s':>9}"
    f" {'x vs 64':>7} {'x vs 32':>7} {'cpu x64':>7} {'quoted64':>8}"
  )
  for r in rows:
    t64, t32 = r["torch"].get("float64", {}), r["torch"].get("float32", {})

    def f(d, key, fmt):
      return format(d[key], fmt) if key in d else "-"

    print(
      f"{r['c']:>6} {r['hidden']:>6} {r['compile_s']:>9.2f} {r['s_per_epoch']:>8.3f}"
      f" {r['ms_per_step']:>8.2f} {f(t64, 's_per_epoch', '.3f'):>9} {f(t32, 's_per_epoch', '.3f'):>9}"
      f" {f(t64, 'jax_speedup', '.2f'):>7}"
      f" {f(t32, 'jax_speedup', '.2f'):>7} {f(t64, 'jax_speedup_cpu_time', '.2f'):>7}"
      f" {r['torch_quoted_s_per_epoch_f64'] or '-':>8}"
    )
  p = result["projection"]
  if p:
    print(
      f"projection N={p['n']} d={p['feature_dim']} c={p['concepts']}: Adam step {p['adam_step_s']:.4f} s,"
      f" 50 steps + check {p['train_projection_50_steps_s']:.2f} s"
      f" (compile {p['train_projection_compile_s']:.2f} s)"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
