"""The tiny CLIP shipped in ``conceptjax/assets/shapesworld_clip``: contrastive training on ShapesWorld.

Launch (reproduces the shipped model; ~60 min on 2 busy shared CPU cores: 850 steps of 64 pairs):

  python -m experiments.run --config experiments/configs/shapesworld_clip.py \
    --workdir workdirs/shapesworld_clip

then ship it (a few MB):

  cp workdirs/shapesworld_clip/model/* conceptjax/assets/shapesworld_clip/

The run resumes from its last checkpoint when relaunched with the same workdir. CI smoke test (a few steps
of a 1-layer model, ~1 min): ``--config experiments/configs/shapesworld_clip.py:runlocal=True``.
Headline metrics (printed as the last line, and in metrics.json): zero-shot accuracy per attribute on held-out
single-object images and image-to-caption recall@1 (see ``conceptjax.models.clip_train.evaluate``).
"""

from experiments.configs.common import parse_arg


def get_config(arg=None):
  config = parse_arg(
    arg,
    seed=0,
    runlocal=False,
    steps=1200,
    batch_size=64,
    learning_rate=1e-3,
    eval_num=1000,
    stop_at=0,  # > 0: stop (and export) after this step, as if the run were cut there.
  )
  config.task = "shapesworld_clip"
  # Cosine horizon 1,200 steps, ended at 850 with a linear cooldown over the last 150 (~1 h on 2 busy cores).
  config.end_step = 850
  config.cooldown_steps = 150
  config.warmup_steps = 100
  config.weight_decay = 0.05
  config.log_every = 25
  config.save_every = 100
  config.vocab_size = 1024
  config.tokenizer_corpus = 20_000
  config.two_object_prob = 0.35
  config.model = dict(
    image_size=64,
    patch_size=8,
    vision_hidden=64,
    vision_layers=4,
    vision_heads=4,
    text_hidden=64,
    text_layers=3,
    text_heads=4,
    max_length=32,
    projection_dim=64,
  )
  if config.runlocal:
    config.steps = min(config.steps, 4)
    config.end_step = 0
    config.cooldown_steps = 0
    config.batch_size = 16
    config.log_every = 1
    config.save_every = 2
    config.tokenizer_corpus = 512
    config.eval_num = 64
    config.model.update(vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, projection_dim=16)
  return config
