"""EDDP: encoding-decoding direction pairs on per-patch activations.

* Detectors (``Detectors``, ``activations``, ``logits``): sigmoid half-spaces whose normals are the decoding
  directions; warm starts (``warm_start``: orthogonal / PCA / ICA in standardised space).
* Losses (``LOSSES``, ``register_loss``, ``LossConfig``, ``LossInputs``): pure functions by name.
* Training (``Stage``, ``fit``, ``train_stage``): augmented Lagrangian on optax, a schedule of stages,
  restarts by vmap, patches sharded over devices.
* Encoding directions (``signal_vectors``, ``signal_values``, ``formula_signals``) and URA (``ura_shift``,
  ``ura_entropy``).
* Ground truth (``make_synthetic``), ``scoring`` (Hungarian matching, IoU) and ``baselines``.

References:
  EDDP, arXiv 2509.23926.
"""

from conceptjax.directions import _baselines as baselines
from conceptjax.directions import _scoring as scoring
from conceptjax.directions._detectors import (
  Detectors,
  Standardizer,
  activations,
  centring,
  fit_standardizer,
  from_directions,
  from_raw,
  ica_directions,
  logits,
  orthogonal_directions,
  pca_directions,
  stack_detectors,
  to_raw,
  warm_start,
)
from conceptjax.directions._losses import LOSSES, LossConfig, LossInputs, get_loss, register_loss
from conceptjax.directions._signal import project_to_data_span, signal_values, signal_vectors
from conceptjax.directions._synthetic import (
  LinearHead,
  SyntheticConfig,
  SyntheticData,
  linear_head,
  make_synthetic,
  train_linear_head,
)
from conceptjax.directions._train import (
  FitResult,
  Params,
  Stage,
  StageInfo,
  fit,
  formula_signals,
  selection_score,
  shard_images,
  train_stage,
)
from conceptjax.directions._ura import ura_entropy, ura_shift

__all__ = [
  "LOSSES",
  "Detectors",
  "FitResult",
  "LinearHead",
  "LossConfig",
  "LossInputs",
  "Params",
  "Stage",
  "StageInfo",
  "Standardizer",
  "SyntheticConfig",
  "SyntheticData",
  "activations",
  "baselines",
  "centring",
  "fit",
  "fit_standardizer",
  "formula_signals",
  "from_directions",
  "from_raw",
  "get_loss",
  "ica_directions",
  "linear_head",
  "logits",
  "make_synthetic",
  "orthogonal_directions",
  "pca_directions",
  "project_to_data_span",
  "register_loss",
  "scoring",
  "selection_score",
  "shard_images",
  "signal_values",
  "signal_vectors",
  "stack_detectors",
  "to_raw",
  "train_linear_head",
  "train_stage",
  "ura_entropy",
  "ura_shift",
  "warm_start",
]
