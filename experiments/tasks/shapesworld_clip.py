"""Task: train the ShapesWorld CLIP, export it (transformers format), and score it on held-out images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from conceptjax import parallel
from conceptjax.data import shapesworld as sw
from conceptjax.models import clip
from conceptjax.models import clip_train as ct


def settings(config) -> tuple[ct.TrainConfig, ct.ModelConfig]:
  """The trainer's static settings from an experiment config."""
  tc = ct.TrainConfig(
    steps=config.steps,
    end_step=config.end_step,
    cooldown_steps=config.cooldown_steps,
    batch_size=config.batch_size,
    learning_rate=config.learning_rate,
    warmup_steps=config.warmup_steps,
    weight_decay=config.weight_decay,
    world=sw.WorldConfig(two_object_prob=config.two_object_prob),
    hard_batches=tuple(
      (int(start), tuple((a, float(p)) for a, p in fixes)) for start, fixes in config.hard_batches
    ),
    seed=config.seed,
    init_from=config.get("init_from", ""),
    vocab_size=config.vocab_size,
    tokenizer_corpus=config.tokenizer_corpus,
    log_every=config.log_every,
    save_every=config.save_every,
  )
  return tc, ct.ModelConfig(**config.model)


def run(config, workdir) -> dict:
  workdir = Path(workdir)
  tc, mc = settings(config)

  def progress(step, m):
    print(json.dumps({k: round(v, 4) for k, v in m.items()}), file=sys.stderr, flush=True)

  stop_at = config.get("stop_at", 0) or None
  model, tokenizer, state = ct.train(tc, mc, workdir, callback=progress, stop_at=stop_at)
  out = workdir / "model"
  if jax.process_index() == 0:  # several processes: one writes the model, every one evaluates it locally
    ct.export(model, tokenizer, out)
  parallel.barrier("shapesworld_clip_export")
  encode_images, encode_texts = _load_encoders(out, model, tokenizer)
  metrics = ct.evaluate(encode_images, encode_texts, num=config.eval_num, seed=config.seed + 10_000)
  metrics["steps"] = int(state.step)
  metrics["model_dir"] = str(out)
  return metrics


def _load_encoders(directory: Path, model, tokenizer):
  """The exported model through the project's CLIP loader, on this process's devices."""
  bundle = clip.load(directory, mesh=parallel.local_mesh())
  return bundle.encode_images, bundle.encode_texts
