"""Stage 2 of the shipped ShapesWorld CLIP: fine-tune the stage-1 CLIP on batches that differ mostly in shape.

Stage 1 (``shapesworld_clip.py``) learns colour and background but leaves shape near chance (0.25). The
supervised probe (``shapesworld_shape_probe.py``) shows the same vision tower leaves its shape plateau after
~1,000 steps when every batch carries a shape signal. This stage starts from stage 1's exported weights and
tokenizer (``TrainConfig.init_from``), with a fresh optimiser and schedule, on hard-negative batches where
background and colour are each fixed with probability 0.8 and size with 0.5: in most batches the captions
differ only in shape, size and position, so the contrastive loss can only fall by reading shape.

Launch (after stage 1 has run in workdirs/shapesworld_clip):

  python -m experiments.run --config experiments/configs/shapesworld_clip_shape.py \
    --workdir workdirs/shapesworld_clip_shape

then ship it: ``cp workdirs/shapesworld_clip_shape/model/* conceptjax/assets/shapesworld_clip/``.
``init_from=...`` names another stage-1 model directory. Resumes like stage 1; ``stop_at`` cuts it.
"""

from experiments.configs import shapesworld_clip


def get_config(arg=None):
  config = shapesworld_clip.get_config(
    arg,
    steps=3000,
    cooldown_steps=300,
    learning_rate=1e-3,
    init_from="workdirs/shapesworld_clip/model",
  )
  config.warmup_steps = 200
  config.hard_batches = ((0, (("background", 0.8), ("color", 0.8), ("size", 0.5))),)
  return config
