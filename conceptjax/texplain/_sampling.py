"""Nucleus (top-p) sampling of many sentences per image from a frozen causal LM given translated prefixes.

Decoding runs as one ``lax.scan`` of fixed length over a key/value cache. Randomness is explicit: the token
of sentence ``s`` of image ``i`` at step ``t`` is drawn with ``fold_in(fold_in(fold_in(key, i), s), t)``, so
results depend only on (key, image index, settings), not on the batch layout or the number of devices.

References:
  Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020 (nucleus sampling, sec. 3.1).
  TExplain (docs/texplain.md): many sentences per image, words counted after removing stop-words.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from conceptjax import parallel
from conceptjax.errors import check
from conceptjax.models import lm as lm_lib
from conceptjax.texplain._translator import TranslatorConfig, translate


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Static settings of generation.

  Attributes:
    num_sentences: S, sentences sampled per image.
    max_new_tokens: T, tokens generated per sentence (after the prefix and bos); rows stop at eos.
    top_p: nucleus mass; the smallest set of most likely tokens whose probability reaches ``top_p`` is kept
      (``top_p -> 0`` is greedy decoding, ``top_p = 1`` is plain sampling from the softmax).
    temperature: logits are divided by it before the nucleus is formed.
  """

  num_sentences: int = 20
  max_new_tokens: int = 16
  top_p: float = 0.9
  temperature: float = 1.0

  def __post_init__(self):
    if not 0.0 <= self.top_p <= 1.0:
      raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
    if not self.temperature > 0.0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")
    if self.num_sentences < 1 or self.max_new_tokens < 1:
      raise ValueError(f"num_sentences and max_new_tokens must be >= 1, got {self}")


class Generation(NamedTuple):
  """Sampled sentences.

  Attributes:
    tokens: [B, S, T] int32 token ids; positions after a row's first eos hold eos.
    lengths: [B, S] int32 number of tokens before the first eos.
  """

  tokens: jax.Array
  lengths: jax.Array


def nucleus_logits(logits: jax.Array, top_p: float, temperature: float = 1.0) -> jax.Array:
  """Logits restricted to the nucleus: tokens outside it get -inf.

  A token is kept when the probability of the strictly more likely tokens (ties broken by index) is below
  ``top_p``; the most likely token is always kept.

  Args:
    logits: [..., V].
    top_p: nucleus mass in [0, 1].
    temperature: > 0.

  Returns:
    [..., V] float32 logits / temperature, with -inf outside the nucleus.
  """
  logits = logits.astype(jnp.float32) / temperature
  order = jnp.argsort(-logits, axis=-1, stable=True)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep_sorted = mass_before < top_p
  keep_sorted = keep_sorted.at[..., 0].set(True)
  keep = jnp.zeros_like(keep_sorted)
  keep = jnp.put_along_axis(keep, order, keep_sorted, axis=-1, inplace=False)
  return jnp.where(keep, logits, -jnp.inf)


def sample_tokens(keys: jax.Array, logits: jax.Array, top_p: float, temperature: float = 1.0) -> jax.Array:
  """One nucleus-sampled token per row: keys [N] (typed PRNG keys), logits [N, V] -> [N] int32."""
  filtered = nucleus_logits(logits, top_p, temperature)
  return jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)


def generate_from_prefix(
  lm: lm_lib.CausalLM,
  lm_params: Any,
  prefix: jax.Array,
  keys: jax.Array,
  cfg: SamplingConfig,
) -> tuple[jax.Array, jax.Array]:
  """Samples one sentence per row after ``[prefix, bos]``, with a key/value cache (jit-compatible).

  Args:
    lm: the causal LM (static; its ``params`` are not read).
    lm_params: its parameters.
    prefix: [N, k, E] input embeddings.
    keys: [N] typed PRNG keys, one per row.
    cfg: sampling settings (``max_new_tokens`` used; ``num_sentences`` ignored here).

  Returns:
    (tokens [N, T] int32, lengths [N] int32).
  """
  n, k, _ = prefix.shape
  steps = cfg.max_new_tokens
  bos = jnp.full((n, 1), lm.bos_id, jnp.int32)
  cache = lm_lib.init_cache(lm.module, n, k + 1 + steps, prefix.dtype)
  first = jnp.concatenate([prefix, lm_lib.embed(lm_params, bos).astype(prefix.dtype)], axis=1)
  positions = lm_lib.prefix_positions(n, k, 1)
  logits, cache = lm_lib.step_with_cache(lm.module, lm_params, cache, first, positions)

  def body(carry, t):
    cache, last_logits, done = carry
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
    tok = sample_tokens(step_keys, last_logits, cfg.top_p, cfg.temperature)
    tok = jnp.where(done, lm.eos_id, tok)
    done = done | (tok == lm.eos_id)
    pos = jnp.full((n, 1), 1 + t, jnp.int32)
    logits, cache = lm_lib.step_with_cache(
      lm.module, lm_params, cache, lm_lib.embed(lm_params, tok[:, None]), pos
    )
    return (cache, logits[:, -1], done), tok

  init = (cache, logits[:, -1], jnp.zeros((n,), bool))
  _, tokens = jax.lax.scan(body, init, jnp.arange(steps))
  tokens = tokens.T  # [N, T]
  lengths = jnp.argmax(jnp.concatenate([tokens == lm.eos_id, jnp.ones((n, 1), bool)], axis=1), axis=1)
  return tokens, lengths.astype(jnp.int32)


def sentence_keys(key: jax.Array, image_ids: jax.Array, num_sentences: int) -> jax.Array:
  """[B] image ids -> [B, S] keys ``fold_in(fold_in(key, image_id), s)``."""
  per_image = jax.vmap(jax.random.fold_in, (None, 0))(key, image_ids)
  return jax.vmap(lambda k: jax.vmap(jax.random.fold_in, (None, 0))(k, jnp.arange(num_sentences)))(per_image)


@functools.partial(jax.jit, static_argnames=("lm", "translator", "cfg"))
def _generate(features, image_ids, translator_params, lm_params, key, *, lm, translator, cfg):
  b = features.shape[0]
  s = cfg.num_sentences
  prefix = translate(translator, translator_params, features.astype(jnp.float32))  # [b, k, E]
  prefix = jnp.repeat(prefix, s, axis=0)  # [b*S, k, E]
  keys = sentence_keys(key, image_ids, s).reshape(b * s)
  tokens, lengths = generate_from_prefix(lm, lm_params, prefix, keys, cfg)
  return Generation(tokens.reshape(b, s, -1), lengths.reshape(b, s))


def generate(
  key: jax.Array,
  features: jax.Array,
  translator_params: Any,
  lm_params: Any,
  *,
  lm: lm_lib.CausalLM,
  translator: TranslatorConfig,
  cfg: SamplingConfig = SamplingConfig(),
  image_ids: jax.Array | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> Generation:
  """Samples ``cfg.num_sentences`` sentences for every feature row, sharded over the devices of ``mesh``.

  Args:
    key: PRNG key.
    features: [B, F] frozen classifier features.
    translator_params: trained translator.
    lm_params: the frozen LM's parameters.
    lm: the LM (static).
    translator: the translator's settings (static).
    cfg: sampling settings (static).
    image_ids: [B] int ids folded into the key (default 0..B-1); pass global ids when calling chunk by chunk.
    mesh: device mesh (default all devices, ``parallel.data_mesh()``).

  Returns:
    Generation(tokens [B, S, T], lengths [B, S]).
  """
  features = jnp.asarray(features)
  check(features.ndim == 2, f"generate: features must be [B, F], got shape {features.shape}")
  check(
    translator.prefix_len + 1 + cfg.max_new_tokens <= lm.max_positions,
    f"prefix {translator.prefix_len} + 1 + max_new_tokens {cfg.max_new_tokens} exceeds {lm.max_positions} "
    "positions of the language model",
  )
  image_ids = jnp.arange(features.shape[0], dtype=jnp.int32) if image_ids is None else jnp.asarray(image_ids)
  check(
    image_ids.shape == features.shape[:1],
    f"generate: image_ids {image_ids.shape} vs features {features.shape}",
  )
  fn = functools.partial(_generate, lm=lm, translator=translator, cfg=cfg)
  return parallel.map_batched(fn, (features, image_ids), (translator_params, lm_params, key), mesh=mesh)


def decode_sentences(lm: lm_lib.CausalLM, generation: Generation) -> list[list[str]]:
  """Token ids -> text, [B][S] strings (uses ``lm.tokenizer``)."""
  tokens = np.asarray(generation.tokens)
  b, s, t = tokens.shape
  flat = lm_lib.decode(lm.tokenizer, tokens.reshape(b * s, t), lm.eos_id)
  return [flat[i * s : (i + 1) * s] for i in range(b)]
