"""Task: train the tiny ShapesWorld GPT-2 (tokenizer + LM) and save it (see configs/texplain_lm.py)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from conceptjax.data import shapesworld as sw
from conceptjax.models import lm as lm_lib


def run(config, workdir) -> dict:
  workdir = Path(workdir)
  world = sw.WorldConfig(image_size=16)  # captions only: the smallest images render fastest
  captions = sw.generate(world, config.num_captions, seed=config.seed, split="train").captions
  held_out = sw.generate(world, 500, seed=config.seed, split="validation").captions
  train_cfg = lm_lib.LMTrainConfig(
    vocab_size=config.vocab_size,
    max_len=config.max_len,
    n_embd=config.n_embd,
    n_layer=config.n_layer,
    n_head=config.n_head,
    steps=config.steps,
    batch_size=config.batch_size,
    learning_rate=config.learning_rate,
    warmup=config.warmup,
    prefix_len=config.prefix_len,
  )
  lm, history = lm_lib.train_lm(
    jax.random.key(config.seed), captions, train_cfg, checkpoint_dir=workdir / "lm_checkpoints"
  )
  ids, mask = lm_lib.encode(lm.tokenizer, held_out, config.max_len)
  loss = jax.jit(lambda p, i, m, k: lm_lib.lm_loss(p, lm.module, i, m, k))
  val_loss = float(loss(lm.params, ids, mask, None))
  keywords = lm_lib.keyword_ids(jax.random.key(1), ids, mask, config.prefix_len, lm.eos_id)
  val_loss_kw = float(loss(lm.params, ids, mask, keywords))
  out = lm_lib.ASSET_DIR if config.ship else workdir / "shapesworld_lm"
  extra = {
    "config": config.to_dict(),
    "train_loss": history[-1]["loss"],
    "val_loss": val_loss,
    "val_loss_with_keywords": val_loss_kw,
    "command": "python -m experiments.run --config experiments/configs/texplain_lm.py",
  }
  lm_lib.save(lm, out, extra=extra)
  size_kb = sum(f.stat().st_size for f in Path(out).iterdir()) / 1024
  return {
    "train_loss": history[-1]["loss"],
    "val_loss": val_loss,
    "val_loss_with_keywords": val_loss_kw,
    "parameters": int(sum(np.prod(p.shape) for p in jax.tree.leaves(lm.params))),
    "size_kb": round(size_kb),
    "saved_to": str(out),
  }
