"""Task: TExplain spurious-feature detection and mitigation on ShapesWorld (texplain_shapesworld config).

Design (see the config's docstring for the why):
- Classifiers: ``conceptjax.models.classifier.SmallCNN`` (star vs circle); TExplain reads the globally
  average-pooled output of its last conv block (the input of its linear head).
- Explained images: the held-out images of a group-balanced split (star/circle x all seven backgrounds) that
  the classifier PREDICTS as star, so each classifier is explained on what it calls a star.
- Both translators are trained on the same neutral captioned split; only the classifier differs.
- Significance over images (the independent units): an image "says water" when a majority of its sentences
  name water; Fisher's exact test, one-sided, on the 2x2 table (classifier x says water).
- Mitigation: the background (the generator's mask) of ``mask_share`` of the correlated training images is
  replaced by a random background texture (or grey), then the classifier is retrained.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from conceptjax import io, texplain
from conceptjax.data import _shapes_draw as draw
from conceptjax.data import shapesworld as sw
from conceptjax.errors import check
from conceptjax.models import classifier
from conceptjax.models import lm as lm_lib

STAR = sw.ATTRIBUTES["shape"].index("star")
WATER = sw.ATTRIBUTES["background"].index("water")


def worlds(config) -> dict[str, sw.WorldConfig]:
  """The neutral world (star/circle, seven backgrounds, independent) and the correlated one.

  Correlated: P(water | star) = p, P(water | circle) = 1 - p (circles spread over the six other backgrounds).
  """
  neutral = sw.WorldConfig(image_size=config.image_size, max_objects=1, shapes=("star", "circle"))
  p = config.p_correlated
  correlated = dataclasses.replace(
    neutral,
    correlations=(
      sw.Correlation("shape", "star", "background", "water", p),
      sw.Correlation("shape", "circle", "background", "water", 1.0 - p),
    ),
  )
  return {"neutral": neutral, "correlated": correlated}


def images(samples: sw.Samples, mask_share: float = 0.0, fill: str = "random", seed: int = 0) -> np.ndarray:
  """float32 [N, H, W, 3] in [0, 1]; with ``mask_share`` > 0 the background of that share of the images is
  replaced (mitigation): ``fill="random"`` draws a uniformly random background texture, ``"grey"`` sets 0.5.
  """
  check(fill in ("random", "grey"), f"mask_fill must be 'random' or 'grey', got {fill!r}")
  x = samples.images.astype(np.float32) / 255.0
  if mask_share <= 0:
    return x
  rng = np.random.default_rng(seed)
  hide = rng.random(len(x)) < mask_share
  if fill == "grey":
    new = np.float32(0.5)
  else:
    bg = rng.integers(len(sw.ATTRIBUTES["background"]), size=len(x))
    new = draw.textures(bg, x.shape[1], rng).clip(0, 255) / 255.0
  return np.where((samples.background_mask & hide[:, None, None])[..., None], new, x).astype(np.float32)


def labels(samples: sw.Samples) -> np.ndarray:
  return (samples.label == STAR).astype(np.int32)  # 1 = star, 0 = circle


def classifier_config(config) -> classifier.ClassifierConfig:
  widths = tuple(config.classifier_widths)
  return classifier.ClassifierConfig(
    num_classes=2, widths=widths, feature_block=len(widths) - 1, learning_rate=config.classifier_lr
  )


@functools.partial(jax.jit, static_argnames=("cfg",))
def _predict(params, x, *, cfg):
  """(predicted class [B], pooled last-block features [B, C]: the linear head's input)."""
  logits, feats = classifier.predict(params, x, cfg=cfg)
  return jnp.argmax(logits, -1), feats.mean(axis=(1, 2))


# Jitted initialisation: eager flax init compiles every small op apart (tens of seconds on a loaded machine).
_init_state = jax.jit(classifier.create_train_state, static_argnums=(1, 2))


def train_classifier(config, x, y, key):
  """Adam on cross-entropy (``classifier.train_step``, one compilation shared by the three classifiers)."""
  cfg = classifier_config(config)
  state = _init_state(key, cfg, tuple(x.shape[1:]))
  seed = lm_lib.seed_from_key(jax.random.fold_in(key, 1))

  def batch_fn(s):
    rows = lm_lib.minibatch_indices(seed, s, len(x), config.classifier_batch)
    return x[rows], y[rows]

  step = lambda st, b: classifier.train_step(st, *b, cfg=cfg)
  state, _ = lm_lib.fit(step, state, batch_fn, config.classifier_steps)
  return state.params


def predict(config, params, x, size=256):
  """(pred [N], features [N, C]) in fixed-size chunks (the last one padded): one compilation for all."""
  cfg = classifier_config(config)
  preds, feats = [], []
  for i in range(0, len(x), size):
    chunk = x[i : i + size]
    n = len(chunk)
    if n < size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, 0)])
    p, f = _predict(params, chunk, cfg=cfg)
    preds.append(np.asarray(p)[:n])
    feats.append(np.asarray(f)[:n])
  return np.concatenate(preds), np.concatenate(feats)


def accuracy_report(config, params, samples):
  """(mean accuracy, {group name: accuracy}) over ``samples``."""
  correct = predict(config, params, images(samples))[0] == labels(samples)
  groups = {
    sw.group_name(int(g)): float(correct[samples.group == g].mean()) for g in np.unique(samples.group)
  }
  return float(correct.mean()), groups


def explain(config, lm, params, translator_set, test, key, workdir, name):
  """Trains a translator on this classifier's features of ``translator_set`` and samples sentences for the
  first ``num_explained`` images of ``test`` that the classifier predicts as star.

  Returns:
    (hits [n, S] bool: sentence names a spurious word, backgrounds [n] of the explained images, WordStats,
    final translator loss or None when the translator was restored finished from its checkpoint).
  """
  _, f_train = predict(config, params, images(translator_set))
  mean, std = f_train.mean(0), f_train.std(0) + 1e-6
  ids, mask = lm_lib.encode(lm.tokenizer, translator_set.captions, 20)
  tcfg = texplain.TranslatorConfig(prefix_len=config.prefix_len, embed_dim=lm.embed_dim)
  train = texplain.TranslatorTrainConfig(
    steps=config.translator_steps,
    batch_size=config.translator_batch,
    learning_rate=config.translator_lr,
    save_every=max(config.translator_steps // 2, 1),
  )
  tparams, history = texplain.train_translator(
    key,
    (f_train - mean) / std,
    ids,
    mask,
    lm,
    tcfg,
    train,
    checkpoint_dir=Path(workdir) / f"translator_{name}",
  )
  pred, f_test = predict(config, params, images(test))
  rows = np.flatnonzero(pred == 1)[: config.num_explained]
  check(len(rows) > 0, f"the {name} classifier predicts no held-out image as star")
  # Pad to num_explained rows so that both classifiers share one compiled sampler.
  padded = np.resize(rows, config.num_explained)
  scfg = texplain.SamplingConfig(
    num_sentences=config.num_sentences,
    max_new_tokens=config.max_new_tokens,
    top_p=config.top_p,
    temperature=config.temperature,
  )
  gen = texplain.generate(
    jax.random.fold_in(key, 7),
    (f_test[padded] - mean) / std,
    tparams,
    lm.params,
    lm=lm,
    translator=tcfg,
    cfg=scfg,
    image_ids=jnp.asarray(padded, jnp.int32),
  )
  sentences = texplain.decode_sentences(lm, gen)[: len(rows)]
  io.write_json(Path(workdir) / f"sentences_{name}.json", sentences)
  stats = texplain.word_stats(s for row in sentences for s in row)
  texplain.plot_top_words(
    stats,
    Path(workdir) / f"top_words_{name}.png",
    title=f"held-out images the {name} classifier calls star",
    highlight=config.spurious_words,
  )
  hits = np.zeros((len(rows), config.num_sentences), bool)
  for w in config.spurious_words:
    hits |= texplain.presence(sentences, w)
  loss = history[-1]["loss"] if history else None  # None: restored finished from a checkpoint
  return hits, test.background[rows], stats, loss


def spurious_test(hits_c: np.ndarray, hits_u: np.ndarray) -> dict:
  """Image-level one-sided Fisher exact test: does the correlated classifier's explanation name the spurious
  word (in a majority of an image's sentences) for more images than the clean one's?"""
  says_c, says_u = hits_c.mean(1) > 0.5, hits_u.mean(1) > 0.5
  table = [[int(says_c.sum()), int((~says_c).sum())], [int(says_u.sum()), int((~says_u).sum())]]
  res = scipy.stats.fisher_exact(table, alternative="greater")
  return {
    "p_value": float(res.pvalue),
    "images_saying_spurious_correlated": float(says_c.mean()),
    "images_saying_spurious_clean": float(says_u.mean()),
    "fisher_table": table,
  }


def run(config, workdir) -> dict:
  workdir = Path(workdir)
  lm = lm_lib.load_shipped()
  w = worlds(config)
  correlated = sw.generate(w["correlated"], config.num_train, seed=config.seed, split="train")
  clean = sw.generate(w["neutral"], config.num_train, seed=config.seed + 1, split="train")
  test_bal = sw.generate(w["neutral"], config.num_test, seed=config.seed, split="test")
  test_iid = sw.generate(w["correlated"], config.num_test, seed=config.seed, split="test")
  translator_set = sw.generate(w["neutral"], config.num_translator, seed=config.seed, split="validation")

  k_corr, k_clean, k_mit, k_tr = jax.random.split(jax.random.key(config.seed), 4)
  x_mit = images(correlated, config.mask_share, config.mask_fill, config.seed)
  p_corr = train_classifier(config, images(correlated), labels(correlated), k_corr)
  p_clean = train_classifier(config, images(clean), labels(clean), k_clean)
  p_mit = train_classifier(config, x_mit, labels(correlated), k_mit)

  hits_c, bg_c, stats_c, loss_c = explain(
    config, lm, p_corr, translator_set, test_bal, k_tr, workdir, "correlated"
  )
  hits_u, bg_u, stats_u, loss_u = explain(
    config, lm, p_clean, translator_set, test_bal, k_tr, workdir, "clean"
  )
  test = spurious_test(hits_c, hits_u)

  report = {
    name: {split: accuracy_report(config, p, s) for split, s in (("balanced", test_bal), ("iid", test_iid))}
    for name, p in (("correlated", p_corr), ("mitigated", p_mit), ("clean", p_clean))
  }
  io.write_json(
    workdir / "groups.json",
    {name: {split: groups for split, (_, groups) in r.items()} for name, r in report.items()},
  )
  freq_c, freq_u = float(hits_c.mean()), float(hits_u.mean())
  return {
    "spurious_freq_correlated": freq_c,
    "spurious_freq_clean": freq_u,
    "spurious_ratio": freq_c / freq_u if freq_u > 0 else None,
    **test,
    # Ground truth: the share of the explained images that really show water.
    "water_share_explained_correlated": float((bg_c == WATER).mean()),
    "water_share_explained_clean": float((bg_u == WATER).mean()),
    "num_explained_correlated": len(hits_c),
    "num_explained_clean": len(hits_u),
    "sentences_per_image": config.num_sentences,
    "top_words_correlated": stats_c.top(8),
    "top_words_clean": stats_u.top(8),
    "translator_loss_correlated": loss_c,
    "translator_loss_clean": loss_u,
    "worst_group_before": min(report["correlated"]["balanced"][1].values()),
    "worst_group_after": min(report["mitigated"]["balanced"][1].values()),
    "worst_group_clean": min(report["clean"]["balanced"][1].values()),
    # mean accuracy on the in-distribution (correlated) test split; the balanced split's beside it.
    "mean_acc_before": report["correlated"]["iid"][0],
    "mean_acc_after": report["mitigated"]["iid"][0],
    "mean_acc_balanced_before": report["correlated"]["balanced"][0],
    "mean_acc_balanced_after": report["mitigated"]["balanced"][0],
    "mean_acc_balanced_clean": report["clean"]["balanced"][0],
  }
