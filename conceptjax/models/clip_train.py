"""Contrastive training of a small CLIP (``conceptjax.models.clip_model``) on ShapesWorld, data parallel.

The model is the project's Flax CLIP with a small config (``ModelConfig``); the tokenizer is a BPE
trained on the world's captions (``conceptjax.models.tokenizer``). Each step draws a fresh batch of
images and captions from the world: batch ``t`` is rows ``[t*B, (t+1)*B)`` of the seeded ``train`` stream,
so a resumed run sees exactly the data an uninterrupted one would. The step is one jit-compiled pure function
``(state, images, ids, mask) -> (state, metrics)`` with the batch split over every device
(``conceptjax.parallel``) and the state replicated; the loss is CLIP's symmetric InfoNCE with a learnable
temperature (clamped at 100). Optimiser: optax AdamW (no decay on biases, norms, embeddings of positions and
the temperature), warm-up + cosine schedule, global-norm clipping. Checkpoints: ``conceptjax.checkpoint``
(orbax; resumes from the latest). Logs: tensorboardX events in ``workdir/tb`` and JSONL in
``workdir/metrics.jsonl``. The result is exported in transformers' format (``clip.save``: model, tokenizer,
image processor config) and loads with ``conceptjax.models.clip.load`` like any hub model.

Image preprocessing is ``CLIPImageProcessor``'s at the native size (rescale to [0, 1], normalise with CLIP's
mean and std), done inside the jitted step.

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax import parallel
from conceptjax.data import shapesworld as sw
from conceptjax.errors import InputError, check
from conceptjax.models import clip as clip_lib
from conceptjax.models.clip_model import CLIP, ClipConfig, TextConfig, VisionConfig, random_params

__all__ = [
  "SHIPPED_DIR",
  "ClipModel",
  "ModelConfig",
  "TrainConfig",
  "TrainState",
  "clip_loss",
  "encoders",
  "evaluate",
  "export",
  "make_model",
  "make_optimizer",
  "train",
  "train_step",
]

# The shipped ShapesWorld CLIP (transformers format; load with ``conceptjax.models.clip.load``).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapesworld_clip"
CLIP_MEAN, CLIP_STD = clip_lib.CLIP_MEAN, clip_lib.CLIP_STD
MAX_LOGIT_SCALE = math.log(100.0)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Size of the CLIP (both towers are pre-LN transformers; the vision tower has ``(image/patch)^2 + 1``
  tokens)."""

  image_size: int = 64
  patch_size: int = 8
  vision_hidden: int = 128
  vision_layers: int = 4
  vision_heads: int = 4
  text_hidden: int = 128
  text_layers: int = 4
  text_heads: int = 4
  max_length: int = 32
  projection_dim: int = 128


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Training settings (static).

  Attributes:
    steps: horizon of the cosine schedule (and the number of optimiser steps unless ``end_step`` is set).
    end_step: stop here instead (0: at ``steps``), e.g. to fit a time budget.
    cooldown_steps: linear decay of the learning rate to 0 over the last ``cooldown_steps`` before the end
      (warmup-stable-decay style: a run can be ended early and still annealed; the schedule before the
      cooldown is independent of ``end_step``).
    batch_size: image-caption pairs per step (split over the devices; a multiple of the device count).
    learning_rate: peak learning rate (after ``warmup_steps`` of linear warm-up, cosine decay to 0).
    weight_decay: AdamW decay on weight matrices.
    clip_norm: global gradient norm clip.
    world: the ShapesWorld drawn from.
    hard_batches: hard-negative batch phases ``((start_step, ((attr, prob), ...)), ...)``: from
      ``start_step`` on, each batch fixes ``attr`` ("background", "color", "shape" or "size") to one
      random value with probability ``prob`` (independently per attribute, drawn from the step number).
      Background and colour are the easiest cues; in a batch where every image shares them the contrastive
      loss can only be lowered through the others (shape, size, position), which breaks the plateau a plain
      run sits on once the easy cues are learned. Phases make a reproducible curriculum.
    seed: model init and data stream seed.
    init_from: a saved CLIP directory (``export``'s output) to start from instead of a random init: its
      weights and tokenizer are used (the model must have ``ModelConfig``'s sizes); the optimiser state and
      the schedule start afresh. Empty: random init and a BPE trained on the world's captions.
    vocab_size: BPE vocabulary bound; tokenizer_corpus: captions the BPE is trained on.
    log_every, save_every: logging / checkpoint periods in steps.
  """

  steps: int = 2000
  end_step: int = 0
  cooldown_steps: int = 0
  batch_size: int = 128
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  weight_decay: float = 0.05
  clip_norm: float = 1.0
  world: sw.WorldConfig = sw.WorldConfig()
  hard_batches: tuple[tuple[int, tuple[tuple[str, float], ...]], ...] = ()
  seed: int = 0
  init_from: str = ""
  vocab_size: int = 1024
  tokenizer_corpus: int = 20_000
  log_every: int = 25
  save_every: int = 100


@dataclasses.dataclass(eq=False)
class ClipModel:
  """A CLIP in memory: its config, its Flax module and its parameters (``params`` may be replaced).

  Hashing and equality go by the module's identity, so a model can be closed over by jitted functions.
  """

  config: ClipConfig
  module: CLIP
  params: Any

  def __hash__(self) -> int:
    return hash(id(self.module))


class TrainState(NamedTuple):
  params: Any  # ClipModel params pytree
  opt_state: Any  # optax state
  step: jax.Array  # int32 []


def make_model(mc: ModelConfig, tokenizer: Any, seed: int = 0) -> ClipModel:
  """A randomly initialised CLIP of size ``mc`` for ``tokenizer``'s vocabulary."""
  return _make_model(mc, _vocab_key(tokenizer), seed)


def _vocab_key(tokenizer: Any) -> tuple[int, int, int, int]:
  return len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id


def _make_model(mc: ModelConfig, vocab: tuple[int, int, int, int], seed: int) -> ClipModel:
  vocab_size, _, eos, _ = vocab
  cfg = ClipConfig(
    vision=VisionConfig(
      image_size=mc.image_size,
      patch_size=mc.patch_size,
      width=mc.vision_hidden,
      layers=mc.vision_layers,
      heads=mc.vision_heads,
      mlp_dim=4 * mc.vision_hidden,
    ),
    text=TextConfig(
      vocab_size=vocab_size,
      context_length=mc.max_length,
      width=mc.text_hidden,
      layers=mc.text_layers,
      heads=mc.text_heads,
      mlp_dim=4 * mc.text_hidden,
      eos_id=eos,
    ),
    embed_dim=mc.projection_dim,
  )
  return ClipModel(cfg, CLIP(cfg), jax.tree.map(jnp.asarray, random_params(cfg, seed)))


def _decay_mask(params: Any) -> Any:
  """True for weight matrices (kernels, token/patch embeddings); False for biases, norms, scales."""

  def keep(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return x.ndim >= 2 and "position_embedding" not in name

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW with linear warm-up, cosine decay and an optional final cooldown."""
  cosine = optax.warmup_cosine_decay_schedule(
    0.0, tc.learning_rate, min(tc.warmup_steps, max(tc.steps - 1, 1)), max(tc.steps, 2)
  )
  end = tc.end_step or tc.steps

  def schedule(count):
    if tc.cooldown_steps <= 0:
      return cosine(count)
    return cosine(count) * jnp.clip((end - count) / tc.cooldown_steps, 0.0, 1.0)

  return optax.chain(
    optax.clip_by_global_norm(tc.clip_norm),
    optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-6, weight_decay=tc.weight_decay, mask=_decay_mask),
  )


def _pixels(images: jax.Array) -> jax.Array:
  """uint8 [B, H, W, 3] -> CLIP-normalised float32 [B, H, W, 3]."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def _features(model: ClipModel, params: Any, images: jax.Array, ids: jax.Array, mask: jax.Array):
  img = _features_image(model, params, images)
  txt = model.module.apply({"params": params}, ids, mask, method=CLIP.encode_text)
  return img, txt


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)


def clip_loss(
  params: Any, images: jax.Array, ids: jax.Array, mask: jax.Array, *, model: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CLIP's symmetric contrastive loss over the batch.

  Args:
    params: model parameters.
    images: uint8 [B, H, W, 3].
    ids, mask: int32 [B, L] token ids and attention mask.
    model: the ``ClipModel`` (static).

  Returns:
    (loss, {"loss_i2t", "loss_t2i", "acc_i2t", "temperature"}).
  """
  img, txt = _features(model, params, images, ids, mask)
  scale = jnp.exp(jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE))
  logits = scale * _normalize(img) @ _normalize(txt).T  # [B, B]
  labels = jnp.arange(logits.shape[0])
  l_i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  l_t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  acc = (logits.argmax(axis=1) == labels).mean()
  return 0.5 * (l_i2t + l_t2i), {
    "loss_i2t": l_i2t,
    "loss_t2i": l_t2i,
    "acc_i2t": acc,
    "temperature": 1 / scale,
  }


def train_step(
  state: TrainState,
  images: jax.Array,
  ids: jax.Array,
  mask: jax.Array,
  *,
  model: Any,
  optimizer: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step (pure; jit with ``model`` and ``optimizer`` bound and the state donated)."""
  (loss, aux), grads = jax.value_and_grad(clip_loss, has_aux=True)(
    state.params, images, ids, mask, model=model
  )
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
  return TrainState(params, opt_state, state.step + 1), metrics


_tokenize = clip_lib.tokenize


_WORLD_FIELD = {"background": "backgrounds", "color": "colors", "shape": "shapes", "size": "sizes"}


def _batch_world(tc: TrainConfig, step: int) -> sw.WorldConfig:
  """The world of step ``step``'s batch: ``tc.world`` with the attributes of ``tc.hard_batches`` fixed."""
  phases = [fixes for start, fixes in tc.hard_batches if start <= step]
  if not phases:
    return tc.world
  rng = np.random.default_rng([tc.seed, step])
  world = tc.world
  for attr, prob in phases[-1]:
    if rng.random() < prob:
      field = _WORLD_FIELD[attr]
      world = dataclasses.replace(world, **{field: (str(rng.choice(getattr(world, field))),)})
  return world


def _batch(
  tc: TrainConfig, tokenizer: Any, max_length: int, step: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
  """Step ``step``'s batch (uint8 images, ids, mask), or its ``rows`` only (this process's share)."""
  world = _batch_world(tc, step)
  s = sw.generate(world, tc.batch_size, seed=tc.seed, split="train", start=step * tc.batch_size)
  batch = (s.images, *_tokenize(tokenizer, s.captions, max_length))
  return batch if rows is None else tuple(a[rows] for a in batch)


def _tokenizer_for(tc: TrainConfig, mc: ModelConfig, directory: Path) -> Any:
  """The run's tokenizer: written once by process 0, read by every other process after a barrier."""
  from conceptjax.models import tokenizer as tok_lib

  if jax.process_index() == 0:
    _make_tokenizer(tc, mc, directory)
  parallel.barrier("clip_train_tokenizer")
  return tok_lib.load(directory)


def _make_tokenizer(tc: TrainConfig, mc: ModelConfig, directory: Path) -> Any:
  from conceptjax.models import tokenizer as tok_lib

  if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
    return tok_lib.load(directory)
  if tc.init_from:
    tokenizer = tok_lib.load(tc.init_from)
    return tok_lib.save(tokenizer, directory)
  corpus = sw.generate(tc.world, tc.tokenizer_corpus, seed=tc.seed, split="train").captions
  return tok_lib.train_clip_tokenizer(corpus, directory, vocab_size=tc.vocab_size, max_length=mc.max_length)


def _pretrained_params(directory: str, like: Any) -> Any:
  """The weights of the CLIP saved in ``directory``, checked against the tree and shapes of ``like``."""
  check(Path(directory, "config.json").is_file(), f"init_from {directory}: no config.json (not a saved CLIP)")
  params = jax.device_get(clip_lib.load(directory, mesh=parallel.data_mesh(jax.devices()[:1])).params)
  want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(like)}
  got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
  for key in sorted(want.keys() | got.keys()):
    if want.get(key) != got.get(key):
      raise InputError(
        f"init_from {directory}: parameter {key} has shape {got.get(key)}, "
        f"the ModelConfig needs {want.get(key)}"
      )
  return params


def train(
  tc: TrainConfig,
  mc: ModelConfig,
  workdir: str | os.PathLike,
  *,
  mesh: jax.sharding.Mesh | None = None,
  stop_at: int | None = None,
  callback: Callable[[int, dict], None] | None = None,
) -> tuple[Any, Any, TrainState]:
  """Trains (or resumes training of) a CLIP in ``workdir``.

  Args:
    tc, mc: training and model settings.
    workdir: holds ``tokenizer/``, ``checkpoints/``, ``tb/`` and ``metrics.jsonl``.
    mesh: device mesh (default: all devices); the batch is split over its ``data`` axis.
    stop_at: stop after this step (as if killed right after a checkpoint); a later call resumes.
    callback: called as ``callback(step, metrics)`` after every logged step (e.g. progress printing).

  Several processes (``jax.distributed``; a ``mesh`` over every process's devices, the default): each
  process draws the global batch and feeds only the rows its own devices hold
  (``parallel.process_positions``), so the step and its result are those of one process with the same
  global batch. Checkpoints are written by all together (orbax); process 0 alone writes the tokenizer and
  the logs.

  Returns:
    (ClipModel, tokenizer, final TrainState with params gathered on the host).
  """
  from tensorboardX import SummaryWriter

  from conceptjax.checkpoint import Checkpointer
  from conceptjax.io import JsonlWriter

  workdir = Path(workdir)
  mesh = parallel.data_mesh() if mesh is None else mesh
  check(
    tc.batch_size % mesh.size == 0, f"batch_size {tc.batch_size} is not a multiple of {mesh.size} devices"
  )
  tokenizer = _tokenizer_for(tc, mc, workdir / "tokenizer")
  model = make_model(mc, tokenizer, seed=tc.seed)
  if tc.init_from:
    model.params = _pretrained_params(tc.init_from, model.params)
  optimizer = make_optimizer(tc)
  state = TrainState(model.params, optimizer.init(model.params), jnp.zeros((), jnp.int32))
  state = parallel.replicate(state, mesh)
  step_fn = _jitted_step(tc, mc, _vocab_key(tokenizer))
  end = tc.end_step or tc.steps
  last = end if stop_at is None else min(stop_at, end)
  rows = parallel.process_positions(mesh, tc.batch_size) if parallel.spans_processes(mesh) else None
  lead = jax.process_index() == 0
  with (
    Checkpointer(workdir / "checkpoints", save_every=tc.save_every) as ckpt,
    JsonlWriter(workdir / "metrics.jsonl") if lead else contextlib.nullcontext() as log,
    SummaryWriter(str(workdir / "tb")) if lead else contextlib.nullcontext() as tb,
    concurrent.futures.ThreadPoolExecutor(1) as pool,
  ):
    state, start = ckpt.restore_or(state)
    if lead:
      log.drop_after("step", start)  # steps logged after the checkpoint a killed run resumes from
    ahead = pool.submit(_batch, tc, tokenizer, mc.max_length, start, rows)
    t0, seen = time.perf_counter(), 0
    for step in range(start, last):
      batch = ahead.result()
      if step + 1 < last:
        ahead = pool.submit(_batch, tc, tokenizer, mc.max_length, step + 1, rows)
      sharded, _ = parallel.shard_batch(batch, mesh)
      state, metrics = step_fn(state, *sharded)
      seen += 1
      ckpt.maybe_save(step + 1, state, force=step + 1 == last)
      if (step + 1) % tc.log_every == 0 or step + 1 == last:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - t0
        metrics.update(step=step + 1, steps_per_s=seen / max(elapsed, 1e-9), wall_s=elapsed)
        if lead:
          log.write(metrics)
          for k, v in metrics.items():
            if k != "step":
              tb.add_scalar(f"train/{k}", v, step + 1)
        if callback is not None:
          callback(step + 1, metrics)
  state = parallel.to_host(state)
  model.params = state.params
  return model, tokenizer, state


@functools.lru_cache(maxsize=8)
def _jitted_step(tc: TrainConfig, mc: ModelConfig, vocab: tuple[int, int, int, int]) -> Callable[..., Any]:
  """The jitted train step for one setting (cached, so resuming in the same process does not recompile)."""
  model, optimizer = _make_model(mc, vocab, tc.seed), make_optimizer(tc)
  return jax.jit(
    lambda st, im, ids, m: train_step(st, im, ids, m, model=model, optimizer=optimizer), donate_argnums=(0,)
  )


def export(model: ClipModel, tokenizer: Any, directory: str | os.PathLike) -> Path:
  """Writes model (safetensors), tokenizer and image processor config in transformers' format."""
  size = model.config.vision.image_size
  prep = clip_lib.Preprocess.default(size)
  return clip_lib.save(directory, model.config, jax.device_get(model.params), tokenizer, prep)


def encoders(
  model: ClipModel,
  tokenizer: Any,
  params: Any | None = None,
  *,
  batch_size: int = 256,
  mesh: jax.sharding.Mesh | None = None,
):
  """(encode_images(uint8 [N,H,W,3]) -> [N,d], encode_texts(list[str]) -> [N,d]) for an in-memory model.

  Batches are split over the devices of ``mesh`` (default: this process's own devices, so every process
  encodes what it is given). ``conceptjax.models.clip.load`` gives the same for a saved model.
  """
  params = model.params if params is None else params
  max_length = model.config.text.context_length
  img_fn = jax.jit(lambda p, x: _features_image(model, p, x))
  txt_fn = jax.jit(lambda p, i, m: model.module.apply({"params": p}, i, m, method=CLIP.encode_text))
  mesh = parallel.local_mesh() if mesh is None else mesh
  rep = parallel.replicate(params, mesh)

  def run(fn, *arrays):
    outs = []
    for s in range(0, arrays[0].shape[0], batch_size):
      chunk = tuple(a[s : s + batch_size] for a in arrays)
      outs.append(np.asarray(parallel.map_batched(lambda *a: fn(rep, *a), chunk, mesh=mesh)))
    return np.concatenate(outs)

  def encode_images(images):
    return run(img_fn, np.asarray(images))

  def encode_texts(texts):
    return run(txt_fn, *_tokenize(tokenizer, list(texts), max_length))

  return encode_images, encode_texts


def _features_image(model: ClipModel, params: Any, images: jax.Array) -> jax.Array:
  return model.module.apply({"params": params}, _pixels(images), method=CLIP.encode_image)


def evaluate(
  encode_images: Callable[[np.ndarray], np.ndarray],
  encode_texts: Callable[[list[str]], np.ndarray],
  *,
  num: int = 1000,
  seed: int = 0,
  world: sw.WorldConfig | None = None,
) -> dict[str, float]:
  """Held-out quality of a CLIP on ShapesWorld (``test`` split, never seen in training).

  Zero-shot accuracy per attribute (shape, colour, background) on ``num`` single-object images: the
  predicted value is the nearest (cosine) prompt among ``shapesworld.zeroshot_prompts(attr)``. Retrieval:
  image-to-caption recall@1 among the ``num`` captions of ``num`` default-world images (a hit when the
  retrieved caption is the image's own caption text, so identical short captions count as hits).

  Returns:
    {"zeroshot_shape", "zeroshot_color", "zeroshot_background", "zeroshot_mean", "retrieval_r1_i2t",
     "retrieval_r1_t2i"}.
  """
  world = sw.WorldConfig() if world is None else world
  single = sw.generate(dataclasses.replace(world, max_objects=1), num, seed=seed, split="test")
  img = _unit(encode_images(single.images))
  out = {}
  attrs = ("shape", "color", "background")
  for attr in attrs:
    y = single.main(attr)
    txt = _unit(encode_texts(sw.zeroshot_prompts(attr)))
    out[f"zeroshot_{attr}"] = float(((img @ txt.T).argmax(1) == y).mean())
  out["zeroshot_mean"] = float(np.mean([out[f"zeroshot_{a}"] for a in attrs]))
  mixed = sw.generate(world, num, seed=seed + 1, split="test")
  sim = _unit(encode_images(mixed.images)) @ _unit(encode_texts(mixed.captions)).T
  caps = np.array(mixed.captions, dtype=object)
  out["retrieval_r1_i2t"] = float((caps[sim.argmax(1)] == caps).mean())
  out["retrieval_r1_t2i"] = float((sim.argmax(0) == np.arange(num)).mean())
  return out


def linear_probe(
  encode_images: Callable[[np.ndarray], np.ndarray],
  *,
  num_train: int = 3000,
  num_test: int = 1000,
  seed: int = 5,
  world: sw.WorldConfig | None = None,
) -> dict[str, float]:
  """Held-out accuracy of a logistic regression per attribute on a CLIP's image embeddings.

  What the image tower holds, apart from whether the text tower names it: fitted on ``num_train``
  single-object ``train`` images, scored on ``num_test`` ``test`` images (scikit-learn, C=10).

  Returns:
    {"probe_shape", "probe_color", "probe_background"}.
  """
  from sklearn.linear_model import LogisticRegression

  world = dataclasses.replace(sw.WorldConfig() if world is None else world, max_objects=1)
  train = sw.generate(world, num_train, seed=seed, split="train")
  test = sw.generate(world, num_test, seed=seed, split="test")
  f_train, f_test = encode_images(train.images), encode_images(test.images)
  out = {}
  for attr in ("shape", "color", "background"):
    y_train, y_test = train.main(attr), test.main(attr)
    clf = LogisticRegression(max_iter=2000, C=10).fit(f_train, y_train)
    out[f"probe_{attr}"] = float(clf.score(f_test, y_test))
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
