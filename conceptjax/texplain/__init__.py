"""TExplain: explain a frozen classifier's features in words through a frozen causal language model.

A translator (3 linear layers by default) maps the classifier's features to a prefix of k input embeddings
of a frozen causal LM (``conceptjax.models.lm``); it is trained alone with captioning cross-entropy. Many
sentences per image are then nucleus-sampled (jit, key/value cache, sharded over devices) and their words
counted without stop-words; the most frequent words explain the features, and words that are not the class
(e.g. a background) reveal a spurious correlation.

  cfg = texplain.TranslatorConfig(embed_dim=lm.embed_dim)
  params, _ = texplain.train_translator(key, feats, ids, mask, lm, cfg)
  gen = texplain.generate(key, feats_of_class, params, lm.params, lm=lm, translator=cfg)
  stats = texplain.word_stats(s for row in texplain.decode_sentences(lm, gen) for s in row)

References:
  TExplain (docs/texplain.md); ClipCap (Mokady et al., 2021); Holtzman et al., ICLR 2020.
"""

from conceptjax.texplain._sampling import (
  Generation,
  SamplingConfig,
  decode_sentences,
  generate,
  generate_from_prefix,
  nucleus_logits,
  sample_tokens,
  sentence_keys,
)
from conceptjax.texplain._train import (
  Frozen,
  TranslatorTrainConfig,
  captioning_loss,
  make_translator_step,
  train_translator,
)
from conceptjax.texplain._translator import Translator, TranslatorConfig, init_translator, translate
from conceptjax.texplain._words import WordStats, plot_top_words, presence, word_stats, words

__all__ = [
  "Frozen",
  "Generation",
  "SamplingConfig",
  "Translator",
  "TranslatorConfig",
  "TranslatorTrainConfig",
  "WordStats",
  "captioning_loss",
  "decode_sentences",
  "generate",
  "generate_from_prefix",
  "init_translator",
  "make_translator_step",
  "nucleus_logits",
  "plot_top_words",
  "presence",
  "sample_tokens",
  "sentence_keys",
  "train_translator",
  "translate",
  "word_stats",
  "words",
]
