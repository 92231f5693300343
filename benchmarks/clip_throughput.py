"""CLIP image-encoder throughput: the project's Flax CLIP beside transformers' PyTorch CLIPModel.

Both run the same random weights (a PyTorch ``CLIPModel`` of the preset's config, converted with
``clip_weights.from_hf_state``) on the same normalised pixels; preprocessing is excluded. The JAX side is one
jit-compiled ``encode_image`` with the batch split over every device (``conceptjax.parallel``); the torch
side is ``get_image_features`` under ``torch.inference_mode`` on the same device kind with
``torch.set_num_threads(os.cpu_count())``. Rounds alternate JAX and torch calls in one process, so the ratio
is measured side by side; the first JAX call (compile + run) is reported apart. The largest difference
between the two outputs (float32) is recorded beside the speed.

Presets: ``vit_b32`` (OpenAI ViT-B/32 at 224 px, 87.8 M vision parameters, about 4.4 GFLOP per image);
``tiny`` (a 32-px, width-32 CLIP; seconds, run by the tests).

Run:
  .venv/bin/python -m benchmarks.clip_throughput                       # ViT-B/32, float32, batch 64
  .venv/bin/python -m benchmarks.clip_throughput --dtypes float32,bfloat16 --batch 1024   # on a GPU
  .venv/bin/python -m benchmarks.clip_throughput --preset tiny --out /tmp/x.json
Writes JSON (default ``benchmarks/results/clip_throughput_<preset>_<backend>.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import benchmarking, io, parallel
from conceptjax.models import clip_weights as cw
from conceptjax.models.clip_model import CLIP

PRESETS = {
  "vit_b32": {
    "text_config": {},
    "vision_config": {"image_size": 224, "patch_size": 32, "hidden_size": 768, "intermediate_size": 3072,
                      "num_hidden_layers": 12, "num_attention_heads": 12},
    "projection_dim": 512,
    "batch": 64,
  },
  "tiny": {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "vocab_size": 99, "max_position_embeddings": 8},
    "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                      "num_hidden_layers": 2, "num_attention_heads": 2},
    "projection_dim": 16,
    "batch": 8,
  },
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=sorted(PRESETS), default="vit_b32")
  p.add_argument("--batch", type=int, default=None, help="images per call (default from the preset)")
  p.add_argument("--rounds", type=int, default=5, help="alternating JAX / torch rounds")
  p.add_argument("--dtypes", default="float32", help="comma-separated JAX compute dtypes (float32,bfloat16)")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
  p.add_argument("--out", default=None, help="JSON path")
  return p


def _torch_model(preset: dict, device: str):
  import torch
  import transformers

  transformers.logging.set_verbosity_error()
  torch.manual_seed(0)
  config = transformers.CLIPConfig(
    text_config=preset["text_config"],
    vision_config=preset["vision_config"],
    projection_dim=preset["projection_dim"],
  )
  return transformers.CLIPModel(config).eval().to(device), config.to_dict()


def _torch_fn(model, pixels: np.ndarray, dtype: str):
  import torch

  device = next(model.parameters()).device
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  model = model.to(tdtype)
  x = torch.tensor(pixels.transpose(0, 3, 1, 2), device=device, dtype=tdtype)

  def run():
    with torch.inference_mode():
      out = model.get_image_features(pixel_values=x)
      out = getattr(out, "pooler_output", out).float()
      if device.type == "cuda":
        torch.cuda.synchronize()
      return out.cpu().numpy()

  return run


def _jax_fn(cfg, params, pixels: np.ndarray, dtype: str):
  module = CLIP(cfg, dtype=jnp.dtype(dtype))
  mesh = parallel.data_mesh()
  params = parallel.replicate(params, mesh)
  (x,), _ = parallel.shard_batch((pixels,), mesh)
  fn = jax.jit(lambda p, x: module.apply({"params": p}, x, method=CLIP.encode_image))
  return lambda: fn(params, x)


def _time(fn) -> float:
  t0 = time.perf_counter()
  benchmarking.block(fn())
  return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict:
  preset = PRESETS[args.preset]
  batch = args.batch or preset["batch"]
  backend = jax.default_backend()
  use_torch = not args.no_torch
  if use_torch:
    try:
      import torch

      torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
      print("torch is not installed: the PyTorch column is skipped", file=sys.stderr)
      use_torch = False
  device = "cuda" if backend == "gpu" else "cpu"
  if use_torch:
    model, hf_config = _torch_model(preset, device)
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
  else:
    model = None
    keys = ("text_config", "vision_config", "projection_dim")
    hf_config = {"model_type": "clip", **{k: preset[k] for k in keys}}
  cfg = cw.config_from_hf(hf_config)
  if model is None:
    from conceptjax.models.clip_model import random_params

    params = random_params(cfg)
  else:
    params = cw.from_hf_state(state, cfg)
  size = cfg.vision.image_size
  pixels = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)
  rows = []
  for dtype in args.dtypes.split(","):
    jax_fn = _jax_fn(cfg, params, pixels, dtype)
    first = _time(jax_fn)
    torch_fn = _torch_fn(model, pixels, dtype) if model is not None else None
    if torch_fn is not None:
      _time(torch_fn)  # warm-up
    jt, tt = [], []
    for _ in range(args.rounds):
      jt.append(_time(jax_fn))
      if torch_fn is not None:
        tt.append(_time(torch_fn))
    row = {
      "dtype": dtype,
      "batch": batch,
      "jax_first_call_s": first,
      "jax_median_s": statistics.median(jt),
      "jax_images_per_s": batch / statistics.median(jt),
      "jax_times_s": jt,
    }
    if torch_fn is not None:
      diff = float(np.abs(np.asarray(jax_fn(), np.float32) - torch_fn()).max())
      row.update(
        torch_median_s=statistics.median(tt),
        torch_images_per_s=batch / statistics.median(tt),
        torch_times_s=tt,
        jax_over_torch_speed=statistics.median(t / j for j, t in zip(jt, tt, strict=True)),
        max_abs_diff=diff,
      )
    rows.append(row)
  env = benchmarking.environment()
  if model is not None:
    import torch
    import transformers

    env.update(torch=torch.__version__, transformers=transformers.__version__)
    env["torch_threads"] = torch.get_num_threads()
  return {"preset": args.preset, "image_size": size, "environment": env, "rows": rows}


def table(record: dict) -> str:
  lines = [
    f"CLIP image encoder, preset {record['preset']} ({record['image_size']} px), "
    f"{record['environment']['device_kind']} x {record['environment']['device_count']}",
    f"{'dtype':9} {'batch':>6} {'JAX img/s':>10} {'compile s':>10} {'torch img/s':>12} "
    f"{'JAX/torch':>10} {'max |diff|':>11}",
  ]
  for r in record["rows"]:
    torch_cols = (
      f"{r['torch_images_per_s']:12.1f} {r['jax_over_torch_speed']:10.2f} {r['max_abs_diff']:11.2e}"
      if "torch_images_per_s" in r
      else f"{'-':>12} {'-':>10} {'-':>11}"
    )
    lines.append(
      f"{r['dtype']:9} {r['batch']:6d} {r['jax_images_per_s']:10.1f} "
      f"{r['jax_first_call_s'] - r['jax_median_s']:10.2f} {torch_cols}"
    )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  record = run(args)
  print(table(record))
  out = Path(args.out or f"benchmarks/results/clip_throughput_{args.preset}_{jax.default_backend()}.json")
  io.write_json(out, record)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
