"""TExplain on ShapesWorld: does a classifier trained with a planted star-water correlation say "water"?

Two small CNNs classify star vs circle: one trained on a correlated split (star on water, circle on grass,
``p_correlated`` of the time), one on an uncorrelated split (p = 0.5). For each, a translator is trained (the
classifier and the shipped tiny GPT-2 frozen) on a neutral captioned set (star/circle on all seven
backgrounds), then ``num_sentences`` sentences are nucleus-sampled for every star image of a group-balanced
test set and the share of sentences naming water ("water", "sea") is compared (Mann-Whitney U over
per-image shares, one-sided). Mitigation: the correlated split is retrained with the background masked (set to
grey) in ``mask_share`` of its images; worst-group accuracy on the balanced test set and mean accuracy on the
in-distribution (correlated) test set are reported before and after.

Launch (about 10-15 min on 2 idle cores)::

  python -m experiments.run --config experiments/configs/texplain_shapesworld.py --workdir workdirs/tx_sw

CI (about a minute): ``--config experiments/configs/texplain_shapesworld.py:runlocal=True``.
"""

from experiments.configs.common import parse_arg


def get_config(arg=None):
  config = parse_arg(arg, seed=0, runlocal=False, p_correlated=0.95, mask_share=0.5, top_p=0.9)
  local = config.runlocal
  config.task = "texplain_shapesworld"
  config.image_size = 32
  config.num_train = 256 if local else 4000
  config.num_translator = 256 if local else 4000
  config.num_test = 64 if local else 1000
  config.num_explained = 8 if local else 200  # star images explained per classifier
  config.classifier_steps = 10 if local else 600
  config.classifier_batch = 64
  config.classifier_lr = 3e-3
  config.feature_dim = 32
  config.prefix_len = 4
  config.translator_steps = 10 if local else 1500
  config.translator_batch = 64
  config.translator_lr = 3e-3
  config.num_sentences = 4 if local else 20
  config.max_new_tokens = 16
  config.temperature = 1.0
  config.spurious_words = ("water", "sea")
  return config
