"""Task: CEIR on planted concept data (``conceptjax.ceir._synthetic.planted_attributes``), no CLIP needed.

A ShapesWorld-like ground truth without images: each row has one class (named by a few class concepts) and
independent nuisance attributes (like colour or background); dead and noise concepts test filters A and B.
Reports the same metrics as the ShapesWorld task, plus whether the filters removed exactly the planted
dead/noise concepts.
"""

from __future__ import annotations

from experiments.tasks.ceir_common import Split, run_ceir


def run(config, workdir) -> dict:
  from conceptjax.ceir._synthetic import planted_attributes

  total = config.num_train + config.num_val + config.num_test
  d = planted_attributes(
    total,
    num_classes=config.num_clusters,
    num_nuisance=config.num_nuisance,
    feature_dim=config.feature_dim,
    seed=config.seed,
  )
  kinds = ["class", "nuisance", "dead", "noise"]
  concepts = [f"{kinds[k]}_{j}" for j, k in enumerate(d.kind)]
  a, b = config.num_train, config.num_train + config.num_val
  split = lambda s: Split(d.teacher[s], d.features[s], d.labels[s])
  present = d.present[b:]
  metrics = run_ceir(
    config,
    workdir,
    concepts,
    split(slice(0, a)),
    split(slice(a, b)),
    split(slice(b, None)),
    truth=lambda i: set(map(int, present[i].nonzero()[0])),
  )
  metrics["planted_dead_and_noise"] = int((d.kind >= 2).sum())
  metrics["filters_exact"] = metrics["num_after_filter_b"] == int((d.kind < 2).sum())
  return metrics
