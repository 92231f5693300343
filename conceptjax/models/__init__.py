"""Models: ``clip`` (loading transformers and open_clip checkpoints, sharded encoders) over ``clip_model``
(the project's Flax CLIP) and ``clip_weights`` (checkpoint name maps), ``clip_train`` (contrastive training),
``tokenizer`` (BPE training in CLIPTokenizer format), ``classifier`` (small Flax CNNs), ``lm`` (small causal
language models).

Import the submodule you need (``from conceptjax.models import clip``); nothing is imported here so that
loading one model family does not pull in the others.
"""
