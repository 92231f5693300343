"""The CEIR pipeline shared by the CEIR experiment tasks (not a task itself).

Given teacher similarities and backbone features of a train / validation / test split, it runs filter A,
the cos^3 projection with filter B, z-scoring with training statistics, the VAE, k-means on the test latent,
the two k-means baselines, label-free attributions and open-world labels, and returns the metrics.

Protocols: "inductive" (default) trains the projection and the VAE on the train split only and clusters the
test split; "transductive" (the CEIR authors' protocol) trains the VAE on train + test. Both are labelled in
the metrics as ``protocol``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from conceptjax import ceir, io, parallel
from conceptjax.errors import check


class Split(NamedTuple):
  teacher: np.ndarray  # [N, c] teacher similarities P
  features: np.ndarray  # [N, d] backbone image features
  labels: np.ndarray  # [N] ground-truth classes (used only for scoring)


def settings(config) -> tuple[ceir.ProjectionConfig, ceir.VAEConfig, ceir.TrainConfig]:
  """Static library settings from an experiment config."""
  proj = ceir.ProjectionConfig(
    learning_rate=config.proj_learning_rate,
    max_steps=config.proj_steps,
    cutoff=config.cos3_cutoff,
    batch_size=config.get("proj_batch_size", None),
  )
  vae = ceir.VAEConfig(
    hidden=config.hidden,
    latent=config.latent,
    recon=config.recon,
    kl_weight=config.kl_weight,
    decoder_output=config.decoder_output,
  )
  train = ceir.TrainConfig(
    batch_size=config.batch_size, learning_rate=config.learning_rate, epochs=config.epochs
  )
  return proj, vae, train


def precision_at_k(top: np.ndarray, truth: Callable[[int], set[int]]) -> float:
  """Mean over rows of the share of ``top[i]`` (concept indices) that are in ``truth(i)``."""
  return float(np.mean([len(set(map(int, row)) & truth(i)) / len(row) for i, row in enumerate(top)]))


def kmeans_accuracy(x: np.ndarray, labels: np.ndarray, seed: int) -> float:
  """ACC of k-means on ``x`` against ``labels``, with k = the number of distinct labels."""
  return ceir.cluster_accuracy(labels, ceir.kmeans(x, len(np.unique(labels)), seed=seed))


def run_ceir(
  config,
  workdir: str | Path,
  concepts: Sequence[str],
  train: Split,
  val: Split,
  test: Split,
  *,
  truth: Callable[[int], set[int]] | None = None,
  attributes: dict[str, np.ndarray] | None = None,
) -> dict:
  """Runs the CEIR pipeline; ``truth(i)`` gives the indices (into ``concepts``) of test image i's true
  attributes, for ``attribution_precision_at_3``; ``attributes`` maps names to other [N] test labelings
  (e.g. shape, colour, background): k-means with k = each labeling's number of values on the latent and on
  the raw teacher similarities is scored against it (ACC), to show which labeling they cluster by.

  Returns:
    Metrics: acc, nmi, ari, acc_kmeans_clip, acc_kmeans_concepts, acc_kmeans_teacher,
    acc_by_attribute(_teacher) (with ``attributes``), concept counts after each filter,
    attribution_precision_at_3 and concept_score_precision_at_3 (with ``truth``), IG completeness gap,
    open-world top labels.
  """
  workdir = Path(workdir)
  check(
    config.protocol in ("inductive", "transductive"),
    f"protocol must be inductive or transductive, got {config.protocol!r}",
  )
  proj_cfg, vae_cfg, train_cfg = settings(config)
  key = jax.random.key(config.seed)
  k_proj, k_vae = jax.random.split(key)
  k = int(config.num_clusters)
  for name, s in (("train", train), ("val", val), ("test", test)):
    ceir.check_embeddings(s.features, f"{name} backbone features")
    check(
      s.teacher.shape == (len(s.features), len(concepts)),
      f"{name} teacher similarities have shape {s.teacher.shape}, want ({len(s.features)}, {len(concepts)})",
    )

  keep_a = np.asarray(ceir.filter_a(train.teacher, config.clip_cutoff))
  check(keep_a.any(), f"filter A removed every concept (cutoff {config.clip_cutoff}); lower clip_cutoff")
  res = ceir.train_projection(  # rows split over every process's devices when run as several processes
    k_proj,
    train.features,
    train.teacher[:, keep_a],
    val.features,
    val.teacher[:, keep_a],
    proj_cfg,
    mesh=parallel.data_mesh(),
  )
  kept_b = np.asarray(res.kept)
  check(kept_b.any(), f"filter B removed every concept (cutoff {config.cos3_cutoff}); lower cos3_cutoff")
  concept_idx = np.flatnonzero(keep_a)[kept_b]  # indices into ``concepts`` of the final concepts
  weight = np.asarray(res.weight)[kept_b]
  stats = ceir.fit_standardizer(ceir.concept_scores(train.features, weight))
  z_train, z_test = (np.asarray(ceir.concept_scores(s.features, weight, stats)) for s in (train, test))
  vae_data = z_train if config.protocol == "inductive" else np.concatenate([z_train, z_test])
  state, log = ceir.fit_vae(
    k_vae,
    vae_data,
    vae_cfg,
    train_cfg,
    workdir=workdir / "vae",
    save_every=config.save_every,
    val_data=z_test if config.protocol == "inductive" else None,
  )
  latent, _ = ceir.encode(state, z_test, vae_cfg)
  latent = np.asarray(latent)
  pred = ceir.kmeans(latent, k, seed=config.seed)
  scores = ceir.cluster_scores(test.labels, pred)
  feats = test.features / np.linalg.norm(test.features, axis=1, keepdims=True)
  metrics = {
    "protocol": config.protocol,
    "acc": scores.acc,
    "nmi": scores.nmi,
    "ari": scores.ari,
    "acc_kmeans_clip": ceir.cluster_accuracy(test.labels, ceir.kmeans(feats, k, seed=config.seed)),
    "acc_kmeans_concepts": ceir.cluster_accuracy(test.labels, ceir.kmeans(z_test, k, seed=config.seed)),
    "acc_kmeans_teacher": ceir.cluster_accuracy(test.labels, ceir.kmeans(test.teacher, k, seed=config.seed)),
    # Which labeling does each representation cluster by? k-means with k = that labeling's number of values.
    "acc_by_attribute": {a: kmeans_accuracy(latent, y, config.seed) for a, y in (attributes or {}).items()},
    "acc_by_attribute_teacher": {
      a: kmeans_accuracy(test.teacher, y, config.seed) for a, y in (attributes or {}).items()
    },
    "num_concepts": len(concepts),
    "num_after_filter_a": int(keep_a.sum()),
    "num_after_filter_b": int(kept_b.sum()),
    "projection_steps": int(res.steps),
    "vae_epochs": int(state.epoch),
    "vae_final_loss": log[-1]["loss"] if log else None,
    "num_train": len(train.labels),
    "num_test": len(test.labels),
  }

  n_attr = min(config.num_attributed, len(z_test))
  att = ceir.vae_attributions(state, z_test[:n_attr], vae_cfg, ceir.IGConfig(steps=config.ig_steps))
  gain = np.abs(np.asarray(att.gain))
  metrics["ig_completeness_rel_gap_max"] = float(
    np.max(np.abs(np.asarray(att.delta)) / np.maximum(gain, 1e-12))
  )
  contrib = np.asarray(ceir.normalize_contributions(att.values, config.contribution_norm))
  # An explanation item reads "x" where the image's concept score is above the training mean (z > 0) and
  # "NOT x" below it. Precision@3 ranks the "x" items (the concepts an image is said to show); the signed
  # variant ranks every concept by its contribution, "NOT x" items included.
  shown = np.where(z_test[:n_attr] > 0, contrib, -np.inf)
  top3 = concept_idx[np.asarray(ceir.top_concepts(shown, 3))]
  top3_signed = concept_idx[np.asarray(ceir.top_concepts(contrib, 3))]
  if truth is not None:
    metrics["attribution_precision_at_3"] = precision_at_k(top3, truth)
    metrics["attribution_precision_at_3_signed"] = precision_at_k(top3_signed, truth)
    # Baseline without the VAE: the image's three highest z-scored concept scores.
    top3_scores = concept_idx[np.asarray(ceir.top_concepts(z_test[:n_attr], 3))]
    metrics["concept_score_precision_at_3"] = precision_at_k(top3_scores, truth)
  labels = ceir.open_world_labels(contrib, config.open_world_threshold)
  final_names = [concepts[i] for i in concept_idx]
  metrics["open_world_top"] = ceir.label_names(labels, final_names, top=10)
  io.write_json(
    workdir / "ceir_details.json",
    {
      "kept_concepts": final_names,
      "val_cos3": dict(
        zip(
          [concepts[i] for i in np.flatnonzero(keep_a)], np.asarray(res.val_similarity).tolist(), strict=True
        )
      ),
      "top3_examples": [[concepts[j] for j in row] for row in top3[:20]],
      "open_world_counts": dict(zip(final_names, labels.counts.tolist(), strict=True)),
    },
  )
  io.save_npz(workdir / "latent_test.npz", latent=latent, labels=test.labels, clusters=pred)
  return metrics


def add_common(config) -> None:
  """Shared CEIR hyper-parameters (the authors' defaults where they exist); keys already set are kept."""
  defaults = dict(
    protocol="inductive",
    clip_cutoff=0.25,
    cos3_cutoff=0.45,
    proj_learning_rate=1e-3,
    proj_steps=1000,
    hidden=256,
    latent=128,
    recon="mse",
    decoder_output="auto",  # sigmoid for "bce", linear for "mse" (z-scored targets; VAEConfig)
    kl_weight=1.0,
    batch_size=256,
    learning_rate=5e-5,
    epochs=450,
    save_every=10,
    ig_steps=50,
    num_attributed=500,
    contribution_norm="max",
    open_world_threshold=0.05,
  )
  for key, value in defaults.items():
    if key not in config:
      config[key] = value


def shrink_for_ci(config) -> None:
  """The ``runlocal=True`` sizes shared by the CEIR configs (seconds of compute)."""
  config.num_train, config.num_val, config.num_test = 512, 128, 256
  config.epochs = 3
  config.proj_steps = 100
  config.hidden, config.latent = 32, 8
  config.batch_size = 64
  config.num_attributed = 32
