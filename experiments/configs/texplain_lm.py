"""Trains the tiny GPT-2 shipped in ``conceptjax/assets/shapesworld_lm`` on ShapesWorld captions.

Launch (about 2 min on 2 idle cores; writes the model into the package folder)::

  python -m experiments.run --config experiments/configs/texplain_lm.py --workdir workdirs/texplain_lm

``runlocal=True`` (CI) trains a few steps on a few hundred captions into the workdir instead of the package.
The LM is keyword-prefix pre-trained (``LMTrainConfig.prefix_len``) so that a frozen copy can be steered by
the TExplain translator's prefix.
"""

from experiments.configs.common import parse_arg


def get_config(arg=None):
  config = parse_arg(arg, seed=0, runlocal=False, ship=True)
  config.task = "texplain_lm"
  config.num_captions = 300 if config.runlocal else 20_000
  config.vocab_size = 300 if config.runlocal else 512
  config.max_len = 24
  config.n_embd = 64
  config.n_layer = 2
  config.n_head = 2
  config.prefix_len = 4
  config.steps = 30 if config.runlocal else 800
  config.batch_size = 64
  config.learning_rate = 3e-3
  config.warmup = 5 if config.runlocal else 100
  config.ship = config.ship and not config.runlocal
  return config
