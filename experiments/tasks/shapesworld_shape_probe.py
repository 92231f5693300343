"""Task: supervised shape probe of the tiny CLIP's vision tower (shapesworld_shape_probe config)."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax import parallel
from conceptjax.data import shapesworld as sw
from conceptjax.errors import check
from conceptjax.models import clip_train as ct
from conceptjax.models.clip_model import VisionConfig, VisionTower

WORLDS = {
  "full": sw.WorldConfig(),
  "single": sw.WorldConfig(max_objects=1),
  "easy": sw.WorldConfig(backgrounds=("plain",), sizes=("large",), max_objects=1),
}


def _worlds(name: str) -> list[sw.WorldConfig]:
  """The worlds the training batches cycle through ("easy+single": alternate easy and single batches)."""
  parts = name.split("+")
  bad = [p for p in parts if p not in WORLDS]
  check(
    not bad, f"unknown world {name!r}; known: {sorted(WORLDS)} or two joined by '+' (alternating batches)"
  )
  return [WORLDS[p] for p in parts]


def _tower(config) -> tuple[VisionTower, dict]:
  """The CLIP vision tower of the config's size at 64 px, and its random parameters."""
  cfg = VisionConfig(
    image_size=64,
    patch_size=config.patch_size,
    width=config.hidden,
    layers=config.layers,
    heads=config.heads,
    mlp_dim=4 * config.hidden,
  )
  tower = VisionTower(cfg)
  params = tower.init(jax.random.key(config.seed), jnp.zeros((1, 64, 64, 3)))["params"]
  return tower, params


def run(config, workdir) -> dict:
  worlds = _worlds(config.world)
  world = worlds[-1]  # held-out images: single objects of the last (hardest) world
  tower, tower_params = _tower(config)
  num_classes = len(sw.ATTRIBUTES["shape"])
  params = {
    "tower": tower_params,
    "head": {"w": jnp.zeros((config.hidden, num_classes)), "b": jnp.zeros(num_classes)},
  }
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps, config.steps)
  opt = optax.adamw(schedule, weight_decay=0.05)

  def logits(p, images):
    pooled = tower.apply({"params": p["tower"]}, ct._pixels(images))[1]
    return pooled @ p["head"]["w"] + p["head"]["b"]

  @jax.jit
  def step(p, s, images, labels):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(logits(p, images), labels).mean()

    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  predict = jax.jit(lambda p, images: logits(p, images).argmax(-1))
  mesh = parallel.data_mesh()
  params = parallel.replicate(params, mesh)
  state = parallel.replicate(opt.init(params), mesh)
  test = sw.generate(
    dataclasses.replace(world, max_objects=1), config.eval_num, seed=config.seed, split="test"
  )
  (test_images,), n = parallel.shard_batch((test.images,), mesh)
  curve, t0 = [], time.perf_counter()
  for i in range(config.steps):
    s = sw.generate(
      world, config.batch_size, seed=config.seed + 1, split="train", start=i * config.batch_size
    )
    batch, _ = parallel.shard_batch((s.images, s.shape[:, 0]), mesh)
    params, state, loss = step(params, state, *batch)
    if (i + 1) % config.eval_every == 0 or i + 1 == config.steps:
      pred = np.asarray(predict(params, test_images))[:n]
      curve.append(
        {
          "step": i + 1,
          "loss": round(float(loss), 4),
          "shape_acc": round(float((pred == test.shape[:, 0]).mean()), 4),
        }
      )
      print(curve[-1], flush=True)
  return {
    "world": config.world,
    "shape_acc": curve[-1]["shape_acc"],
    "chance": 1 / num_classes,
    "curve": curve,
    "seconds": round(time.perf_counter() - t0, 1),
  }
