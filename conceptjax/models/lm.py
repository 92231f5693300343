"""Small causal language models (the project's Flax GPT-2, ``conceptjax.models.gpt2``) driven from embeddings.

TExplain feeds a frozen causal LM a prefix of translated embeddings instead of token ids. This module runs
the GPT-2 of :mod:`conceptjax.models.gpt2` from embeddings, with or without a key/value cache, and provides
the rest of a tiny LM's life cycle: a byte-level BPE tokenizer trained with ``tokenizers`` (saved as
transformers' GPT2TokenizerFast: vocab.json + merges.txt), a small config, next-token training on captions
(optax, checkpointed), saving in the Hugging Face format (config.json + model.safetensors in PyTorch naming
+ tokenizer files, which transformers' PyTorch ``GPT2LMHeadModel.from_pretrained`` also reads) and loading
from a local folder or a hub id.

Typical use::

  lm = lm_lib.load("conceptjax/assets/shapesworld_lm")        # or a hub id such as "gpt2"
  ids, mask = lm_lib.encode(lm.tokenizer, ["a red star on water"], max_len=16)
  logits = lm_lib.logits_from_embeds(lm.module, lm.params, lm_lib.embed(lm.params, ids))

References:
  Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conceptjax.checkpoint import Checkpointer
from conceptjax.errors import InputError, check
from conceptjax.models import gpt2, hf

ENDOFTEXT = "<|endoftext|>"
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapesworld_lm"
TOKENIZER_FILES = (
  "vocab.json",
  "merges.txt",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
)
# What a hub snapshot fetches: the config, safetensors weights (single or sharded) and the tokenizer.
HUB_FILES = (hf.CONFIG, hf.SAFETENSORS, hf.SAFETENSORS_INDEX, "model-*.safetensors", *TOKENIZER_FILES)


# ----------------------------------------------------------------------------------------------------------
# The model object


@dataclasses.dataclass(frozen=True, eq=False)
class CausalLM:
  """A causal LM: its Flax module (static), parameters (pass them explicitly to jitted code), tokenizer.

  Equality and hashing go by the identity of ``module``, so a ``CausalLM`` can be a static argument of
  ``jax.jit``, and ``dataclasses.replace(lm, params=...)`` reuses the compiled code. Jitted code must take
  ``params`` as an argument, never read ``lm.params``.

  Attributes:
    module: the ``gpt2.GPT2LMHead`` (linen) that ``apply`` runs.
    params: its parameters, ``{"transformer": {"wte": ..., "wpe": ..., "h": ..., "ln_f": ...}}``.
    tokenizer: a transformers fast tokenizer (GPT2TokenizerFast) or None for token-id-only models.
    config: the ``gpt2.GPT2Config``.
  """

  module: Any
  params: Any
  tokenizer: Any
  config: gpt2.GPT2Config

  def __hash__(self) -> int:
    return hash(id(self.module))

  def __eq__(self, other) -> bool:
    return isinstance(other, CausalLM) and other.module is self.module

  @property
  def bos_id(self) -> int:
    return int(self.config.bos_token_id)

  @property
  def eos_id(self) -> int:
    return int(self.config.eos_token_id)

  @property
  def embed_dim(self) -> int:
    return int(self.config.n_embd)

  @property
  def vocab_size(self) -> int:
    return int(self.config.vocab_size)

  @property
  def max_positions(self) -> int:
    return int(self.config.n_positions)


def small_config(
  vocab_size: int,
  *,
  n_positions: int = 32,
  n_embd: int = 64,
  n_layer: int = 2,
  n_head: int = 2,
  bos_token_id: int = 0,
  eos_token_id: int = 0,
) -> gpt2.GPT2Config:
  """A tiny GPT-2 config (default about 0.1 M parameters plus 64 x vocab embeddings)."""
  return gpt2.GPT2Config(
    vocab_size=vocab_size,
    n_positions=n_positions,
    n_embd=n_embd,
    n_layer=n_layer,
    n_head=n_head,
    bos_token_id=bos_token_id,
    eos_token_id=eos_token_id,
  )


def from_config(
  config: gpt2.GPT2Config, key: jax.Array, tokenizer: Any = None, dtype: Any = jnp.float32
) -> CausalLM:
  """A randomly initialised ``CausalLM`` for ``config`` (explicit key; ``dtype`` is the compute dtype)."""
  module = gpt2.GPT2LMHead(config, dtype)
  embeds = jnp.zeros((1, 1, config.n_embd), jnp.float32)
  params = module.init(key, embeds, jnp.zeros((1, 1), jnp.int32))["params"]
  return CausalLM(module, params, tokenizer, config)


def load(path_or_id: str | os.PathLike, dtype: Any = jnp.float32) -> CausalLM:
  """Loads a Hugging Face GPT-2 (config.json + model.safetensors or pytorch_model.bin) and its tokenizer.

  Args:
    path_or_id: a local folder, or a hub id (fetched with huggingface_hub; ``HF_HUB_OFFLINE=1`` reads the
      local cache only).
    dtype: compute dtype of the module (parameters are float32).

  Returns:
    the ``CausalLM``; its tokenizer is None when the folder holds no tokenizer files.

  Raises:
    InputError: one line when the folder is missing pieces, the weights do not fit the config, the
      architecture is not GPT-2, or the hub cannot be reached.
  """
  where = str(path_or_id)
  folder = hf.resolve(where, "language model", HUB_FILES)
  config, params = gpt2.load_params(folder)
  tokenizer = None
  if any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
    try:
      tokenizer = _gpt2().GPT2TokenizerFast.from_pretrained(str(folder))
    except Exception as e:
      raise InputError(
        f"cannot load the tokenizer of {where!r}: {type(e).__name__}: {hf.first_line(e)}"
      ) from e
    check(tokenizer is not None and hasattr(tokenizer, "encode"), f"cannot load the tokenizer of {where!r}")
  module = gpt2.GPT2LMHead(config, dtype)
  return CausalLM(module, jax.tree.map(jnp.asarray, params), tokenizer, config)


def load_shipped() -> CausalLM:
  """The tiny GPT-2 shipped in ``conceptjax/assets/shapesworld_lm`` (trained on ShapesWorld captions)."""
  check(ASSET_DIR.is_dir(), f"shipped language model missing: {ASSET_DIR} (run the lm training config)")
  return load(ASSET_DIR)


def save(lm: CausalLM, directory: str | os.PathLike, *, extra: dict | None = None) -> None:
  """Writes ``lm`` as a Hugging Face folder: config.json, model.safetensors (PyTorch naming), the tokenizer's
  files, and ``extra`` as training.json."""
  directory = Path(directory)
  gpt2.save_params(directory, lm.config, lm.params)
  if lm.tokenizer is not None:
    from conceptjax.models import tokenizer as tok_lib

    tok_lib.save(lm.tokenizer, directory)  # vocab.json + merges.txt too (transformers 5 writes neither)
  if extra:
    from conceptjax import io

    io.write_json(directory / "training.json", extra)


def _gpt2():
  import transformers  # imported lazily: transformers is slow to import

  transformers.logging.set_verbosity_error()
  return transformers


# ----------------------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int = 512, min_frequency: int = 2):
  """Trains a byte-level BPE on ``texts`` and returns a ``GPT2TokenizerFast`` ("<|endoftext|>" = bos/eos/pad).

  The tokenizer is rebuilt from its own vocab.json + merges.txt, so the object is exactly what
  ``save_pretrained`` / ``from_pretrained`` round-trips.
  """
  import tempfile

  from tokenizers import ByteLevelBPETokenizer

  check(len(texts) > 0, "train_tokenizer: no texts")
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(
    list(texts),
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=[ENDOFTEXT],
    show_progress=False,
  )
  with tempfile.TemporaryDirectory() as tmp:
    bpe.save_model(tmp)
    # from_pretrained on the two files: the same call in transformers 4 and 5 (their constructors differ).
    tok = _gpt2().GPT2TokenizerFast.from_pretrained(
      tmp, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT, pad_token=ENDOFTEXT
    )
  return tok


def encode(tokenizer, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Tokenizes ``texts`` as ``[bos, w_1, ..., w_n, eos, eos...]`` cut/padded to ``max_len``.

  Returns:
    ids: [N, max_len] int32; mask: [N, max_len] bool, True on bos, words and the first eos (the positions
    whose *next* token is a real target is ``mask[:, 1:]``).
  """
  eos = tokenizer.eos_token_id
  bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
  ids = np.full((len(texts), max_len), eos, np.int32)
  mask = np.zeros((len(texts), max_len), bool)
  for i, text in enumerate(texts):
    toks = [bos, *tokenizer.encode(" " + text.strip())[: max_len - 2], eos]
    ids[i, : len(toks)] = toks
    mask[i, : len(toks)] = True
  return ids, mask


def decode(tokenizer, tokens: np.ndarray, eos_id: int) -> list[str]:
  """Decodes [N, T] generated ids up to (not including) the first ``eos_id`` of each row."""
  out = []
  for row in np.asarray(tokens):
    stop = np.flatnonzero(row == eos_id)
    out.append(tokenizer.decode(row[: stop[0] if stop.size else len(row)]).strip())
  return out


# ----------------------------------------------------------------------------------------------------------
# Running the module from embeddings


def embed(params: Any, ids: jax.Array) -> jax.Array:
  """Token embeddings ``wte[ids]``: [..., T] -> [..., T, E]."""
  return jnp.take(params["transformer"]["wte"]["embedding"], ids, axis=0)


def logits_from_embeds(
  module,
  params: Any,
  embeds: jax.Array,
  positions: jax.Array | None = None,
  attention_mask: jax.Array | None = None,
) -> jax.Array:
  """Next-token logits of a causal LM fed input embeddings (no cache).

  Args:
    module: the LM's Flax module (``CausalLM.module``).
    params: its parameters.
    embeds: [B, T, E] input embeddings (token embeddings or any prefix).
    positions: [B, T] position ids (default 0..T-1).
    attention_mask: [B, T], 0 on padding keys (default none).

  Returns:
    [B, T, V] logits; row t predicts token t+1.
  """
  b, t, _ = embeds.shape
  positions = jnp.broadcast_to(jnp.arange(t), (b, t)) if positions is None else positions
  return module.apply({"params": params}, embeds, positions, attention_mask)[0]


def init_cache(module, batch: int, max_len: int, dtype=jnp.float32) -> gpt2.KVCache:
  """An empty key/value cache for ``batch`` rows of up to ``max_len`` positions (``gpt2.KVCache``)."""
  return gpt2.init_cache(module.config, batch, max_len, dtype)


def step_with_cache(module, params: Any, cache: gpt2.KVCache, embeds: jax.Array, positions: jax.Array):
  """Runs ``embeds`` [B, q, E] at ``positions`` [B, q] through the LM, appending to ``cache``.

  Returns:
    (logits [B, q, V], updated cache). Attention covers every cached position and the new ones causally.
  """
  return module.apply({"params": params}, embeds, positions, None, cache)


# ----------------------------------------------------------------------------------------------------------
# Training (shared by the LM and the TExplain translator)


class TrainState(NamedTuple):
  """Trainable parameters and optimiser state (a pytree, checkpointed as a whole)."""

  params: Any
  opt_state: Any


def fit(
  step_fn: Callable[[TrainState, Any], tuple[TrainState, dict]],
  state: TrainState,
  batch_fn: Callable[[int], Any],
  num_steps: int,
  *,
  checkpoint_dir: str | os.PathLike | None = None,
  save_every: int = 500,
  log_every: int = 0,
  log_fn: Callable[[int, dict], None] | None = None,
) -> tuple[TrainState, list[dict]]:
  """Runs ``state = step_fn(state, batch_fn(step))`` for ``num_steps`` steps, resumable from checkpoints.

  ``batch_fn(step)`` must be a pure function of the step (e.g. indices drawn from ``fold_in(key, epoch)``),
  so a resumed run sees exactly the batches the interrupted one would have.

  Returns:
    (final state, metrics of every ``log_every``-th step and of the last step, as float dicts).
  """
  history: list[dict] = []
  ckpt = Checkpointer(checkpoint_dir, save_every=save_every) if checkpoint_dir is not None else None
  start = 0
  if ckpt is not None:
    state, start = ckpt.restore_or(state)
  try:
    for step in range(start, num_steps):
      state, metrics = step_fn(state, batch_fn(step))
      last = step + 1 == num_steps
      if last or (log_every and step % log_every == 0):
        row = {"step": step + 1, **{k: float(v) for k, v in metrics.items()}}
        history.append(row)
        if log_fn is not None:
          log_fn(step + 1, row)
      if ckpt is not None:
        ckpt.maybe_save(step + 1, state, force=last)
  finally:
    if ckpt is not None:
      ckpt.close()
  return state, history


def seed_from_key(key: jax.Array) -> int:
  """A numpy seed drawn from a JAX key (for host-side shuffling)."""
  return int(jax.random.randint(key, (), 0, 2**31 - 1))


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, num_rows: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_rows)


def minibatch_indices(seed: int, step: int, num_rows: int, batch_size: int) -> np.ndarray:
  """Rows of minibatch ``step``: one permutation per epoch seeded by (seed, epoch); pure in ``step``."""
  per_epoch = max(num_rows // batch_size, 1)
  epoch, i = divmod(step, per_epoch)
  perm = _permutation(seed, epoch, num_rows)
  if num_rows < batch_size:
    return np.resize(perm, batch_size)
  return perm[i * batch_size : (i + 1) * batch_size]


def token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean cross-entropy over ``mask``ed positions: logits [B, T, V], targets [B, T] int, mask [B, T]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  mask = mask.astype(jnp.float32)
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def prefix_positions(batch: int, prefix_len: int, caption_len: int) -> jax.Array:
  """Position ids [B, k + T]: 0 for every prefix slot, then 0..T-1 for the caption.

  The caption keeps the positions of plain LM training (bos at 0); the prefix sits before it in the causal
  order, and its constant position embedding is absorbed by whatever produces the prefix.
  """
  pos = jnp.concatenate([jnp.zeros((prefix_len,), jnp.int32), jnp.arange(caption_len, dtype=jnp.int32)])
  return jnp.broadcast_to(pos, (batch, prefix_len + caption_len))


def prefixed_logits(module, params: Any, prefix: jax.Array, ids: jax.Array) -> jax.Array:
  """Logits of the caption tokens after a prefix of input embeddings.

  Args:
    module, params: the LM.
    prefix: [B, k, E] input embeddings (k may be 0).
    ids: [B, T] ``[bos, w_1 .. w_n, eos, pad ..]``.

  Returns:
    [B, T - 1, V]: row t predicts ``ids[:, t + 1]`` given the prefix and ``ids[:, :t + 1]``.
  """
  b, k = prefix.shape[:2]
  embeds = jnp.concatenate([prefix.astype(jnp.float32), embed(params, ids[:, :-1])], axis=1)
  return logits_from_embeds(module, params, embeds, prefix_positions(b, k, ids.shape[1] - 1))[:, k:]


def keyword_ids(key: jax.Array, ids: jax.Array, mask: jax.Array, k: int, eos_id: int) -> jax.Array:
  """[B, k] tokens drawn uniformly (with replacement, in random order) from each caption's own words."""
  valid = mask & (ids != eos_id) & (jnp.arange(ids.shape[1]) > 0)
  valid = valid.at[:, 1].set(valid[:, 1] | ~valid.any(axis=1))  # an empty caption falls back to column 1
  picks = jax.random.categorical(key, jnp.where(valid, 0.0, -jnp.inf)[:, None, :], shape=(ids.shape[0], k))
  return jnp.take_along_axis(ids, picks, axis=1)


def lm_loss(
  params: Any, module, ids: jax.Array, mask: jax.Array, keywords: jax.Array | None = None
) -> jax.Array:
  """Next-token cross-entropy of the LM on ``ids`` [B, T] (targets ids[:, 1:] where mask[:, 1:]).

  With ``keywords`` [B, k] the LM reads their embeddings as a prefix first (keyword-prefix pre-training).
  """
  prefix = (
    jnp.zeros((ids.shape[0], 0, lm_width(params)), jnp.float32)
    if keywords is None
    else embed(params, keywords)
  )
  return token_cross_entropy(prefixed_logits(module, params, prefix, ids), ids[:, 1:], mask[:, 1:])


def lm_width(params: Any) -> int:
  return params["transformer"]["wte"]["embedding"].shape[1]


def make_lm_step(
  module,
  optimizer: optax.GradientTransformation,
  *,
  key: jax.Array | None = None,
  prefix_len: int = 0,
  eos_id: int = 0,
):
  """A jitted LM training step ``(state, (ids, mask, step)) -> (state, {"loss"})`` (state donated).

  With ``prefix_len > 0`` every caption is preceded by the embeddings of ``prefix_len`` of its own tokens
  drawn with ``fold_in(key, step)`` (see ``LMTrainConfig.prefix_len``).
  """

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, batch):
    ids, mask, i = batch
    keywords = (
      None if prefix_len == 0 else keyword_ids(jax.random.fold_in(key, i), ids, mask, prefix_len, eos_id)
    )
    loss, grads = jax.value_and_grad(lm_loss)(state.params, module, ids, mask, keywords)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), {"loss": loss}

  return step


@dataclasses.dataclass(frozen=True)
class LMTrainConfig:
  """Settings of ``train_lm``: tokenizer, model size and optimisation.

  ``prefix_len`` > 0 pre-trains the LM to read a prefix: each caption is preceded by the input embeddings of
  ``prefix_len`` of its own tokens (random, with replacement, in random order), at the prefix positions the
  TExplain translator uses. A tiny LM trained only on plain captions barely attends to anything placed before
  bos, so a frozen translator prefix could hardly steer it (measured on the toy task of the tests); this
  keyword pre-training makes the frozen LM a "keywords -> sentence" decoder, and the translator then learns to
  emit keyword-like prefixes from image features. 0 gives plain next-token training.
  """

  vocab_size: int = 512
  max_len: int = 24
  n_embd: int = 64
  n_layer: int = 2
  n_head: int = 2
  steps: int = 2000
  batch_size: int = 64
  learning_rate: float = 3e-3
  warmup: int = 100
  prefix_len: int = 4


def train_lm(
  key: jax.Array,
  captions: Sequence[str],
  config: LMTrainConfig = LMTrainConfig(),
  *,
  checkpoint_dir: str | os.PathLike | None = None,
  log_fn: Callable[[int, dict], None] | None = None,
) -> tuple[CausalLM, list[dict]]:
  """Trains a BPE tokenizer and a tiny GPT-2 on ``captions`` (next-token cross-entropy, AdamW, cosine decay).

  Returns:
    (the trained CausalLM, the logged metrics).
  """
  tokenizer = train_tokenizer(captions, config.vocab_size)
  eos = tokenizer.eos_token_id
  gpt = small_config(
    len(tokenizer),
    n_positions=max(config.max_len, 32),
    n_embd=config.n_embd,
    n_layer=config.n_layer,
    n_head=config.n_head,
    bos_token_id=eos,
    eos_token_id=eos,
  )
  init_key, data_key = jax.random.split(key)
  lm = from_config(gpt, init_key, tokenizer)
  ids, mask = encode(tokenizer, captions, config.max_len)
  return fit_lm(data_key, lm, ids, mask, config, checkpoint_dir=checkpoint_dir, log_fn=log_fn)


def fit_lm(
  key: jax.Array,
  lm: CausalLM,
  ids: np.ndarray,
  mask: np.ndarray,
  config: LMTrainConfig = LMTrainConfig(),
  *,
  checkpoint_dir: str | os.PathLike | None = None,
  log_fn: Callable[[int, dict], None] | None = None,
) -> tuple[CausalLM, list[dict]]:
  """Trains ``lm``'s parameters on token ids [N, T] with mask [N, T] (``encode``); resumable.

  Returns:
    (``lm`` with the trained parameters, the logged metrics).
  """
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup, config.steps)
  optimizer = optax.adamw(schedule, weight_decay=0.01)
  shuffle_key, prefix_key = jax.random.split(key)
  step = make_lm_step(lm.module, optimizer, key=prefix_key, prefix_len=config.prefix_len, eos_id=lm.eos_id)
  state = TrainState(lm.params, optimizer.init(lm.params))
  seed = seed_from_key(shuffle_key)

  def batch_fn(s):
    rows = minibatch_indices(seed, s, len(ids), config.batch_size)
    return ids[rows], mask[rows], np.int32(s)

  state, history = fit(
    step,
    state,
    batch_fn,
    config.steps,
    checkpoint_dir=checkpoint_dir,
    log_every=max(config.steps // 20, 1),
    log_fn=log_fn,
  )
  return dataclasses.replace(lm, params=state.params), history


def describe(lm: CausalLM) -> dict:
  """Size figures of ``lm`` for reports."""
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(lm.params))
  return {
    "parameters": n,
    "vocab_size": lm.vocab_size,
    "n_embd": lm.embed_dim,
    "n_layer": int(lm.config.n_layer),
    "config": "gpt2",
  }
