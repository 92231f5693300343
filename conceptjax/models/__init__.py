"""Models: ``clip`` (transformers FlaxCLIPModel loading and sharded encoders), ``tokenizer`` (BPE training in
CLIPTokenizer format), ``classifier`` (small Flax CNNs), ``lm`` (small causal language models).

Import the submodule you need (``from conceptjax.models import clip``); nothing is imported here so that
loading one model family does not pull in the others.
"""
