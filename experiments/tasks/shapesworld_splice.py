"""Task: SpLiCE on ShapesWorld with the shipped tiny CLIP, scored against ground truth, with an HTML report.

The evaluation behind ``conceptjax main`` (config ``experiments/configs/shapesworld_splice.py``):

1. Vocabulary: every surface form of every shape, colour, size and background value (``world_concepts``)
   plus the distractor words shipped in ``conceptjax/assets/shapesworld_distractors.txt`` (common words that
   name nothing in the world and share no word piece with a world word, see ``check_distractors``).
2. Image mean ``mu``: mean of the unit-normalised embeddings of a reference set (default-world ``train``
   images; SpLiCE used MSCOCO).
3. Concept recovery on held-out single-object images (``test`` split): ``concept_recovery`` gives
   precision@3 and recall per image at ``l1_penalty``.
4. Zero-shot accuracy per attribute, dense vs recomposed (``splice.classify``), for every penalty of
   ``l1_sweep`` (accuracy against mean l0).
5. A correlated split (star/circle x water/grass, P(aligned) = ``correlation``) and a group-balanced test
   split: the concept statistics of the correlated split (``splice.class_histograms`` /
   ``class_separation``); a linear probe (sklearn LogisticRegression) on the recomposed embeddings of the
   correlated split, scored by worst-group accuracy on the balanced split before and after removing every
   background concept from the test decompositions and recomposing (``remove_background``, SpLiCE's
   intervention). A second probe on the concept weights themselves is reported beside it.
6. The HTML report (``conceptjax.report``) in ``config.report_dir`` (default ``WORKDIR/report``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

import conceptjax
from conceptjax import parallel, splice
from conceptjax.data import shapesworld as sw
from conceptjax.errors import check
from conceptjax.report import Bar, Report
from experiments.tasks.ceir_shapesworld import true_attributes
from experiments.tasks.ceir_shapesworld import world_concepts as _ceir_world_concepts

ASSETS = Path(conceptjax.__file__).parent / "assets"
SHIPPED_CLIP = ASSETS / "shapesworld_clip"
DISTRACTORS = ASSETS / "shapesworld_distractors.txt"
ATTRS = ("shape", "color", "background")  # zero-shot attributes
RECOVERY_ATTRS = ("shape", "color", "size", "background")  # attributes a concept can name
Meaning = tuple[str, str] | None  # (attribute, value) a concept names, None for a distractor


# --------------------------------------------------------------------------------------------- vocabulary


def world_concepts() -> tuple[list[str], list[Meaning]]:
  """Every surface form of every shape/colour/size/background value and the (attribute, value) it names."""
  concepts, meaning = _ceir_world_concepts()
  keep = [i for i, m in enumerate(meaning) if m is not None]
  return [concepts[i] for i in keep], [meaning[i] for i in keep]


def world_word_pieces() -> set[str]:
  """The content words of the world's captions (attribute forms, position words, "object", ...)."""
  pieces = {
    "object",
    "left",
    "right",
    "top",
    "bottom",
    "upper",
    "lower",
    "center",
    "middle",
    "photo",
    "image",
  }
  for forms in sw.SYNONYMS.values():
    for surface in forms.values():
      for form in surface:
        pieces.update(t for t in form.split() if t not in ("a", "an", "the"))
  return pieces


def check_distractors(words: Sequence[str]) -> list[str]:
  """The distractors that overlap a world word (one contains the other), e.g. "bright" ("right")."""
  pieces = world_word_pieces()
  return [w for w in words if any(p in w or w in p for p in pieces)]


def read_distractors(path: str | Path = DISTRACTORS, limit: int = 0) -> list[str]:
  """Distractor words, one per line (blank lines skipped); ``limit`` > 0 keeps the first ``limit``."""
  path = Path(path)
  check(path.is_file(), f"distractor file not found: {path}")
  words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
  bad = check_distractors(words)
  check(not bad, f"distractor file {path}: {bad[:5]} overlap world words (they would not be distractors)")
  return words[:limit] if limit > 0 else words


def vocabulary(config) -> tuple[list[str], list[Meaning]]:
  """World concepts followed by the distractors."""
  concepts, meaning = world_concepts()
  words = [w for w in read_distractors(config.distractors or DISTRACTORS, config.num_distractors)]
  words = [w for w in dict.fromkeys(words) if w not in concepts]
  return concepts + words, meaning + [None] * len(words)


# ------------------------------------------------------------------------------------------------ metrics


class Recovery(NamedTuple):
  """Concept recovery per image.

  Attributes:
    precision: [N] share of the image's (up to) k heaviest active concepts that name a true attribute
      (denominator ``min(k, l0)``; 0 for an empty decomposition).
    recall: [N] share of the image's true attribute values named by at least one active concept.
    attribute_recall: {attribute: [N] 1 if the image's value(s) of that attribute are all named, else 0}.
    l0: [N] number of active concepts.
    hits: [N] how many of the k heaviest active concepts are true (``hits / k`` is the strict precision@k,
      which counts missing slots as wrong).
  """

  precision: np.ndarray
  recall: np.ndarray
  attribute_recall: dict[str, np.ndarray]
  l0: np.ndarray
  hits: np.ndarray


def concept_recovery(
  indices: np.ndarray,
  values: np.ndarray,
  meaning: Sequence[Meaning],
  truths: Sequence[set[tuple[str, str]]],
  k: int = 3,
) -> Recovery:
  """Precision@k and recall of sparse codes against the true attributes of each image.

  A concept is true for an image when it is a word or synonym of one of the image's attribute values.

  Args:
    indices: [N, m] concept indices (-1 = unused slot), any order.
    values: [N, m] weights (> 0 = active).
    meaning: per concept, the (attribute, value) it names or None.
    truths: per image, the set of its (attribute, value) pairs.
    k: how many of the heaviest concepts precision looks at.

  Returns:
    Recovery with [N] arrays.
  """
  indices, values = np.asarray(indices), np.asarray(values)
  n = indices.shape[0]
  check(len(truths) == n, f"{len(truths)} truth sets for {n} codes")
  prec, rec, l0, hits = np.zeros(n), np.zeros(n), np.zeros(n, np.int32), np.zeros(n, np.int32)
  per_attr = {a: np.zeros(n) for a in RECOVERY_ATTRS}
  for i in range(n):
    active = (indices[i] >= 0) & (values[i] > 0)
    order = np.argsort(-np.where(active, values[i], -np.inf), kind="stable")[: int(active.sum())]
    named = [meaning[int(indices[i, j])] for j in order]
    l0[i] = len(named)
    top = named[:k]
    hits[i] = sum(m in truths[i] for m in top)
    prec[i] = hits[i] / len(top) if top else 0.0
    hit = set(named) & truths[i]
    rec[i] = len(hit) / max(len(truths[i]), 1)
    for a in RECOVERY_ATTRS:
      want = {t for t in truths[i] if t[0] == a}
      per_attr[a][i] = float(bool(want) and want <= hit)
  return Recovery(prec, rec, per_attr, l0, hits)


def worst_group(pred: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, dict[int, float]]:
  """(worst-group accuracy, {group: accuracy}) over the groups present."""
  acc = {int(g): float(np.mean(pred[groups == g] == labels[groups == g])) for g in np.unique(groups)}
  return min(acc.values()), acc


# ---------------------------------------------------------------------------------------------- pipeline


class Codes(NamedTuple):
  """Sparse codes of a set of embeddings (numpy)."""

  indices: np.ndarray  # [N, m] int32, -1 = unused
  values: np.ndarray  # [N, m]
  l0: np.ndarray  # [N]


def decompose(dictionary, mean, embeddings, l1_penalty: float, chunk: int, mesh=None) -> Codes:
  """``splice.decompose`` in fixed-size chunks (the last one padded), so every call shares one compile."""
  parts = []
  for start in range(0, embeddings.shape[0], chunk):
    rows, n = parallel.pad_to_multiple(embeddings[start : start + chunk], chunk)
    res = splice.decompose(dictionary, mean, rows, l1_penalty, mesh=mesh)
    parts.append((np.asarray(res.indices)[:n], np.asarray(res.values)[:n], np.asarray(res.l0)[:n]))
  return Codes(*(np.concatenate(p) for p in zip(*parts, strict=True)))


def encode_images(model, images: np.ndarray, chunk: int) -> np.ndarray:
  """``model.encode_images`` with every call padded to ``chunk`` rows (one compile for all image sets)."""
  padded, n = parallel.pad_to_multiple(images, chunk)
  return model.encode_images(padded, batch_size=chunk)[:n]


def recompose(dictionary, mean, codes: Codes) -> np.ndarray:
  """[N, d] recomposed embeddings."""
  return np.asarray(splice.recompose(dictionary.matrix, mean, codes.indices, codes.values))


def meaning_groups(meaning: Sequence[Meaning]) -> tuple[np.ndarray, list]:
  """Concept -> group id, one group per (attribute, value) (synonyms pooled) and one per distractor.

  Returns:
    (int32 [c] group of each concept, the group keys: (attribute, value) or ("distractor", concept index)).
  """
  keys: dict = {}
  ids = [keys.setdefault(m if m is not None else ("distractor", j), len(keys)) for j, m in enumerate(meaning)]
  return np.asarray(ids, np.int32), list(keys)


def group_codes(indices: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """[N, k] concept indices -> group indices (-1 padding kept); weights of one group add up downstream."""
  indices = np.asarray(indices)
  return np.where(indices >= 0, groups[np.maximum(indices, 0)], -1).astype(np.int32)


def background_concepts(concepts: Sequence[str], meaning: Sequence[Meaning]) -> list[str]:
  """The concepts that name a background."""
  return [c for c, m in zip(concepts, meaning, strict=True) if m is not None and m[0] == "background"]


def remove_background(dictionary, mean, codes: Codes, meaning: Sequence[Meaning]) -> tuple[Codes, np.ndarray]:
  """SpLiCE's intervention: zero every background concept's weight and recompose.

  Returns:
    (codes with the background weights zeroed, recomposed embeddings [N, d]).
  """
  names = background_concepts(dictionary.concepts, meaning)
  values, emb = splice.intervene(dictionary, mean, codes.indices, codes.values, names)
  values = np.asarray(values)
  return Codes(codes.indices, values, (values > 0).sum(axis=1)), np.asarray(emb)


def dense_weights(codes: Codes, c: int) -> np.ndarray:
  """[N, c] dense weights (the probe's features; c is small here)."""
  out = np.zeros((codes.indices.shape[0], c), np.float32)
  rows, cols = np.nonzero(codes.indices >= 0)
  out[rows, codes.indices[rows, cols]] = codes.values[rows, cols]
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _zeroshot_truth(samples: sw.Samples) -> dict[str, np.ndarray]:
  return {attr: samples.main(attr) for attr in ("shape", "color", "background")}


def validate(config) -> Path:
  """Checks the config's values before any work (one InputError line each); returns the CLIP folder."""
  import math

  lam = config.l1_penalty
  check(math.isfinite(lam) and lam >= 0, f"l1_penalty must be a finite number >= 0, got {lam}")
  check(all(p >= 0 for p in config.l1_sweep), f"l1_sweep holds a negative penalty: {tuple(config.l1_sweep)}")
  check(0 <= config.correlation <= 1, f"correlation is a probability in [0, 1], got {config.correlation}")
  for key in ("num_reference", "num_test", "num_grid", "num_corr_train", "num_corr_test", "chunk"):
    check(config[key] >= 1, f"{key} must be >= 1, got {config[key]}")
  check(config.permutations >= 1, f"permutations must be >= 1, got {config.permutations}")
  check(config.num_distractors >= 0, f"num_distractors must be >= 0, got {config.num_distractors}")
  check(
    not config.distractors or Path(config.distractors).is_file(),
    f"distractor file not found: {config.distractors}",
  )
  clip_dir = Path(config.clip) if config.clip else SHIPPED_CLIP
  check(
    clip_dir.is_dir(),
    f"ShapesWorld CLIP not found at {clip_dir}: pass a save_pretrained CLIP folder (clip=DIR in the config "
    "argument, --clip DIR with `conceptjax main`)",
  )
  return clip_dir


def _stage(t0: float, message: str) -> None:
  """One progress line on stderr: seconds since the start and what runs now."""
  import sys

  print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)


def run(config, workdir) -> dict:
  from sklearn.linear_model import LogisticRegression

  from conceptjax.models import clip

  t0 = time.perf_counter()
  workdir = Path(workdir)
  clip_dir = validate(config)
  _stage(t0, f"loading the CLIP in {clip_dir}")
  model = clip.load(clip_dir)
  concepts, meaning = vocabulary(config)
  c = len(concepts)
  chunk, seed = config.chunk, config.seed
  # Devices for the solver (0 = all). Tests use 1: with 8 fake CPU devices the working-set compile at these
  # shapes (c=248, d=64, 64 rows) hung in XLA on the shared machine (docs/scaling.md).
  solver_mesh = parallel.data_mesh(jax.devices()[: config.solver_devices]) if config.solver_devices else None
  # Concepts and zero-shot prompts in one call (one compile of the text encoder).
  prompt_texts = [p for a in ATTRS for p in sw.zeroshot_prompts(a)]
  _stage(t0, f"embedding {len(concepts)} concepts and the zero-shot prompts (first call compiles)")
  texts = model.encode_texts(concepts + prompt_texts, batch_size=64)
  dictionary = splice.dictionary_from_embeddings(texts[:c], concepts, model.name)
  prompts, start = {}, c
  for a in ATTRS:
    prompts[a] = texts[start : start + len(sw.ATTRIBUTES[a])]
    start += len(sw.ATTRIBUTES[a])
  lam = config.l1_penalty

  # Image mean from a reference set of the default world.
  world = sw.WorldConfig(image_size=config.image_size)
  _stage(t0, f"image mean of {config.num_reference} reference images")
  reference = sw.generate(world, config.num_reference, seed=seed, split="train")
  mean = splice.embedding_mean(encode_images(model, reference.images, chunk))

  # Held-out single-object images: recovery and zero-shot.
  single = sw.generate(
    sw.WorldConfig(image_size=config.image_size, max_objects=1), config.num_test, seed=seed, split="test"
  )
  emb = encode_images(model, single.images, chunk)
  truth_zs = _zeroshot_truth(single)
  dense_acc = {a: float(np.mean(splice.classify(emb, prompts[a]) == truth_zs[a])) for a in ATTRS}
  truths = [true_attributes(single, i) for i in range(len(single))]
  sweep = sorted(set(config.l1_sweep) | {lam})
  rows = []
  main = None
  for i, pen in enumerate(sweep):
    first = " (the first compiles the solver)" if i == 0 else ""
    _stage(t0, f"decomposing {len(emb)} test images at l1_penalty {pen:g} ({i + 1}/{len(sweep)}){first}")
    codes = decompose(dictionary, mean, emb, pen, chunk, solver_mesh)
    z_hat = recompose(dictionary, mean, codes)
    rec = concept_recovery(codes.indices, codes.values, meaning, truths, k=3)
    row = {
      "l1_penalty": float(pen),
      "mean_l0": float(codes.l0.mean()),
      "cosine": float(np.mean(np.sum(_unit(z_hat) * _unit(emb), axis=1))),
      "precision_at_3": float(rec.precision.mean()),
      "recall": float(rec.recall.mean()),
    }
    for a in ATTRS:
      row[f"sparse_{a}"] = float(np.mean(splice.classify(z_hat, prompts[a]) == truth_zs[a]))
    rows.append(row)
    if pen == lam:
      main = (codes, rec, row)
  codes, rec, main_row = main

  # Per-image decompositions (default world, one or two objects).
  grid = sw.generate(world, config.num_grid, seed=seed, split="validation")
  grid_codes = decompose(dictionary, mean, encode_images(model, grid.images, chunk), lam, chunk, solver_mesh)

  # Correlated split and a group-balanced test split.
  _stage(t0, f"correlated split (correlation {config.correlation:g}): embedding, decomposing, probes")
  corr_world = sw.waterbirds_like(p=config.correlation, image_size=config.image_size, max_objects=1)
  bal_world = sw.waterbirds_like(p=0.5, image_size=config.image_size, max_objects=1)
  corr = sw.generate(corr_world, config.num_corr_train, seed=seed, split="train")
  bal = sw.generate(bal_world, config.num_corr_test, seed=seed, split="test")
  star = sw.ATTRIBUTES["shape"].index("star")
  y_corr, y_bal = (corr.label == star).astype(np.int32), (bal.label == star).astype(np.int32)
  corr_emb = encode_images(model, corr.images, chunk)
  corr_codes = decompose(dictionary, mean, corr_emb, lam, chunk, solver_mesh)
  bal_emb = encode_images(model, bal.images, chunk)
  bal_codes = decompose(dictionary, mean, bal_emb, lam, chunk, solver_mesh)
  key = jax.random.key(seed)
  sep = splice.class_separation(
    key, corr_codes.indices, corr_codes.values, y_corr, 2, c, num_permutations=config.permutations
  )
  hist = splice.class_histograms(corr_codes.indices, corr_codes.values, y_corr, 2, c)
  # The same per attribute value: synonyms ("water", "the sea", ...) pooled into one concept.
  concept_group, group_keys = meaning_groups(meaning)
  corr_groups = group_codes(corr_codes.indices, concept_group)
  g_hist = splice.class_histograms(corr_groups, corr_codes.values, y_corr, 2, len(group_keys))
  g_sep = splice.class_separation(
    key, corr_groups, corr_codes.values, y_corr, 2, len(group_keys), num_permutations=config.permutations
  )
  bal_hist = splice.class_histograms(bal_codes.indices, bal_codes.values, y_bal, 2, c)

  # Probes trained on the correlated split; worst group on the balanced split.
  bg_after, bal_after_emb = remove_background(dictionary, mean, bal_codes, meaning)
  probe = LogisticRegression(C=config.probe_c, max_iter=5000)
  probe.fit(recompose(dictionary, mean, corr_codes), y_corr)
  groups = bal.group
  wg_before, acc_before = worst_group(probe.predict(recompose(dictionary, mean, bal_codes)), y_bal, groups)
  wg_after, acc_after = worst_group(probe.predict(bal_after_emb), y_bal, groups)
  dense_probe = LogisticRegression(C=config.probe_c, max_iter=5000)
  dense_probe.fit(_unit(corr_emb), y_corr)
  wg_dense, acc_dense = worst_group(dense_probe.predict(_unit(bal_emb)), y_bal, groups)
  w_probe = LogisticRegression(C=config.probe_c, max_iter=5000)
  w_probe.fit(dense_weights(corr_codes, c), y_corr)
  wg_w_before, acc_w_before = worst_group(w_probe.predict(dense_weights(bal_codes, c)), y_bal, groups)
  wg_w_after, acc_w_after = worst_group(w_probe.predict(dense_weights(bg_after, c)), y_bal, groups)

  water = group_keys.index(("background", "water"))
  metrics = {
    "zeroshot_shape": dense_acc["shape"],
    "zeroshot_color": dense_acc["color"],
    "zeroshot_background": dense_acc["background"],
    **{f"zeroshot_{a}_sparse": main_row[f"sparse_{a}"] for a in ATTRS},
    "precision_at_3": float(rec.precision.mean()),
    "precision_at_3_strict": float(rec.hits.mean() / 3),
    "recall": float(rec.recall.mean()),
    **{f"recall_{a}": float(rec.attribute_recall[a].mean()) for a in RECOVERY_ATTRS},
    "mean_l0": float(codes.l0.mean()),
    "cosine": main_row["cosine"],
    "l1_penalty": float(lam),
    "water_weight_star": float(g_hist.mean_weight[1, water]),
    "water_weight_circle": float(g_hist.mean_weight[0, water]),
    "water_p_value": float(g_sep.p_value[1, water]),
    "worst_group_before": wg_before,
    "worst_group_after": wg_after,
    "worst_group_dense_probe": wg_dense,
    "worst_group_weights_before": wg_w_before,
    "worst_group_weights_after": wg_w_after,
    "num_concepts": c,
    "num_distractors": sum(m is None for m in meaning),
  }
  report_dir = Path(config.report_dir) if config.report_dir else workdir / "report"
  _stage(t0, f"writing the report into {report_dir}")
  metrics["seconds"] = round(time.perf_counter() - t0, 2)
  write_report(
    report_dir,
    config=config,
    clip_dir=clip_dir,
    concepts=concepts,
    meaning=meaning,
    metrics=metrics,
    sweep_rows=rows,
    dense_acc=dense_acc,
    grid=grid,
    grid_codes=grid_codes,
    hist=hist,
    bal_hist=bal_hist,
    sep=sep,
    probe_acc={
      "dense embeddings": acc_dense,
      "recomposed (before)": acc_before,
      "recomposed, background removed (after)": acc_after,
      "concept weights (before)": acc_w_before,
      "concept weights, background removed (after)": acc_w_after,
    },
  )
  metrics["report"] = str(report_dir / "index.html")
  metrics["seconds"] = round(time.perf_counter() - t0, 2)
  return metrics


# ------------------------------------------------------------------------------------------------ report


def reproducing_spec(config) -> str:
  """``experiments/configs/shapesworld_splice.py:ARGS`` with every argument that differs from its default."""
  from experiments.configs import shapesworld_splice as cfg_lib

  default = cfg_lib.get_config(f"runlocal={config.runlocal}")
  args = [f"seed={config.seed}"] + [
    f"{k}={config[k]!r}" for k in sorted(config.keys()) if k != "seed" and config[k] != default.get(k)
  ]
  args += ["runlocal=True"] if config.runlocal else []
  return "experiments/configs/shapesworld_splice.py:" + ",".join(args)


def write_report(directory: Path, **r) -> Path:
  """Writes the HTML report (index.html + PNGs) into ``directory``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  config, m, concepts, meaning = r["config"], r["metrics"], r["concepts"], r["meaning"]
  rep = Report(directory, "SpLiCE on ShapesWorld")
  rep.text(
    f"CLIP: {r['clip_dir']}. Vocabulary: {len(concepts)} concepts "
    f"({len(concepts) - m['num_distractors']} world words and synonyms, {m['num_distractors']} distractors). "
    f"l1 penalty {config.l1_penalty}, seed {config.seed}, {m['seconds']:.0f} s."
  )
  rep.code(f"python -m experiments.run --config {reproducing_spec(config)}")
  rep.heading("Headline metrics")
  keys = [
    "zeroshot_shape",
    "zeroshot_color",
    "zeroshot_background",
    "precision_at_3",
    "recall",
    "mean_l0",
    "worst_group_before",
    "worst_group_after",
  ]
  rep.table(["metric", "value"], [[k, m[k]] for k in keys])

  rep.heading("1. Per-image decompositions")
  rep.text("Green bars: concepts that name one of the image's true attributes; grey: anything else.")
  cards = []
  g, gc = r["grid"], r["grid_codes"]
  for i in range(len(g)):
    truth = true_attributes(g, i)
    bars = [
      Bar(concepts[int(j)], float(v), meaning[int(j)] in truth)
      for j, v in zip(gc.indices[i], gc.values[i], strict=True)
      if j >= 0 and v > 0
    ][:8]
    big = np.repeat(np.repeat(g.images[i], 2, axis=0), 2, axis=1)
    notes = ("true: " + ", ".join(sorted(v for _, v in truth)), f"l0 = {int(gc.l0[i])}")
    cards.append(rep.card(big, f"image_{i:02d}", g.captions[i], bars, notes))
  rep.cards(cards)

  rep.heading("2. Concept recovery (held-out single-object images)")
  rep.text(
    f"{config.num_test} test images; precision@3 = share of the (up to) 3 heaviest active concepts naming a "
    "true attribute (shape, colour, size or background word or synonym); strict: divided by 3 even when "
    "fewer than 3 concepts are active; recall = share of the 4 true attribute values named by at least one "
    "active concept."
  )
  rep.table(
    ["precision@3", "strict precision@3", "recall", *(f"recall {a}" for a in RECOVERY_ATTRS), "mean l0"],
    [
      [
        m["precision_at_3"],
        m["precision_at_3_strict"],
        m["recall"],
        *(m[f"recall_{a}"] for a in RECOVERY_ATTRS),
        m["mean_l0"],
      ]
    ],
  )

  rep.heading("3. Zero-shot accuracy: dense vs sparse, against l0")
  sweep = r["sweep_rows"]
  rep.table(
    ["l1 penalty", "mean l0", "cosine", "precision@3", "recall", "shape", "colour", "background"],
    [
      ["dense", "-", 1.0, "-", "-", *(r["dense_acc"][a] for a in ATTRS)],
      *[
        [
          s["l1_penalty"],
          s["mean_l0"],
          s["cosine"],
          s["precision_at_3"],
          s["recall"],
          *(s[f"sparse_{a}"] for a in ATTRS),
        ]
        for s in sweep
      ],
    ],
    caption="Sparse = zero-shot on the recomposed embedding at that penalty.",
  )
  fig, ax = plt.subplots(figsize=(6, 4))
  l0s = [s["mean_l0"] for s in sweep]
  for a, color in zip(ATTRS, ("C0", "C1", "C2"), strict=True):
    ax.plot(l0s, [s[f"sparse_{a}"] for s in sweep], "o-", color=color, label=f"{a} (sparse)")
    ax.axhline(r["dense_acc"][a], color=color, ls="--", lw=1, label=f"{a} (dense)")
  ax.set_xlabel("mean l0")
  ax.set_ylabel("zero-shot accuracy")
  ax.set_ylim(0, 1.02)
  ax.legend(fontsize=7)
  rep.figure(fig, "zeroshot_vs_l0", "Zero-shot accuracy of recomposed (solid) vs dense (dashed) embeddings.")

  rep.heading("4. Correlated split: planted star-water correlation")
  rep.text(
    f"Training split: star/circle on water/grass, P(water | star) = P(grass | circle) = {config.correlation} "
    f"({config.num_corr_train} images). Balanced test split: the same world with p = 0.5 "
    f"({config.num_corr_test} images). p-value: one-sided permutation test ({config.permutations} "
    "permutations) of the mean-weight difference star minus circle on the correlated split. "
    f"All concepts that name water pooled (water, the sea, ...): mean weight {m['water_weight_star']:.4f} "
    f"on stars vs {m['water_weight_circle']:.4f} on circles (p = {m['water_p_value']:.4f})."
  )
  hist, bal, sep = r["hist"], r["bal_hist"], r["sep"]
  shown = [j for j, mm in enumerate(meaning) if mm is not None and mm[0] in ("background", "shape")]
  shown = [j for j in shown if hist.mean_weight[:, j].max() > 0 or bal.mean_weight[:, j].max() > 0]
  shown.sort(key=lambda j: -abs(sep.difference[1, j]))
  rep.table(
    ["concept", "star (corr.)", "circle (corr.)", "difference", "p-value", "star (bal.)", "circle (bal.)"],
    [
      [
        concepts[j],
        hist.mean_weight[1, j],
        hist.mean_weight[0, j],
        sep.difference[1, j],
        sep.p_value[1, j],
        bal.mean_weight[1, j],
        bal.mean_weight[0, j],
      ]
      for j in shown[:12]
    ],
    caption="Mean concept weight per class (background and shape concepts, most separating first).",
    float_format="{:.4f}",
  )
  fig, ax = plt.subplots(figsize=(6, 3.5))
  top = shown[:8]
  x = np.arange(len(top))
  ax.bar(x - 0.2, hist.mean_weight[1, top], 0.4, label="star")
  ax.bar(x + 0.2, hist.mean_weight[0, top], 0.4, label="circle")
  ax.set_xticks(x, [concepts[j] for j in top], rotation=30, ha="right")
  ax.set_ylabel("mean weight (correlated split)")
  ax.legend()
  rep.figure(fig, "class_concepts", "Mean concept weight per class on the correlated split.")

  names = [sw.group_name(int(gid)) for gid in sorted(next(iter(r["probe_acc"].values())))]
  rep.table(
    ["probe / test input", *names, "worst group"],
    [[k, *(v[g] for g in sorted(v)), min(v.values())] for k, v in r["probe_acc"].items()],
    caption="Linear probe (LogisticRegression) trained on the correlated split; accuracy per group of the "
    "balanced split. Intervention: every background concept removed from the test decompositions.",
  )
  fig, ax = plt.subplots(figsize=(6, 3.5))
  keys = ["recomposed (before)", "recomposed, background removed (after)"]
  x = np.arange(len(names))
  for k, (label, off) in enumerate(zip(keys, (-0.2, 0.2), strict=True)):
    acc = r["probe_acc"][label]
    ax.bar(x + off, [acc[g] for g in sorted(acc)], 0.4, label=["before", "after"][k])
  ax.set_xticks(x, names, rotation=20)
  ax.set_ylabel("probe accuracy")
  ax.set_ylim(0, 1.02)
  ax.legend()
  rep.figure(fig, "worst_group", "Probe accuracy per group before and after removing background concepts.")
  return rep.write()
