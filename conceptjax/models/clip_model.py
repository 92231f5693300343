"""The project's CLIP in Flax linen: a vision transformer, a causal text transformer, two projections.

One definition serves every checkpoint the loader reads (``conceptjax.models.clip_weights``): transformers'
``CLIPModel`` (OpenAI ViT-B/32, B/16, L/14, LAION's OpenCLIP models in HF naming) and open_clip state dicts
(ViT-B-32, ViT-B-16, ViT-L-14 and the other plain-ViT configs). Both are pre-LN transformers with the same
numerics; they differ only in names, in the activation (QuickGELU or exact GELU, per config) and in how the
text tower pools (at the first end-of-text token, or at the largest token id for the legacy OpenAI configs
and open_clip).

Shapes: images enter as normalised pixels [B, H, W, 3] (channels last), texts as token ids [B, L] with an
attention mask [B, L]; both towers return projected, unnormalised features [B, embed_dim].

``dtype`` sets the compute type (float32 or bfloat16); parameters stay float32, layer-norm statistics and the
attention softmax are computed in float32.

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
  Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (the vision tower).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from conceptjax.models import layers

__all__ = [
  "ACTIVATIONS",
  "CLIP",
  "ClipConfig",
  "TextConfig",
  "VisionConfig",
  "random_params",
]


ACTIVATIONS = layers.ACTIVATIONS


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The vision tower: a ViT over ``(image_size / patch_size)^2`` patches plus a class token."""

  image_size: int = 224
  patch_size: int = 32
  width: int = 768
  layers: int = 12
  heads: int = 12
  mlp_dim: int = 3072
  act: str = "quick_gelu"
  eps: float = 1e-5

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """The text tower: a causal transformer over ``context_length`` tokens.

  Attributes:
    pool: ``"eos"`` pools at the first ``eos_id`` token (transformers' CLIP); ``"argmax"`` at the largest
      token id (open_clip, and transformers' legacy configs whose ``eos_token_id`` is 2), which is the
      end-of-text token in CLIP's vocabulary.
  """

  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  layers: int = 12
  heads: int = 8
  mlp_dim: int = 2048
  act: str = "quick_gelu"
  eps: float = 1e-5
  eos_id: int = 49407
  pool: str = "eos"


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """A CLIP: both towers and the shared embedding width (hashable: a static argument of ``jax.jit``)."""

  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  embed_dim: int = 512

  def __post_init__(self):
    for tower in (self.vision, self.text):
      if tower.act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {tower.act!r}; known: {', '.join(ACTIVATIONS)}")
      if tower.width % tower.heads:
        raise ValueError(f"width {tower.width} is not a multiple of {tower.heads} heads")
    if self.text.pool not in ("eos", "argmax"):
      raise ValueError(f"unknown text pooling {self.text.pool!r}; expected 'eos' or 'argmax'")


class Attention(nn.Module):
  """Multi-head self-attention with separate q/k/v/out projections (biases on all four)."""

  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array | None) -> jax.Array:
    """x: [B, T, D]; allowed: bool mask broadcastable to [B, heads, T, T], or None."""
    b, t, d = x.shape
    hd = d // self.heads
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)  # noqa: E731
    split = lambda y: y.reshape(b, t, self.heads, hd)  # noqa: E731
    q, k, v = (split(dense(name)(x)) for name in ("q_proj", "k_proj", "v_proj"))
    return dense("out_proj")(layers.attention(q, k, v, allowed, hd**-0.5, self.dtype))


class Block(nn.Module):
  """A pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

  heads: int
  mlp_dim: int
  act: str
  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array | None) -> jax.Array:
    ln = lambda name: nn.LayerNorm(self.eps, dtype=self.dtype, name=name)  # noqa: E731
    x = x + Attention(self.heads, self.dtype, name="attn")(ln("ln_1")(x), allowed)
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(ln("ln_2")(x))
    h = nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(ACTIVATIONS[self.act](h))
    return x + h


class Encoder(nn.Module):
  """``layers`` blocks in sequence (parameters ``block_0`` ... ``block_{layers-1}``)."""

  layers: int
  heads: int
  mlp_dim: int
  act: str
  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, allowed: jax.Array | None = None) -> jax.Array:
    for i in range(self.layers):
      x = Block(self.heads, self.mlp_dim, self.act, self.eps, self.dtype, name=f"block_{i}")(x, allowed)
    return x


def _encoder(cfg: VisionConfig | TextConfig, dtype: Any) -> Encoder:
  return Encoder(cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, cfg.eps, dtype, name="encoder")


class VisionTower(nn.Module):
  """ViT: patches -> [class token; patches] + positions -> ln_pre -> encoder -> ln_post(class token)."""

  cfg: VisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """pixels: [B, H, W, 3] normalised. Returns (tokens [B, T, width], pooled [B, width])."""
    cfg, p = self.cfg, self.cfg.patch_size
    x = nn.Conv(cfg.width, (p, p), strides=(p, p), padding="VALID", use_bias=False, dtype=self.dtype,
                name="patch_embed")(pixels.astype(self.dtype))  # fmt: skip
    x = x.reshape(x.shape[0], -1, cfg.width)
    cls = self.param("class_embedding", nn.initializers.normal(0.02), (cfg.width,))
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (cfg.num_patches + 1, cfg.width))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, cfg.width)), x], axis=1)
    x = nn.LayerNorm(cfg.eps, dtype=self.dtype, name="ln_pre")(x + pos.astype(self.dtype))
    x = _encoder(cfg, self.dtype)(x)
    pooled = nn.LayerNorm(cfg.eps, dtype=self.dtype, name="ln_post")(x[:, 0])
    return x, pooled


class TextTower(nn.Module):
  """Causal transformer: tokens + positions -> encoder (causal and padding mask) -> ln_final -> pool."""

  cfg: TextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ids, mask: int [B, L] (L <= context_length). Returns (tokens [B, L, width], pooled [B, width])."""
    cfg = self.cfg
    length = ids.shape[-1]
    x = nn.Embed(cfg.vocab_size, cfg.width, dtype=self.dtype, name="token_embedding")(ids)
    pos = self.param("pos_embedding", nn.initializers.normal(0.01), (cfg.context_length, cfg.width))
    x = x + pos[:length].astype(self.dtype)
    allowed = jnp.tril(jnp.ones((length, length), bool))[None, None] & (mask[:, None, None, :] > 0)
    x = _encoder(cfg, self.dtype)(x, allowed)
    x = nn.LayerNorm(cfg.eps, dtype=self.dtype, name="ln_final")(x)
    at = jnp.argmax(ids, axis=-1) if cfg.pool == "argmax" else jnp.argmax(ids == cfg.eos_id, axis=-1)
    return x, jnp.take_along_axis(x, at[:, None, None], axis=1)[:, 0]


class CLIP(nn.Module):
  """Both towers, their projections to ``embed_dim`` (no bias) and the learnt logit scale (log)."""

  cfg: ClipConfig
  dtype: Any = jnp.float32

  def setup(self):
    self.vision = VisionTower(self.cfg.vision, self.dtype)
    self.text = TextTower(self.cfg.text, self.dtype)
    self.visual_projection = nn.Dense(self.cfg.embed_dim, use_bias=False, dtype=self.dtype)
    self.text_projection = nn.Dense(self.cfg.embed_dim, use_bias=False, dtype=self.dtype)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())

  def encode_image(self, pixels: jax.Array) -> jax.Array:
    """pixels: float [B, H, W, 3] normalised. Returns float32 [B, embed_dim] (unnormalised)."""
    return self.visual_projection(self.vision(pixels)[1]).astype(jnp.float32)

  def encode_text(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """ids, mask: int [B, L]. Returns float32 [B, embed_dim] (unnormalised)."""
    return self.text_projection(self.text(ids, mask)[1]).astype(jnp.float32)

  def __call__(self, pixels: jax.Array, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
    """(image features [B, e], text features [B', e], logit scale (log) [])."""
    return self.encode_image(pixels), self.encode_text(ids, mask), self.logit_scale


def param_shapes(cfg: ClipConfig) -> Any:
  """The parameter tree of ``CLIP(cfg)`` as ``jax.ShapeDtypeStruct`` leaves (nothing is computed)."""
  v, t = cfg.vision, cfg.text
  pixels = jnp.zeros((1, v.image_size, v.image_size, 3), jnp.float32)
  ids = jnp.zeros((1, t.context_length), jnp.int32)
  return jax.eval_shape(lambda: CLIP(cfg).init(jax.random.key(0), pixels, ids, ids))["params"]


def random_params(cfg: ClipConfig, seed: int = 0) -> Any:
  """Random float32 parameters drawn in numpy (fast at any size; no XLA initialisation).

  LayerNorm scales 1 and biases 0, Dense/Conv kernels N(0, 1/fan_in), embeddings N(0, 0.02^2), the logit
  scale log(1/0.07).
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    if name == "bias":
      return np.zeros(leaf.shape, np.float32)
    if name == "logit_scale":
      return np.asarray(np.log(1 / 0.07), np.float32)
    std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.02
    return (rng.standard_normal(leaf.shape) * std).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, param_shapes(cfg))
