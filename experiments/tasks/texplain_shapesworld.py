"""Task: TExplain spurious-feature detection and mitigation on ShapesWorld (texplain_shapesworld config)."""

from __future__ import annotations

import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from conceptjax import io, texplain
from conceptjax.data import shapesworld as sw
from conceptjax.models import lm as lm_lib

STAR, CIRCLE = sw.ATTRIBUTES["shape"].index("star"), sw.ATTRIBUTES["shape"].index("circle")
WATER, GRASS = sw.ATTRIBUTES["background"].index("water"), sw.ATTRIBUTES["background"].index("grass")


class SmallCNN(nn.Module):
  """Star-vs-circle CNN; ``features`` is the penultimate layer TExplain reads (a stand-in until the shared
  ``conceptjax.models.classifier`` lands)."""

  feature_dim: int = 32

  @nn.compact
  def __call__(self, x, *, features: bool = False):
    for width in (16, 32, 32):
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Dense(self.feature_dim)(x.reshape(x.shape[0], -1)))
    return x if features else nn.Dense(2)(x)


def _images(samples, mask_share=0.0, seed=0):
  x = samples.images.astype(np.float32) / 255.0
  if mask_share > 0:  # mitigation: grey out the background (the spurious region) in a share of the images
    hide = np.random.default_rng(seed).random(len(x)) < mask_share
    x = np.where((samples.background_mask & hide[:, None, None])[..., None], 0.5, x)
  return x


def _labels(samples):
  return (samples.label == STAR).astype(np.int32)  # 1 = star, 0 = circle


@functools.partial(jax.jit, static_argnames=("model", "lr"))
def _cnn_step(state, xb, yb, *, model, lr):
  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

  loss, g = jax.value_and_grad(loss_fn)(state.params)
  u, o = optax.adam(lr).update(g, state.opt_state, state.params)
  return lm_lib.TrainState(optax.apply_updates(state.params, u), o), {"loss": loss}


@functools.partial(jax.jit, static_argnames=("model", "features"))
def _cnn_apply(params, x, *, model, features):
  out = model.apply({"params": params}, x, features=features)
  return out if features else jnp.argmax(out, -1)


def train_classifier(config, samples, key, mask_share=0.0):
  """Adam on cross-entropy; one compiled step shared by the three classifiers."""
  model = SmallCNN(config.feature_dim)
  x, y = _images(samples, mask_share, config.seed), _labels(samples)
  params = model.init(key, x[:1])["params"]
  seed = lm_lib.seed_from_key(jax.random.fold_in(key, 1))

  def batch_fn(s):
    rows = lm_lib.minibatch_indices(seed, s, len(x), config.classifier_batch)
    return x[rows], y[rows]

  step = functools.partial(_cnn_step, model=model, lr=config.classifier_lr)
  state = lm_lib.TrainState(params, optax.adam(config.classifier_lr).init(params))
  state, _ = lm_lib.fit(lambda st, b: step(st, *b), state, batch_fn, config.classifier_steps)
  return model, state.params


def _batched(fn, x, size=256):
  """Applies ``fn`` in fixed-size chunks (the last one padded), so one compilation serves every call."""
  out = []
  for i in range(0, len(x), size):
    chunk = x[i : i + size]
    pad = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), 0)]) if len(chunk) < size else chunk
    out.append(np.asarray(fn(pad))[: len(chunk)])
  return np.concatenate(out)


def accuracy_report(model, params, samples):
  pred = _batched(lambda b: _cnn_apply(params, b, model=model, features=False), _images(samples))
  correct = pred == _labels(samples)
  groups = {
    sw.group_name(int(g)): float(correct[samples.group == g].mean()) for g in np.unique(samples.group)
  }
  return float(correct.mean()), groups


def explain(config, lm, model, params, translator_samples, explained, key, workdir, name):
  """Trains a translator on this classifier's features and samples sentences for ``explained`` images."""
  feat = lambda b: _cnn_apply(params, b, model=model, features=True)
  f_train = _batched(feat, _images(translator_samples))
  mean, std = f_train.mean(0), f_train.std(0) + 1e-6
  f_train = (f_train - mean) / std
  ids, mask = lm_lib.encode(lm.tokenizer, translator_samples.captions, 20)
  tcfg = texplain.TranslatorConfig(prefix_len=config.prefix_len, embed_dim=lm.embed_dim)
  train = texplain.TranslatorTrainConfig(
    steps=config.translator_steps,
    batch_size=config.translator_batch,
    learning_rate=config.translator_lr,
    save_every=max(config.translator_steps // 2, 1),
  )
  tparams, history = texplain.train_translator(
    key, f_train, ids, mask, lm, tcfg, train, checkpoint_dir=Path(workdir) / f"translator_{name}"
  )
  f_exp = (_batched(feat, _images(explained)) - mean) / std
  scfg = texplain.SamplingConfig(
    num_sentences=config.num_sentences,
    max_new_tokens=config.max_new_tokens,
    top_p=config.top_p,
    temperature=config.temperature,
  )
  gen = texplain.generate(
    jax.random.fold_in(key, 7), f_exp, tparams, lm.params, lm=lm, translator=tcfg, cfg=scfg
  )
  sentences = texplain.decode_sentences(lm, gen)
  io.write_json(Path(workdir) / f"sentences_{name}.json", sentences)
  stats = texplain.word_stats(s for row in sentences for s in row)
  texplain.plot_top_words(
    stats,
    Path(workdir) / f"top_words_{name}.png",
    title=f"star images, {name} classifier",
    highlight=config.spurious_words,
  )
  hits = np.zeros((len(sentences), config.num_sentences), bool)
  for w in config.spurious_words:
    hits |= texplain.presence(sentences, w)
  return hits, stats, history[-1]["loss"]


def run(config, workdir) -> dict:
  workdir = Path(workdir)
  lm = lm_lib.load_shipped()
  world = functools.partial(sw.waterbirds_like, image_size=config.image_size, max_objects=1)
  key = jax.random.key(config.seed)
  correlated = sw.generate(world(config.p_correlated), config.num_train, seed=config.seed, split="train")
  clean = sw.generate(world(0.5), config.num_train, seed=config.seed + 1, split="train")
  test_bal = sw.generate(world(0.5), config.num_test, seed=config.seed, split="test")
  test_iid = sw.generate(world(config.p_correlated), config.num_test, seed=config.seed, split="test")
  neutral = sw.WorldConfig(image_size=config.image_size, max_objects=1, shapes=("star", "circle"))
  translator_set = sw.generate(neutral, config.num_translator, seed=config.seed, split="validation")
  stars = np.flatnonzero(test_bal.label == STAR)[: config.num_explained]
  explained = sw.Samples(  # (Samples overrides __len__, so NamedTuple._replace does not work on it)
    **{f: getattr(test_bal, f)[stars] for f in test_bal._fields if f != "captions"},
    captions=[test_bal.captions[i] for i in stars],
  )

  k_corr, k_clean, k_mit, k_tr = jax.random.split(key, 4)
  model, p_corr = train_classifier(config, correlated, k_corr)
  _, p_clean = train_classifier(config, clean, k_clean)
  _, p_mit = train_classifier(config, correlated, k_mit, mask_share=config.mask_share)

  hits_c, stats_c, loss_c = explain(
    config, lm, model, p_corr, translator_set, explained, k_tr, workdir, "correlated"
  )
  hits_u, stats_u, loss_u = explain(
    config, lm, model, p_clean, translator_set, explained, k_tr, workdir, "clean"
  )
  per_image_c, per_image_u = hits_c.mean(1), hits_u.mean(1)
  test = scipy.stats.mannwhitneyu(per_image_c, per_image_u, alternative="greater")
  on_grass = explained.background == GRASS

  mean_before, groups_before = accuracy_report(model, p_corr, test_iid)
  mean_after, groups_after = accuracy_report(model, p_mit, test_iid)
  _, bal_before = accuracy_report(model, p_corr, test_bal)
  _, bal_after = accuracy_report(model, p_mit, test_bal)
  _, bal_clean = accuracy_report(model, p_clean, test_bal)
  io.write_json(
    workdir / "groups.json",
    {"balanced_test": {"correlated": bal_before, "mitigated": bal_after, "clean": bal_clean}},
  )
  return {
    "spurious_freq_correlated": float(hits_c.mean()),
    "spurious_freq_clean": float(hits_u.mean()),
    "p_value": float(test.pvalue),
    "spurious_freq_correlated_on_grass": float(hits_c[on_grass].mean()) if on_grass.any() else None,
    "spurious_freq_clean_on_grass": float(hits_u[on_grass].mean()) if on_grass.any() else None,
    "top_words_correlated": stats_c.top(8),
    "top_words_clean": stats_u.top(8),
    "translator_loss_correlated": loss_c,
    "translator_loss_clean": loss_u,
    "worst_group_before": min(bal_before.values()),
    "worst_group_after": min(bal_after.values()),
    "mean_acc_before": mean_before,
    "mean_acc_after": mean_after,
    "worst_group_clean": min(bal_clean.values()),
    "num_explained": int(len(stars)),
    "sentences_per_image": config.num_sentences,
  }
