"""Stage 1 of the CLIP shipped in ``conceptjax/assets/shapesworld_clip``: contrastive ShapesWorld training.

Launch (stage 1 of the shipped model: 6,000 steps of 64 pairs, ~55 min at ~1.8 steps/s on 2 CPU cores):

  python -m experiments.run --config experiments/configs/shapesworld_clip.py \
    --workdir workdirs/shapesworld_clip

then run stages 2-5 (``shapesworld_clip_shape.py``) and ship stage 5's model (a few MB).

The run resumes from its last checkpoint when relaunched with the same workdir. CI smoke test (a few steps
of a 1-layer model, ~1 min): ``--config experiments/configs/shapesworld_clip.py:runlocal=True``.
Headline metrics (printed as the last line, and in metrics.json): zero-shot accuracy per attribute on held-out
single-object images and image-to-caption recall@1 (see ``conceptjax.models.clip_train.evaluate``).

This is stage 1 of the shipped model; stages 2-5 (``shapesworld_clip_shape.py``) fine-tune it until it reads
shape. Stage 1 alone (1,000 held-out images): zero-shot colour 0.96, background 0.75, shape 0.25
(chance 0.17); recall@1 image->caption 0.136, caption->image 0.11. Shape was 0.16 / 0.22 / 0.25 at steps
1,000 / 2,000 / 6,000 (400 images). A plain run (no hard-negative batches, 850 steps) had learned only the
background (0.999; colour 0.25, shape 0.19).
"""

from experiments.configs.common import parse_arg


def get_config(arg=None, **defaults):
  """The config for ``arg``; ``defaults`` replace this stage's defaults (used by later stages)."""
  base = dict(
    seed=0,
    runlocal=False,
    steps=6000,
    end_step=0,  # > 0: stop the schedule here (annealed by the cooldown), e.g. to fit a time budget.
    cooldown_steps=600,
    batch_size=64,
    learning_rate=2e-3,
    eval_num=1000,
    stop_at=0,  # > 0: stop (and export) after this step, as if the run were cut there.
    init_from="",  # a saved CLIP directory to start from (clip_train.TrainConfig.init_from)
  )
  config = parse_arg(arg, **{**base, **defaults})
  config.task = "shapesworld_clip"
  config.warmup_steps = 200
  # Hard-negative batches (clip_train.TrainConfig.hard_batches): half the batches share one background from
  # the start (colour is then learned by step ~1,000 but shape stays at chance); from step 2,300 background
  # and colour are each fixed in half the batches, so a quarter of them differ only in shape, size and
  # position. (The switch step is where the first run was resumed with the second phase added.)
  config.hard_batches = ((0, (("background", 0.5),)), (2300, (("background", 0.5), ("color", 0.5))))
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
