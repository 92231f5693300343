"""EDDP on the planted synthetic data: fit the schedule, score against ground truth, run the baselines."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import io
from conceptjax.directions import (
  LossConfig,
  Stage,
  SyntheticConfig,
  activations,
  baselines,
  fit,
  fit_standardizer,
  linear_head,
  make_synthetic,
  project_to_data_span,
  scoring,
  signal_values,
  warm_start,
)


def stages_from_config(config, head_fn=linear_head) -> tuple[Stage, ...]:
  """Builds the static Stage tuple from the config's list of dicts (``head_fn``: URA's frozen head)."""
  lc = LossConfig(
    head_fn=head_fn, **{k: tuple(v) if isinstance(v, list) else v for k, v in config.loss.items()}
  )
  out = []
  for st in config.schedule:
    st = dict(st)
    st["objective"] = tuple((n, float(w)) for n, w in st["objective"])
    st["constraints"] = tuple((n, float(t)) for n, t in st.get("constraints", ()))
    out.append(Stage(losses=lc, **st))
  return tuple(out)


def run(config, workdir) -> dict:
  t0, c0 = time.perf_counter(), time.process_time()
  data = make_synthetic(config.seed, SyntheticConfig(images_per_class=config.images_per_class))
  b, p, d = data.x.shape
  flat = data.x.reshape(-1, d)
  labels = data.labels.reshape(-1)
  c = data.encoding.shape[0]
  key = jax.random.key(config.seed)
  std = fit_standardizer(jnp.asarray(flat))
  schedule = stages_from_config(config)
  init = warm_start(
    config.warm_start, key, flat, config.num_detectors, std=std, restarts=config.restarts, seed=config.seed
  )
  res = fit(
    data.x,
    init,
    schedule,
    key,
    std=std,
    head_params=data.head,
    select_after=min(config.select_after, len(schedule) - 1),
  )
  det = res.detectors
  weight = np.asarray(project_to_data_span(det.weight, jnp.asarray(flat)))
  signal = np.asarray(res.signal)
  y = np.asarray(activations(det, jnp.asarray(flat)))
  fit_seconds = time.perf_counter() - t0

  m_iou = scoring.match_detectors(labels, y > 0.5, c)
  m_dec = scoring.match_directions(data.decoding, weight)
  m_enc = scoring.match_directions(data.encoding, signal)
  sv = np.asarray(
    signal_values(jnp.asarray(weight), jnp.asarray(signal), jnp.asarray(flat), jnp.asarray(flat.mean(0)))
  )
  rmse = scoring.signal_value_rmse(data.concept_values.reshape(-1, c), sv, m_dec)

  def enc_cos(est):
    return scoring.match_directions(data.encoding, est).mean

  base = {
    "pattern_cav_cos": enc_cos(baselines.pattern_cav(flat, labels, c)),
    "pca_cos": enc_cos(baselines.pca(flat, c)),
    "fastica_cos": enc_cos(baselines.fastica(flat, c, seed=config.seed)),
    "nmf_cos": enc_cos(baselines.nmf(flat, c, seed=config.seed)),
    "kmeans_cos": enc_cos(baselines.kmeans_centroids(flat, c, seed=config.seed)),
  }
  oracle = baselines.oracle_signals(flat, labels, data.decoding)
  metrics = {
    "iou": m_iou.mean,
    "decoding_cos": m_dec.mean,
    "encoding_cos": m_enc.mean,
    **base,
    "signal_value_rmse": rmse,
    "oracle_encoding_cos": enc_cos(oracle),
    "iou_per_concept": m_iou.score.round(4).tolist(),
    "decoding_cos_per_concept": m_dec.score.round(4).tolist(),
    "encoding_cos_per_concept": m_enc.score.round(4).tolist(),
    "head_accuracy": data.head_accuracy,
    "fit_seconds": fit_seconds,
  }
  workdir = Path(workdir)
  io.save_npz(
    workdir / "directions.npz",
    decoding=weight,
    encoding=signal,
    margin=np.asarray(det.margin),
    offset=np.asarray(det.offset),
    true_decoding=data.decoding,
    true_encoding=data.encoding,
  )
  io.write_json(
    workdir / "stages.json",
    {
      st.name: np.asarray(info.losses[..., -1, :]).tolist()
      for st, info in zip(schedule, res.infos, strict=True)
    },
  )
  metrics["seconds"] = time.perf_counter() - t0
  # CPU time of this process (all threads): a bound on the wall time it would take alone on the machine
  # when it keeps at least one core busy, which the figure ``seconds`` on a shared machine is not.
  metrics["cpu_seconds"] = time.process_time() - c0
  return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
