"""CEIR benchmark: VAE training throughput and the concept projection's time, compile apart.

Sizes (``--preset authors``): N = 60,000 rows, batch 256, (c, hidden, latent) = (143, 256, 128),
(824, 256, 128), (4,500, 512, 256): the CEIR authors' CIFAR10 / CIFAR100 / ImageNet settings. One epoch is
one jit-compiled ``lax.scan`` over all 234 batches with the data on device (``ceir.train_epoch``); the first
call (compile + run) is reported apart from the median of warm epochs. Projection: one Adam step of the cos^3
loss on N_proj x 768 backbone features and ~180 concepts (full batch, as Label-free CBM), and the first
50-step stretch (one validation check) of ``train_projection``.

PyTorch figures (DESIGN.md, authors' float64 loop with a DataLoader, 2 threads) are quoted references only:
torch is not installed here, so no torch loop is measured side by side.

Run:
  .venv/bin/python -m benchmarks.ceir_vae                 # authors' sizes, ~5-10 min on 2 cores
  .venv/bin/python -m benchmarks.ceir_vae --preset tiny   # seconds (a test runs this)
Writes ``benchmarks/results/ceir_vae[_tiny].json`` and ``.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conceptjax import benchmarking, ceir, io, parallel

# DESIGN.md, "CEIR VAE in PyTorch 2.14": seconds per epoch, float64, N=60,000, batch 256, 2 threads.
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


def bench_vae(n: int, c: int, hidden: int, latent: int, batch: int, repeats: int, seed: int = 0) -> dict:
  """Times one training epoch (compile apart) at the given size; returns a result row."""
  mesh = parallel.data_mesh()
  model_cfg = ceir.VAEConfig(hidden=hidden, latent=latent)
  train_cfg = ceir.TrainConfig(batch_size=batch, learning_rate=5e-5, epochs=0)
  rng = np.random.default_rng(seed)
  data = parallel.replicate(rng.normal(size=(n, c)).astype(np.float32), mesh)
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

  timing, _ = benchmarking.time_call(one_epoch, repeats=repeats)
  steps = n // batch
  losses = [float(x) for x in holder["losses"]]
  quoted = TORCH_QUOTED_S_PER_EPOCH_F64.get(c)
  return {
    "c": c,
    "hidden": hidden,
    "latent": latent,
    "n": n,
    "batch": batch,
    "steps_per_epoch": steps,
    "first_epoch_s": timing.first_s,
    "compile_s": timing.compile_s,
    "s_per_epoch": timing.median_s,
    "ms_per_step": 1e3 * timing.median_s / steps,
    "samples_per_s": steps * batch / timing.median_s,
    "epoch_times_s": list(timing.times),
    "loss_first_epoch": losses[0],
    "loss_last_epoch": losses[-1],
    "loss_finite_and_decreasing": bool(np.all(np.isfinite(losses)) and losses[-1] < losses[0]),
    "torch_quoted_s_per_epoch_f64": quoted,
    "torch_quoted_s_per_epoch_f32_approx": None if quoted is None else quoted / 2,
    "speedup_vs_quoted_f64": None if quoted is None else quoted / timing.median_s,
  }


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

  fig, ax = plt.subplots(figsize=(6, 3.5))
  labels = [f"c={r['c']}" for r in rows]
  x = np.arange(len(rows))
  ax.bar(x - 0.2, [r["s_per_epoch"] for r in rows], 0.4, label="JAX (measured)")
  quoted = [r["torch_quoted_s_per_epoch_f64"] or 0 for r in rows]
  ax.bar(x + 0.2, quoted, 0.4, label="PyTorch f64 (quoted, DESIGN.md)")
  ax.set_xticks(x, labels)
  ax.set_ylabel("seconds per epoch")
  ax.set_yscale("log")
  ax.legend()
  ax.set_title("CEIR VAE epoch time")
  fig.tight_layout()
  with io.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="authors")
  parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON and the plot")
  parser.add_argument("--repeats", type=int, default=None, help="warm epochs per size (default from preset)")
  args = parser.parse_args(argv)
  preset = dict(PRESETS[args.preset])
  repeats = args.repeats or preset["repeats"]
  suffix = "" if args.preset == "authors" else f"_{args.preset}"
  out = Path(args.out)
  result = {
    "benchmark": "ceir_vae",
    "preset": args.preset,
    "environment": benchmarking.environment(),
    "note": "PyTorch figures are quoted from DESIGN.md (not measured here: torch is not installed).",
    "config": {k: v for k, v in preset.items()} | {"repeats": repeats, "dtype": "float32"},
    "vae": [],
    "projection": None,
    # other jobs on the machine inflate every figure: the 1-minute load average is recorded beside them
    "load_average_start": os.getloadavg()[0],
  }
  # the projection first (cheap), then each VAE size; the JSON is rewritten after each so a long run that
  # is stopped keeps what it measured.
  proj = result["projection"] = bench_projection(
    preset["proj_n"], preset["proj_d"], preset["proj_c"], repeats
  )
  io.write_json(out / f"ceir_vae{suffix}.json", result)
  rows = result["vae"]
  for c, h, k in preset["sizes"]:
    rows.append(bench_vae(preset["n"], c, h, k, preset["batch"], repeats))
    result["peak_rss_mb"] = benchmarking.peak_rss_mb()
    result["load_average_end"] = os.getloadavg()[0]
    io.write_json(out / f"ceir_vae{suffix}.json", result)
  _plot(rows, out / f"ceir_vae{suffix}.png")
  print(
    f"{'c':>6} {'hidden':>6} {'latent':>6} {'compile s':>9} {'s/epoch':>8} {'ms/step':>8} {'samples/s':>10}"
    f" {'torch f64 s (quoted)':>20} {'speedup':>8}"
  )
  for r in rows:
    q = r["torch_quoted_s_per_epoch_f64"]
    sp = r["speedup_vs_quoted_f64"]
    print(
      f"{r['c']:>6} {r['hidden']:>6} {r['latent']:>6} {r['compile_s']:>9.2f} {r['s_per_epoch']:>8.3f}"
      f" {r['ms_per_step']:>8.2f} {r['samples_per_s']:>10.0f} {q if q else '-':>20} "
      f"{f'{sp:.1f}x' if sp else '-':>8}"
    )
  p = proj
  print(
    f"projection N={p['n']} d={p['feature_dim']} c={p['concepts']}: Adam step {p['adam_step_s']:.4f} s,"
    f" 50 steps + check {p['train_projection_50_steps_s']:.2f} s"
    f" (compile {p['train_projection_compile_s']:.2f} s)"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
