"""SpLiCE: sparse, non-negative, human-readable decompositions of CLIP embeddings into concepts.

Pipeline: vocabulary file -> ``cached_dictionary(model, read_vocabulary(path, k))`` -> ``decompose`` image
embeddings (centred with the image mean ``mu``) with ``conceptjax.sparse`` -> ``recompose`` / ``intervene`` /
``classify`` (zero-shot, dense vs recomposed) / ``class_histograms`` and ``class_separation`` (spurious
correlations). The `conceptjax` CLI drives it: embed, decompose, zeroshot, concepts, vocab.

References:
  Bhalla et al., "Interpreting CLIP with Sparse Linear Concept Embeddings (SpLiCE)", NeurIPS 2024.
"""

from conceptjax.splice._dictionary import (
  ConceptDictionary,
  MeanAccumulator,
  build_dictionary,
  cached_dictionary,
  cached_store_mean,
  check_embeddings,
  default_cache_dir,
  dictionary_from_embeddings,
  embedding_mean,
  load_dictionary,
  load_mean,
  read_mean,
  save_dictionary,
  save_mean,
)
from conceptjax.splice._ops import (
  center,
  class_prompts,
  classify,
  cosine,
  decompose,
  intervene,
  recompose,
  recompose_dense,
  remove_concepts,
)
from conceptjax.splice._stats import (
  ClassHistograms,
  Separation,
  class_histograms,
  class_separation,
  permuted_labels,
  top_concepts,
)
from conceptjax.splice._vocab import (
  DEFAULT_VOCABULARY_SIZE,
  build_vocabulary,
  count_words,
  read_captions,
  read_vocabulary,
  write_vocabulary,
)

__all__ = [
  "DEFAULT_VOCABULARY_SIZE",
  "ClassHistograms",
  "ConceptDictionary",
  "MeanAccumulator",
  "Separation",
  "build_dictionary",
  "build_vocabulary",
  "cached_dictionary",
  "cached_store_mean",
  "center",
  "check_embeddings",
  "class_histograms",
  "class_prompts",
  "class_separation",
  "classify",
  "cosine",
  "count_words",
  "decompose",
  "default_cache_dir",
  "dictionary_from_embeddings",
  "embedding_mean",
  "intervene",
  "load_dictionary",
  "load_mean",
  "read_mean",
  "permuted_labels",
  "read_captions",
  "read_vocabulary",
  "recompose",
  "recompose_dense",
  "remove_concepts",
  "save_dictionary",
  "save_mean",
  "top_concepts",
  "write_vocabulary",
]
