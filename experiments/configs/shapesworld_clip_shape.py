"""Stages 2-5 of the shipped ShapesWorld CLIP: fine-tunes that teach shape, then restore background.

Stage 1 (``shapesworld_clip.py``) learns colour and background but leaves shape near chance (0.25). The
supervised probe (``shapesworld_shape_probe.py``) shows the same vision tower leaves its shape plateau after
~1,000 steps when every batch carries a shape signal. Each stage here starts from the previous stage's
exported weights and tokenizer (``TrainConfig.init_from``) with a fresh optimiser and schedule, on
hard-negative batches (``TrainConfig.hard_batches``) that fix attributes at random:

- stage 2: background and colour each fixed with probability 0.8, size with 0.5: in most batches the
  captions differ only in shape, size and position, so the contrastive loss can only fall by reading shape
  (background zero-shot drops meanwhile: few batches still contrast backgrounds);
- stages 3 and 4: background 0.5, colour 0.6, size 0.5: backgrounds are contrasted again in half the batches
  while a third of them still differ only in shape, size and position (stage 4 repeats stage 3 from its
  output, with a fresh optimiser and warm-up);
- stage 5: background 0.3, colour 0.5, size 0.5 (backgrounds contrasted in 70% of the batches).

Held-out zero-shot shape / colour / background after stage 1 / 2 / 3 / 4 / 5 (2026-11-24, commits 4309e73 and
5fe27e6, 1,000 images): 0.25 / 0.96 / 0.75, 0.52 / 0.90 / 0.55, 0.76 / 0.90 / 0.86, 0.89 / 0.90 / 0.85, 0.97 /
0.98 / 1.00 (``experiments/results/shapesworld_clip_stage{2,3,4,5}.json``). Stage 5's recipe was chosen after
seeing stage 4's numbers (background lagging); nothing else was selected.

Launch (after stage 1 has run in workdirs/shapesworld_clip; 3,000 steps each, ~25 min at 2 steps/s on 2
cores):

  python -m experiments.run --config experiments/configs/shapesworld_clip_shape.py:stage=2 \
    --workdir workdirs/shapesworld_clip_shape2
  python -m experiments.run --config experiments/configs/shapesworld_clip_shape.py:stage=3 \
    --workdir workdirs/shapesworld_clip_shape3
  python -m experiments.run --config experiments/configs/shapesworld_clip_shape.py:stage=4 \
    --workdir workdirs/shapesworld_clip_shape4
  python -m experiments.run --config experiments/configs/shapesworld_clip_shape.py:stage=5 \
    --workdir workdirs/shapesworld_clip_shape5

then ship stage 5 (what is shipped now):
``cp workdirs/shapesworld_clip_shape5/model/* conceptjax/assets/shapesworld_clip/``.
``init_from=...`` names another starting model directory. Runs resume like stage 1; ``stop_at`` cuts them.
"""

from conceptjax.errors import check
from experiments.configs import shapesworld_clip

HARD_BATCHES = {
  2: (("background", 0.8), ("color", 0.8), ("size", 0.5)),
  3: (("background", 0.5), ("color", 0.6), ("size", 0.5)),
  4: (("background", 0.5), ("color", 0.6), ("size", 0.5)),
  5: (("background", 0.3), ("color", 0.5), ("size", 0.5)),
}
START = {
  2: "workdirs/shapesworld_clip/model",
  3: "workdirs/shapesworld_clip_shape2/model",
  4: "workdirs/shapesworld_clip_shape3/model",
  5: "workdirs/shapesworld_clip_shape4/model",
}


def get_config(arg=None):
  config = shapesworld_clip.get_config(arg, stage=2, steps=3000, cooldown_steps=300, learning_rate=1e-3)
  check(config.stage in HARD_BATCHES, f"stage must be one of {sorted(HARD_BATCHES)}, got {config.stage}")
  config.init_from = config.init_from or START[config.stage]
  config.warmup_steps = 200
  config.hard_batches = ((0, HARD_BATCHES[config.stage]),)
  return config
