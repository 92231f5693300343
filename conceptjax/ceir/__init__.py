"""CEIR: concept projection (cos^3), concept VAE, clustering, label-free attribution, open-world labels.

Pipeline: teacher similarities P (``teacher_similarities``) -> ``filter_a`` -> ``train_projection`` (cos^3,
early stopping, filter B) -> ``concept_scores`` z-scored with ``fit_standardizer`` -> ``fit_vae`` ->
``encode`` (latent means) -> ``kmeans`` + ``cluster_scores``; ``vae_attributions`` -> ``open_world_labels``.

References:
  Cui et al., "CEIR: Concept-based Explainable Image Representation Learning", arXiv 2312.10747, 2023.
"""

from conceptjax.ceir._attribution import (
  Attribution,
  IGConfig,
  OpenWorldLabels,
  integrated_gradients,
  label_free_target,
  label_names,
  normalize_contributions,
  open_world_labels,
  top_concepts,
  vae_attributions,
)
from conceptjax.ceir._cluster import ClusterScores, cluster_accuracy, cluster_scores, kmeans
from conceptjax.ceir._projection import (
  ProjectionConfig,
  ProjectionResult,
  Standardizer,
  concept_scores,
  cos3_loss,
  cos3_similarity,
  fit_standardizer,
  standardize,
  train_projection,
)
from conceptjax.ceir._teacher import (
  check_embeddings,
  clip_teacher_similarities,
  filter_a,
  read_concepts,
  teacher_similarities,
)
from conceptjax.ceir._train import (
  EpochMetrics,
  TrainConfig,
  TrainState,
  encode,
  epoch_batches,
  fit_vae,
  init_state,
  train_epoch,
)
from conceptjax.ceir._vae import VAE, VAEConfig, clamped_bce, vae_loss, vae_loss_terms

__all__ = [
  "Attribution",
  "ClusterScores",
  "EpochMetrics",
  "IGConfig",
  "OpenWorldLabels",
  "ProjectionConfig",
  "ProjectionResult",
  "Standardizer",
  "TrainConfig",
  "TrainState",
  "VAE",
  "VAEConfig",
  "check_embeddings",
  "clamped_bce",
  "clip_teacher_similarities",
  "cluster_accuracy",
  "cluster_scores",
  "concept_scores",
  "cos3_loss",
  "cos3_similarity",
  "encode",
  "epoch_batches",
  "filter_a",
  "fit_standardizer",
  "fit_vae",
  "init_state",
  "integrated_gradients",
  "kmeans",
  "label_free_target",
  "label_names",
  "normalize_contributions",
  "open_world_labels",
  "read_concepts",
  "standardize",
  "teacher_similarities",
  "top_concepts",
  "train_epoch",
  "train_projection",
  "vae_attributions",
  "vae_loss",
  "vae_loss_terms",
]
