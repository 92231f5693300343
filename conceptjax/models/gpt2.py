"""GPT-2 in Flax (linen), fed input embeddings, with an explicit key/value cache; HF checkpoint loading.

The module takes input *embeddings* (token embeddings ``wte[ids]`` or any prefix, as TExplain needs) and
position ids, and returns next-token logits. Its parameters follow the Hugging Face layout, so the map
from PyTorch names is one-to-one::

  transformer.wte.weight [V, E]               -> transformer/wte/embedding
  transformer.wpe.weight [P, E]               -> transformer/wpe/embedding
  transformer.h.N.ln_1.{weight,bias}          -> transformer/h/N/ln_1/{scale,bias}
  transformer.h.N.attn.c_attn.{weight,bias}   -> transformer/h/N/attn/c_attn/{kernel,bias} (Conv1D: [in, out])
  transformer.h.N.attn.c_proj.{weight,bias}   -> transformer/h/N/attn/c_proj/{kernel,bias}
  transformer.h.N.ln_2.{weight,bias}          -> transformer/h/N/ln_2/{scale,bias}
  transformer.h.N.mlp.c_fc.{weight,bias}      -> transformer/h/N/mlp/c_fc/{kernel,bias}
  transformer.h.N.mlp.c_proj.{weight,bias}    -> transformer/h/N/mlp/c_proj/{kernel,bias}
  transformer.ln_f.{weight,bias}              -> transformer/ln_f/{scale,bias}
  lm_head.weight [V, E] (untied models only)  -> lm_head/kernel [E, V]

With tied embeddings (GPT-2's default) the logits are ``ln_f(h) @ wte.T``.

Attention is causal over the order of the sequence (slots), not over the position ids: TExplain puts a
prefix at position 0 before the caption. A key/value cache (:class:`KVCache`) holds every layer's keys and
values for a fixed number of slots; a call with a cache writes its ``T`` new keys at ``cache.index`` and
attends to every filled slot.

References:
  Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019.
  Hendrycks and Gimpel, "Gaussian Error Linear Units", 2016 (the tanh approximation, ``gelu_new``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.errors import InputError, check
from conceptjax.models import hf, layers

__all__ = [
  "ACTIVATIONS",
  "GPT2Config",
  "GPT2LMHead",
  "KVCache",
  "init_cache",
  "key_map",
  "load_params",
  "param_shapes",
  "params_from_hf",
  "save_params",
]

ACTIVATIONS = layers.ACTIVATIONS


# ----------------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  """GPT-2 hyper-parameters, as named in Hugging Face ``config.json`` files (hashable: a static argument).

  Attributes:
    vocab_size: V, rows of ``wte``.
    n_positions: P, rows of ``wpe`` (the longest sequence).
    n_embd: E, the width.
    n_layer: transformer blocks.
    n_head: attention heads (E must be a multiple).
    n_inner: MLP width (None: 4 E).
    activation_function: the MLP nonlinearity, a key of ``ACTIVATIONS`` (GPT-2: ``gelu_new``).
    layer_norm_epsilon: epsilon of every layer norm.
    bos_token_id, eos_token_id: special token ids.
    scale_attn_weights: divide attention scores by sqrt(head width).
    scale_attn_by_inverse_layer_idx: also divide them by (layer + 1).
    tie_word_embeddings: the output projection is ``wte`` (else a separate ``lm_head``).
  """

  vocab_size: int
  n_positions: int = 1024
  n_embd: int = 768
  n_layer: int = 12
  n_head: int = 12
  n_inner: int | None = None
  activation_function: str = "gelu_new"
  layer_norm_epsilon: float = 1e-5
  bos_token_id: int = 50256
  eos_token_id: int = 50256
  scale_attn_weights: bool = True
  scale_attn_by_inverse_layer_idx: bool = False
  tie_word_embeddings: bool = True

  def __post_init__(self):
    for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
      value = getattr(self, name)
      check(isinstance(value, int) and value > 0, f"GPT2Config.{name} must be a positive int, got {value!r}")
    check(
      self.n_embd % self.n_head == 0,
      f"GPT2Config: n_embd {self.n_embd} is not a multiple of n_head {self.n_head}",
    )
    check(
      self.activation_function in ACTIVATIONS,
      f"GPT2Config: unknown activation_function {self.activation_function!r} (known: {sorted(ACTIVATIONS)})",
    )

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head

  @property
  def inner_dim(self) -> int:
    return self.n_inner if self.n_inner is not None else 4 * self.n_embd

  @classmethod
  def from_hf(cls, config: dict, where: str = "config.json") -> GPT2Config:
    """Reads a Hugging Face GPT-2 ``config.json`` dict (InputError for another architecture)."""
    kind = config.get("model_type")
    check(kind == "gpt2", f"{where}: model_type {kind!r} is not a GPT-2 ('gpt2')")
    check(not config.get("add_cross_attention"), f"{where}: GPT-2 with cross-attention is not supported")
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    values = {k: config[k] for k in fields if k in config}
    values.setdefault("vocab_size", 50257)
    for name in ("bos_token_id", "eos_token_id"):
      if values.get(name) is None:
        values[name] = fields[name]
    try:
      return cls(**values)
    except TypeError as e:
      raise InputError(f"{where}: {e}") from e

  def to_hf(self) -> dict:
    """The ``config.json`` dict transformers' ``GPT2LMHeadModel`` reads (no dropout: the module has none)."""
    return {
      "architectures": ["GPT2LMHeadModel"],
      "model_type": "gpt2",
      **dataclasses.asdict(self),
      "attn_pdrop": 0.0,
      "embd_pdrop": 0.0,
      "resid_pdrop": 0.0,
      "use_cache": True,
    }


# ----------------------------------------------------------------------------------------------------------
# The module


class KVCache(NamedTuple):
  """Keys and values of every layer for ``S`` slots; slots ``[0, index)`` are filled.

  Attributes:
    keys: [L, B, S, H, D] per-layer keys (D = E / H).
    values: [L, B, S, H, D] per-layer values.
    index: [] int32, the number of filled slots (the same for every row).
  """

  keys: jax.Array
  values: jax.Array
  index: jax.Array


def init_cache(config: GPT2Config, batch: int, max_len: int, dtype: Any = jnp.float32) -> KVCache:
  """An empty cache for ``batch`` rows of up to ``max_len`` slots."""
  shape = (config.n_layer, batch, max_len, config.n_head, config.head_dim)
  return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


def _dense(features: int, std: float, dtype: Any, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, kernel_init=nn.initializers.normal(std), name=name)


def _residual_std(config: GPT2Config) -> float:
  """GPT-2's initial scale of the projections that write to the residual stream: 0.02 / sqrt(2 L)."""
  return 0.02 / math.sqrt(2 * config.n_layer)


class Attention(nn.Module):
  """Multi-head causal self-attention; one fused q/k/v projection (``c_attn``) and ``c_proj``."""

  config: GPT2Config
  layer: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, allowed, past=None):
    """x [B, T, E]; allowed [B|1, 1, T, S] bool; past: (keys [B, S, H, D], values [B, S, H, D], index []).

    Returns:
      ([B, T, E], (keys, values) [B, S, H, D] with this call's keys written, or None without ``past``).
    """
    cfg = self.config
    b, t, e = x.shape
    qkv = _dense(3 * e, 0.02, self.dtype, "c_attn")(x)
    q, k, v = (z.reshape(b, t, cfg.n_head, cfg.head_dim) for z in jnp.split(qkv, 3, axis=-1))
    new = None
    if past is not None:
      keys, values, index = past
      k = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, index, 0, 0))
      new = (k, v)
    scale = 1.0
    if cfg.scale_attn_weights:
      scale /= math.sqrt(cfg.head_dim)
    if cfg.scale_attn_by_inverse_layer_idx:
      scale /= self.layer + 1
    out = layers.attention(q, k, v, allowed, scale, self.dtype)
    return _dense(e, _residual_std(cfg), self.dtype, "c_proj")(out), new


class MLP(nn.Module):
  """``c_proj(act(c_fc(x)))``."""

  config: GPT2Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = ACTIVATIONS[cfg.activation_function](_dense(cfg.inner_dim, 0.02, self.dtype, "c_fc")(x))
    return _dense(cfg.n_embd, _residual_std(cfg), self.dtype, "c_proj")(h)


class Block(nn.Module):
  """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(.))``."""

  config: GPT2Config
  layer: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, allowed, past=None):
    eps = self.config.layer_norm_epsilon
    a, new = Attention(self.config, self.layer, self.dtype, name="attn")(
      nn.LayerNorm(eps, dtype=self.dtype, name="ln_1")(x), allowed, past
    )
    x = x + a
    x = x + MLP(self.config, self.dtype, name="mlp")(nn.LayerNorm(eps, dtype=self.dtype, name="ln_2")(x))
    return x, new


class Blocks(nn.Module):
  """The ``n_layer`` blocks (parameters ``h/0``, ``h/1``, ...), threading the cache through them."""

  config: GPT2Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, allowed, cache: KVCache | None = None):
    keys, values = (None, None) if cache is None else (cache.keys, cache.values)
    for i in range(self.config.n_layer):
      past = None if cache is None else (keys[i], values[i], cache.index)
      x, new = Block(self.config, i, self.dtype, name=str(i))(x, allowed, past)
      if new is not None:
        keys, values = keys.at[i].set(new[0]), values.at[i].set(new[1])
    if cache is None:
      return x, None
    return x, KVCache(keys, values, cache.index + x.shape[1])


class GPT2Model(nn.Module):
  """Position embeddings, the blocks and the final layer norm (``transformer`` in HF naming)."""

  config: GPT2Config
  dtype: Any = jnp.float32

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    self.wte = nn.Embed(cfg.vocab_size, cfg.n_embd, embedding_init=init, dtype=self.dtype)
    self.wpe = nn.Embed(cfg.n_positions, cfg.n_embd, embedding_init=init, dtype=self.dtype)
    self.h = Blocks(cfg, self.dtype)
    self.ln_f = nn.LayerNorm(cfg.layer_norm_epsilon, dtype=self.dtype)

  def __call__(self, embeds, positions, allowed, cache=None):
    if self.is_initializing():
      self.wte(jnp.zeros((1, 1), jnp.int32))  # create wte even for untied models, which never read it here
    x = embeds.astype(self.dtype) + self.wpe(positions)
    x, cache = self.h(x, allowed, cache)
    return self.ln_f(x), cache


class GPT2LMHead(nn.Module):
  """GPT-2 with its language-model head, run from input embeddings.

  Attributes:
    config: the hyper-parameters.
    dtype: compute dtype (parameters stay float32; attention softmax runs in float32).
  """

  config: GPT2Config
  dtype: Any = jnp.float32

  def setup(self):
    self.transformer = GPT2Model(self.config, self.dtype)
    if not self.config.tie_word_embeddings:
      self.lm_head = nn.Dense(
        self.config.vocab_size, use_bias=False, dtype=self.dtype, kernel_init=nn.initializers.normal(0.02)
      )

  def __call__(
    self,
    embeds: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array | None = None,
    cache: KVCache | None = None,
  ) -> tuple[jax.Array, KVCache | None]:
    """Next-token logits.

    Args:
      embeds: [B, T, E] input embeddings.
      positions: [B, T] int position ids (rows of ``wpe``).
      attention_mask: [B, S] (S = T without a cache, the cache's slots with one): 1 where a key may be
        attended (0 on padding), or None for all.
      cache: a :class:`KVCache`; this call's keys and values go to slots ``[index, index + T)``.

    Returns:
      (logits [B, T, V], the updated cache or None).
    """
    t = embeds.shape[1]
    if cache is None:
      query_slot, key_slot = jnp.arange(t), jnp.arange(t)
    else:
      query_slot, key_slot = cache.index + jnp.arange(t), jnp.arange(cache.keys.shape[2])
    allowed = (key_slot[None, :] <= query_slot[:, None])[None, None]  # [1, 1, T, S]
    if attention_mask is not None:
      allowed = allowed & (attention_mask[:, None, None, :] != 0)
    hidden, cache = self.transformer(embeds, positions, allowed, cache)
    if self.config.tie_word_embeddings:
      return self.transformer.wte.attend(hidden), cache
    return self.lm_head(hidden), cache


# ----------------------------------------------------------------------------------------------------------
# Hugging Face checkpoints

_BLOCK = (
  ("ln_1.weight", ("ln_1", "scale")),
  ("ln_1.bias", ("ln_1", "bias")),
  ("attn.c_attn.weight", ("attn", "c_attn", "kernel")),
  ("attn.c_attn.bias", ("attn", "c_attn", "bias")),
  ("attn.c_proj.weight", ("attn", "c_proj", "kernel")),
  ("attn.c_proj.bias", ("attn", "c_proj", "bias")),
  ("ln_2.weight", ("ln_2", "scale")),
  ("ln_2.bias", ("ln_2", "bias")),
  ("mlp.c_fc.weight", ("mlp", "c_fc", "kernel")),
  ("mlp.c_fc.bias", ("mlp", "c_fc", "bias")),
  ("mlp.c_proj.weight", ("mlp", "c_proj", "kernel")),
  ("mlp.c_proj.bias", ("mlp", "c_proj", "bias")),
)


def key_map(config: GPT2Config) -> dict[str, hf.Entry]:
  """PyTorch name -> parameter path for ``config`` (see the module docstring).

  GPT-2's ``Conv1D`` stores its weight as [in, out], like a Flax ``Dense`` kernel: nothing is transposed
  but an untied ``lm_head`` (a torch ``Linear``, [out, in]).
  """
  m = {
    "transformer.wte.weight": hf.Entry(("transformer", "wte", "embedding")),
    "transformer.wpe.weight": hf.Entry(("transformer", "wpe", "embedding")),
    "transformer.ln_f.weight": hf.Entry(("transformer", "ln_f", "scale")),
    "transformer.ln_f.bias": hf.Entry(("transformer", "ln_f", "bias")),
  }
  for i in range(config.n_layer):
    for name, path in _BLOCK:
      m[f"transformer.h.{i}.{name}"] = hf.Entry(("transformer", "h", str(i), *path))
  if not config.tie_word_embeddings:
    m["lm_head.weight"] = hf.Entry(("lm_head", "kernel"), transpose=True)
  return m


# Causal-mask buffers that older checkpoints store (not parameters).
_is_buffer = hf.layer_pattern("transformer.h.", ("attn.bias", "attn.masked_bias"))


def param_shapes(config: GPT2Config) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Parameter path -> shape of a ``GPT2LMHead(config)`` (no computation: ``jax.eval_shape``)."""
  module = GPT2LMHead(config)
  embeds = jax.ShapeDtypeStruct((1, 1, config.n_embd), jnp.float32)
  positions = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  tree = jax.eval_shape(lambda e, p: module.init(jax.random.key(0), e, p), embeds, positions)
  return hf.flat_shapes(tree["params"])


def params_from_hf(tensors: dict[str, np.ndarray], config: GPT2Config, where: str) -> dict:
  """The parameter tree from PyTorch-named tensors (``GPT2LMHeadModel`` or base ``GPT2Model`` naming).

  A base-model checkpoint (names without ``transformer.``, as the original ``gpt2`` files) is read the
  same way; causal-mask buffers and a tied ``lm_head.weight`` copy are dropped.

  Raises:
    InputError: one line naming missing / unexpected keys and mismatched shapes.
  """
  if not any(k.startswith("transformer.") for k in tensors):
    tensors = {k if k.startswith("lm_head.") else f"transformer.{k}": v for k, v in tensors.items()}
  tied_copy = {"lm_head.weight"} if config.tie_word_embeddings else set()
  return hf.params_from_tensors(
    tensors,
    key_map(config),
    param_shapes(config),
    where,
    ignore=lambda k: k in tied_copy or _is_buffer(k),
  )


def load_params(folder: str | Path) -> tuple[GPT2Config, dict]:
  """Reads a local Hugging Face GPT-2 folder: (config, parameter tree of numpy float32 arrays).

  Raises:
    InputError: missing files, another architecture, or weights that do not fit the config (one line).
  """
  folder = Path(folder)
  config = GPT2Config.from_hf(hf.read_config(folder), str(folder / hf.CONFIG))
  hint = ""
  if (folder / "flax_model.msgpack").is_file():
    hint = (
      " (it holds flax_model.msgpack, transformers' Flax format: convert it with "
      f"python -m conceptjax.models.convert_flax_gpt2 {folder})"
    )
  tensors = hf.read_tensors(folder, hint)
  return config, params_from_hf(tensors, config, str(folder))


def save_params(folder: str | Path, config: GPT2Config, params: Any) -> None:
  """Writes ``config.json`` and ``model.safetensors`` in PyTorch naming (no tied ``lm_head`` copy, as
  transformers' own ``save_pretrained``)."""
  tensors = hf.tensors_from_params(jax.device_get(params), key_map(config))
  hf.write(folder, config.to_hf(), {k: v.astype(np.float32) for k, v in tensors.items()})
