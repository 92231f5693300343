"""conceptjax: concept-based interpretability of vision models in JAX.

Subpackages, one room per method:

* ``conceptjax.sparse``     batched non-negative sparse recovery (the SpLiCE solvers).
* ``conceptjax.splice``     SpLiCE: concept dictionaries, decompose/recompose, zero-shot, interventions.
* ``conceptjax.ceir``       CEIR: concept projection, concept VAE, clustering, attribution.
* ``conceptjax.texplain``   TExplain: classifier features -> frozen language model -> words.
* ``conceptjax.directions`` EDDP: decoding/encoding direction pairs, URA.
* ``conceptjax.models``     CLIP (transformers Flax), small classifiers, small language models.
* ``conceptjax.data``       tfds/grain pipelines, embedding store, ShapesWorld.

Shared mechanisms, one place each: ``loop`` (iterative solvers), ``parallel`` (device mesh and batch
sharding), ``checkpoint`` (orbax), ``io`` (atomic writes, JSONL), ``benchmarking`` (timing), ``errors``.
Subpackages are imported lazily so that ``import conceptjax`` stays cheap.
"""

__version__ = "0.1.0"
