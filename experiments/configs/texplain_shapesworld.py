"""TExplain on ShapesWorld: does a classifier trained with a planted star-water correlation say "water"?

World: one star or circle on one of seven backgrounds (plain, stripes, dots, grass, water, sand, sky).
Two classifiers of shape (``conceptjax.models.classifier.SmallCNN``; TExplain reads the pooled features that
feed its linear head): one trained on a correlated split (P(water | star) = ``p_correlated``, P(water |
circle) = 1 - ``p_correlated``), one on an uncorrelated split (backgrounds independent of the shape).

Which images are explained: TExplain explains what a classifier uses for a class, so each classifier is
explained on the held-out images of a group-balanced split (both shapes on all seven backgrounds, uniform)
that IT PREDICTS as star. The correlated classifier calls water images stars, so its explanations name water
far above the base rate; the clean one's star predictions are stars on every background, so it names water
at about the base rate (1/7). Seven backgrounds rather than two: with water/grass only the base rate is 1/2
and the ratio could never reach 3x. Both translators (the classifier and the shipped tiny GPT-2 frozen) are
trained on the SAME neutral captioned split, so the only difference is the classifier.

``spurious_freq_*``: share of sampled sentences naming water ("water", "sea"). Significance is tested over
images, the independent units (sentences of one image share its features, so a per-sentence test would
overstate the evidence): an image "says water" when a majority of its ``num_sentences`` sentences do;
one-sided Fisher's exact test on (classifier x says water).

Mitigation (as in the paper): the background region (the generator's mask) of ``mask_share`` of the
correlated training images is replaced by a random background texture (``mask_fill='random'``; ``'grey'``
fills 0.5), and the classifier is retrained. Worst-group accuracy is over the 14 (shape, background) groups
of the balanced test split; ``mean_acc_*`` is on the in-distribution (correlated) test split and
``mean_acc_balanced_*`` on the balanced one.

Launch::

  python -m experiments.run --config experiments/configs/texplain_shapesworld.py --workdir workdirs/tx_sw

Runtime: 382 s wall from scratch on 2 cores shared with one other job (more than 50 min at load average
10-20); the two translator trainings (1500 steps each) dominate. They checkpoint, so a rerun with the same
``--workdir`` resumes them; such a rerun (classifiers, sampling and evaluation only) took 355 s wall.
Measured (seed 0): spurious_freq 0.479 correlated vs 0.109 clean (4.4x), images saying water 42/158 vs 0/200,
Fisher p = 3.6e-17; worst group 0.00 -> 0.96, mean accuracy (in-distribution test) 0.964 -> 0.986.

CI (about 50 s of CPU, a slow test): ``--config experiments/configs/texplain_shapesworld.py:runlocal=True``.
"""

from experiments.configs.common import parse_arg


def get_config(arg=None):
  config = parse_arg(
    arg, seed=0, runlocal=False, p_correlated=0.95, mask_share=0.9, mask_fill="random", top_p=0.9
  )
  local = config.runlocal
  config.task = "texplain_shapesworld"
  config.image_size = 32
  config.num_train = 256 if local else 4000
  config.num_translator = 256 if local else 4000
  config.num_test = 256 if local else 1400
  config.num_explained = 8 if local else 200  # held-out images predicted as star, explained per classifier
  config.classifier_widths = (8, 16) if local else (16, 32, 64)
  config.classifier_steps = 10 if local else 600
  config.classifier_batch = 64
  config.classifier_lr = 3e-3
  config.prefix_len = 4
  config.translator_steps = 10 if local else 1500
  config.translator_batch = 64
  config.translator_lr = 3e-3
  config.num_sentences = 4 if local else 20
  config.max_new_tokens = 16
  config.temperature = 1.0
  config.spurious_words = ("water", "sea")
  return config
