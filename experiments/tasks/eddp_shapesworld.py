"""Task: EDDP dissection of a small CNN trained on ShapesWorld shape classes (eddp_shapesworld config).

Steps: train ``classifier.SmallCNN`` on shape labels; take the activations after ``feature_block`` as
patches [N, side*side, C]; fit EDDP detectors (label-free); score each detector's positives (y > 0.5)
against concept masks on the patch grid (object, background, each shape / colour / size of the objects,
each background texture), with PCA and spherical k-means directions scored the same way; measure each
direction's influence on the class logits by adding its signal vector to every patch.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import io, parallel
from conceptjax.data import shapesworld as sw
from conceptjax.directions import activations, baselines, fit, fit_standardizer, scoring, warm_start
from conceptjax.models import classifier
from experiments.tasks.eddp_synthetic import stages_from_config

_init_state = jax.jit(classifier.create_train_state, static_argnums=(1, 2))


def classifier_config(config) -> classifier.ClassifierConfig:
  return classifier.ClassifierConfig(
    num_classes=len(sw.ATTRIBUTES["shape"]),
    widths=tuple(config.classifier_widths),
    feature_block=config.feature_block,
    learning_rate=config.classifier_lr,
    pool=config.classifier_pool,
    global_pool=config.classifier_global_pool,
  )


def train_classifier(config, x: np.ndarray, y: np.ndarray, key: jax.Array, log_every: int = 50):
  """Adam on cross-entropy with random minibatches sharded over the devices.

  Returns:
    (parameters, curve): curve is a list of {"step", "loss", "accuracy"}, the minibatch loss and accuracy
    averaged over the last ``log_every`` steps.
  """
  cfg = classifier_config(config)
  state = _init_state(key, cfg, tuple(x.shape[1:]))
  rng = np.random.default_rng(config.seed)
  curve, window = [], []
  for step in range(config.classifier_steps):
    idx = rng.integers(len(x), size=config.classifier_batch)
    (xb, yb), _ = parallel.shard_batch((x[idx], y[idx]))
    state, m = classifier.train_step(state, xb, yb, cfg=cfg)
    window.append(m)
    if (step + 1) % log_every == 0 or step + 1 == config.classifier_steps:
      mean = {k: round(float(np.mean([float(w[k]) for w in window])), 4) for k in ("loss", "accuracy")}
      curve.append({"step": step + 1, **mean})
      window = []
  return state.params, curve


def concept_masks(samples: sw.Samples, side: int, threshold: float) -> tuple[list[str], np.ndarray]:
  """Concept masks on the patch grid: (names, [N, side*side, C] bool), concepts without positives dropped.

  A patch belongs to a concept when at least ``threshold`` of its pixels do (average pooling of the pixel
  mask over the patch's cell). Concepts: "object", "background", "shape:<v>", "color:<v>", "size:<v>" (the
  pixels of objects with that value), "background:<v>" (the background pixels of images with that texture).
  """
  n, h, w = samples.background_mask.shape
  f = h // side

  def pool(m):  # [N, H, W] bool -> [N, side*side] bool
    return (m.reshape(n, side, f, side, f).mean(axis=(2, 4)) >= threshold).reshape(n, -1)

  obj = samples.object_masks  # [N, K, H, W]
  names, masks = ["object", "background"], [pool(obj.any(1)), pool(samples.background_mask)]
  for attr in ("shape", "color", "size"):
    ids = getattr(samples, attr)  # [N, K]
    for v, word in enumerate(sw.ATTRIBUTES[attr]):
      names.append(f"{attr}:{word}")
      masks.append(pool(np.any(obj & (ids == v)[:, :, None, None], axis=1)))
  for v, word in enumerate(sw.ATTRIBUTES["background"]):
    names.append(f"background:{word}")
    masks.append(pool(samples.background_mask & (samples.background == v)[:, None, None]))
  masks = np.stack(masks, -1)
  keep = masks.reshape(-1, masks.shape[-1]).any(0)
  return [nm for nm, k in zip(names, keep, strict=True) if k], masks[..., keep]


def dissect(masks: np.ndarray, positives: np.ndarray, names: list[str]) -> list[dict]:
  """Each unit's best IoU over the concepts. masks: [M, C] bool; positives: [M, I] bool."""
  iou = scoring.iou_matrix(masks, positives)  # [C, I]
  best = iou.argmax(0)
  return [
    {
      "best_concept": names[c],
      "iou": round(float(iou[c, i]), 4),
      "active_fraction": round(float(positives[:, i].mean()), 4),
    }
    for i, c in enumerate(best)
  ]


def summary(rows: list[dict], prefix: str = "") -> dict:
  ious = np.array([r["iou"] for r in rows])
  return {f"{prefix}iou_gt_0_2": int(np.sum(ious > 0.2)), f"{prefix}mean_best_iou": float(ious.mean())}


@functools.partial(jax.jit, static_argnames=("head",))
def _logit_spread(vectors: jax.Array, x: jax.Array, params, head) -> jax.Array:
  """[V] std over classes of the mean logit change when each vector [V, C] is added to every patch."""
  base = head(params, x)

  def one(v):
    d = jnp.mean(head(params, x + v) - base, axis=0)  # [K]
    return jnp.std(d)

  return jax.lax.map(one, vectors)


def influence(head, params, x: np.ndarray, shifts: np.ndarray, permutations: int, seed: int) -> list[dict]:
  """Influence of each shift vector on the class logits, with a coordinate-permutation test.

  Args:
    head: ``(params, patches [B, P, C]) -> logits [B, K]`` (the rest of the network).
    x: [B, P, C] patches. shifts: [I, C] vectors added to every patch (signal vector times the typical
      logit gap between the detector's positives and negatives).
    permutations: null vectors per shift (its coordinates shuffled: same norm and values, no direction).

  Returns:
    per direction {"logit_spread", "p_value"}.
  """
  rng = np.random.default_rng(seed)
  out = []
  xj = jnp.asarray(x)
  for v in shifts:
    null = np.stack([rng.permutation(v) for _ in range(permutations)])
    s = np.asarray(_logit_spread(jnp.asarray(np.vstack([v[None], null]), jnp.float32), xj, params, head))
    p = (1 + np.sum(s[1:] >= s[0])) / (1 + permutations)
    out.append({"logit_spread": round(float(s[0]), 4), "p_value": round(float(p), 4)})
  return out


def run(config, workdir) -> dict:
  t0 = time.perf_counter()
  key = jax.random.key(config.seed)
  k_cls, k_eddp = jax.random.split(key)
  world = sw.WorldConfig(image_size=config.image_size, max_objects=config.max_objects)
  train = sw.generate(world, config.train_images, seed=config.seed, split="train")
  test = sw.generate(world, config.eval_images, seed=config.seed, split="test")
  cfg = classifier_config(config)
  params, curve = train_classifier(config, train.images.astype(np.float32) / 255.0, train.label, k_cls)
  logits, feats = classifier.predict(params, jnp.asarray(test.images, jnp.float32) / 255.0, cfg=cfg)
  accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == test.label))
  feats = np.asarray(feats)
  n, side, _, c = feats.shape
  patches = feats.reshape(n, side * side, c)
  flat = patches.reshape(-1, c)
  t_cls = time.perf_counter() - t0

  head = classifier.head_fn(cfg)
  schedule = stages_from_config(config, head_fn=head)
  std = fit_standardizer(jnp.asarray(flat))
  init = warm_start(
    config.warm_start, k_eddp, flat, config.num_detectors, std=std, restarts=config.restarts, seed=config.seed
  )
  res = fit(
    patches,
    init,
    schedule,
    k_eddp,
    std=std,
    head_params=params,
    select_after=min(config.select_after, len(schedule) - 1) if config.restarts > 1 else 0,
  )
  det = res.detectors
  logit = np.asarray(flat @ np.asarray(det.unit).T - np.asarray(det.offset)) / np.asarray(det.margin)
  pos = np.asarray(activations(det, jnp.asarray(flat))) > 0.5
  t_eddp = time.perf_counter() - t0 - t_cls

  names, masks = concept_masks(test, side, config.mask_threshold)
  masks = masks.reshape(-1, masks.shape[-1])
  rows = dissect(masks, pos, names)
  # Shift along the signal vector (w.s = 1 in logit units) by the gap of mean logits, positives vs the rest.
  gap = np.array(
    [
      logit[pos[:, i], i].mean() - logit[~pos[:, i], i].mean() if 0 < pos[:, i].sum() < len(pos) else 0.0
      for i in range(pos.shape[1])
    ]
  )
  shifts = np.asarray(res.signal) * gap[:, None]
  m = min(n, config.influence_images)
  infl = influence(head, params, patches[:m], shifts, config.permutations, config.seed)
  for r, f in zip(rows, infl, strict=True):
    r.update(f)

  def threshold_dirs(dirs):
    z = flat @ np.asarray(dirs, np.float64).T
    z = z * np.sign(np.mean(z - np.median(z, 0), 0) + 1e-12)  # orient each direction toward its long tail
    return z > np.quantile(z, 1.0 - 1.0 / len(dirs), axis=0)

  k = config.num_detectors
  pca_rows = dissect(masks, threshold_dirs(baselines.pca(flat, k)), names)
  # Spherical k-means has no direction for an all-zero (dead ReLU) patch: fit on the others, and leave
  # zero patches out of every cluster.
  alive = np.linalg.norm(flat, axis=1) > 0
  cent = baselines.kmeans_centroids(flat[alive], k, seed=config.seed)
  unit = flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-12)
  assign = np.argmax(unit @ (cent / np.linalg.norm(cent, axis=1, keepdims=True)).T, axis=1)
  km_rows = dissect(masks, alive[:, None] & (assign[:, None] == np.arange(k)[None, :]), names)

  metrics = {
    "classifier_accuracy": accuracy,
    "classifier_train_loss": curve[-1]["loss"],
    "num_detectors": k,
    "detectors_iou_gt_0_2": summary(rows)["iou_gt_0_2"],
    "mean_best_iou": summary(rows)["mean_best_iou"],
    "influential_detectors": int(sum(r["p_value"] < 0.05 for r in rows)),
    "pca_iou_gt_0_2": summary(pca_rows)["iou_gt_0_2"],
    "pca_mean_best_iou": summary(pca_rows)["mean_best_iou"],
    "kmeans_iou_gt_0_2": summary(km_rows)["iou_gt_0_2"],
    "kmeans_mean_best_iou": summary(km_rows)["mean_best_iou"],
    "patches": int(flat.shape[0]),
    "classifier_seconds": t_cls,
    "eddp_seconds": t_eddp,
  }
  workdir = Path(workdir)
  io.write_json(
    workdir / "dissection.json", {"eddp": rows, "pca": pca_rows, "kmeans": km_rows, "concepts": names}
  )
  io.write_json(workdir / "classifier_curve.json", curve)
  io.save_npz(
    workdir / "directions.npz",
    decoding=np.asarray(det.unit),
    margin=np.asarray(det.margin),
    offset=np.asarray(det.offset),
    encoding=np.asarray(res.signal),
  )
  metrics["seconds"] = time.perf_counter() - t0
  return {kk: (round(v, 4) if isinstance(v, float) else v) for kk, v in metrics.items()}
