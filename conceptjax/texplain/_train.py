"""Training the translator only, with captioning cross-entropy through a frozen causal LM.

The LM input is ``[p_1 .. p_k, bos, w_1 .. w_n]`` where ``p = translator(features)``, at positions
``[0 .. 0, 0, 1 .. n]`` (the caption keeps the positions the LM was trained with); the loss is the
cross-entropy of ``w_1 .. w_n, eos`` predicted at the positions from ``bos`` on (ClipCap's prefix captioning).
Gradients flow to the translator's parameters only: the LM's parameters and the classifier's (when raw
inputs are given with a ``feature_fn``) enter as a separate, stop-gradient argument and come back untouched.

References:
  TExplain (docs/texplain.md); Mokady et al., "ClipCap: CLIP Prefix for Image Captioning", 2021, eq. 3.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax.errors import check
from conceptjax.models import lm as lm_lib
from conceptjax.texplain._translator import TranslatorConfig, init_translator, translate

FeatureFn = Callable[[Any, jax.Array], jax.Array]  # (encoder_params, inputs [B, ...]) -> features [B, F]


class Frozen(NamedTuple):
  """Parameters that training must not change.

  Attributes:
    lm_params: the causal LM's parameters.
    encoder_params: the classifier's parameters (used by ``feature_fn``), or None when features are given.
  """

  lm_params: Any
  encoder_params: Any = None


@dataclasses.dataclass(frozen=True)
class TranslatorTrainConfig:
  """Optimisation settings (AdamW with warm-up and cosine decay)."""

  steps: int = 1000
  batch_size: int = 64
  learning_rate: float = 1e-3
  warmup: int = 50
  weight_decay: float = 0.0
  save_every: int = 500


def captioning_loss(
  translator_params: Any,
  frozen: Frozen,
  inputs: jax.Array,
  ids: jax.Array,
  mask: jax.Array,
  *,
  lm: lm_lib.CausalLM,
  config: TranslatorConfig,
  feature_fn: FeatureFn | None = None,
) -> jax.Array:
  """Captioning cross-entropy of the frozen LM given the translated prefix.

  Args:
    translator_params: the translator's parameters (the only thing differentiated).
    frozen: the LM's (and the classifier's) parameters.
    inputs: [B, F] features, or [B, ...] classifier inputs when ``feature_fn`` is given.
    ids: [B, T] caption tokens ``[bos, w_1 .. w_n, eos, pad ..]`` (``lm_lib.encode``).
    mask: [B, T] bool, True on real tokens (targets are ``ids[:, 1:]`` where ``mask[:, 1:]``).
    lm: the frozen causal LM (static).
    config: the translator's settings (static).
    feature_fn: ``(encoder_params, inputs) -> features`` for raw inputs, or None.

  Returns:
    scalar mean cross-entropy per target token.
  """
  frozen = jax.lax.stop_gradient(frozen)
  feats = inputs if feature_fn is None else feature_fn(frozen.encoder_params, inputs)
  prefix = translate(config, translator_params, jax.lax.stop_gradient(feats).astype(jnp.float32))
  logits = lm_lib.prefixed_logits(lm.module, frozen.lm_params, prefix, ids)
  return lm_lib.token_cross_entropy(logits, ids[:, 1:], mask[:, 1:])


def make_translator_step(
  lm: lm_lib.CausalLM,
  config: TranslatorConfig,
  optimizer: optax.GradientTransformation,
  feature_fn: FeatureFn | None = None,
):
  """A jitted step ``(state, (inputs, ids, mask), frozen) -> (state, {"loss"})``; the state is donated."""
  loss_fn = functools.partial(captioning_loss, lm=lm, config=config, feature_fn=feature_fn)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: lm_lib.TrainState, batch, frozen: Frozen):
    inputs, ids, mask = batch
    loss, grads = jax.value_and_grad(loss_fn)(state.params, frozen, inputs, ids, mask)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return lm_lib.TrainState(optax.apply_updates(state.params, updates), opt_state), {"loss": loss}

  return step


@functools.lru_cache(maxsize=8)
def _cached_step(lm, config, train, feature_fn):
  """One compiled step per (LM, settings, feature_fn): repeated or resumed trainings do not recompile."""
  return make_translator_step(lm, config, make_optimizer(train), feature_fn)


def make_optimizer(cfg: TranslatorTrainConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, cfg.learning_rate, cfg.warmup, max(cfg.steps, cfg.warmup + 1)
  )
  return optax.adamw(schedule, weight_decay=cfg.weight_decay)


def train_translator(
  key: jax.Array,
  inputs: np.ndarray,
  ids: np.ndarray,
  mask: np.ndarray,
  lm: lm_lib.CausalLM,
  config: TranslatorConfig,
  train: TranslatorTrainConfig = TranslatorTrainConfig(),
  *,
  frozen: Frozen | None = None,
  feature_fn: FeatureFn | None = None,
  checkpoint_dir: str | os.PathLike | None = None,
  log_fn: Callable[[int, dict], None] | None = None,
) -> tuple[Any, list[dict]]:
  """Trains a translator on (inputs, caption) pairs, the LM and classifier frozen; resumable.

  Args:
    key: PRNG key (initialisation and minibatch order).
    inputs: [N, F] features (or [N, ...] classifier inputs with ``feature_fn``).
    ids, mask: [N, T] captions from ``lm_lib.encode``; ``k + T - 1 <= lm.max_positions``.
    lm: the frozen LM; its parameters are taken from ``frozen.lm_params`` when given, else ``lm.params``.
    config: translator settings (``embed_dim`` must equal the LM's).
    train: optimisation settings.
    frozen: frozen parameters (LM, and the classifier's for ``feature_fn``).
    feature_fn: computes features from ``inputs`` with ``frozen.encoder_params``.
    checkpoint_dir: resume from / save to this folder (``Checkpointer``).

  Returns:
    (translator parameters, logged metrics).
  """
  inputs, ids, mask = np.asarray(inputs), np.asarray(ids, np.int32), np.asarray(mask, bool)
  check(
    len(inputs) == len(ids) == len(mask) > 0,
    f"train_translator: {len(inputs)} inputs but {len(ids)} captions / {len(mask)} masks",
  )
  check(ids.shape == mask.shape, f"train_translator: ids {ids.shape} and mask {mask.shape} differ")
  check(
    config.embed_dim == lm.embed_dim,
    f"translator embed_dim {config.embed_dim} != language model embedding width {lm.embed_dim}",
  )
  check(
    config.prefix_len + ids.shape[1] - 1 <= lm.max_positions,
    f"prefix {config.prefix_len} + caption length {ids.shape[1]} - 1 exceeds {lm.max_positions} positions",
  )
  check(
    bool(np.isfinite(inputs).all()) if inputs.dtype.kind == "f" else True, "train_translator: NaN/Inf inputs"
  )
  frozen = Frozen(lm.params) if frozen is None else frozen
  init_key, data_key = jax.random.split(key)
  if feature_fn is None:
    feature_dim = inputs.shape[-1]
  else:
    feature_dim = jax.eval_shape(feature_fn, frozen.encoder_params, inputs[:1]).shape[-1]
  params = init_translator(init_key, config, feature_dim)
  optimizer = make_optimizer(train)
  step = _cached_step(lm, config, train, feature_fn)
  state = lm_lib.TrainState(params, optimizer.init(params))

  seed = lm_lib.seed_from_key(data_key)

  def batch_fn(s):
    rows = lm_lib.minibatch_indices(seed, s, len(ids), train.batch_size)
    return inputs[rows], ids[rows], mask[rows]

  state, history = lm_lib.fit(
    lambda st, b: step(st, b, frozen),
    state,
    batch_fn,
    train.steps,
    checkpoint_dir=checkpoint_dir,
    save_every=train.save_every,
    log_every=max(train.steps // 20, 1),
    log_fn=log_fn,
  )
  return state.params, history
