"""EDDP on ShapesWorld: dissect a small CNN's per-patch activations with half-space detectors.

A SmallCNN is trained on ShapesWorld shape classes (6 shapes, all colours, sizes and backgrounds); the
activations after one conv block are the patches (an 8x8 grid for 32x32 images). EDDP (the same schedule as
eddp_synthetic: warm start with URA, raw-space stage, joint stage with signal vectors; restarts selected on
the stage-(b) objective, label-free) finds I detectors. The dissection table gives each detector's best IoU
against the object / background / attribute masks downsampled to the patch grid, and each direction's
influence on the class logits (add its signal vector to every patch, measure the logit change; permutation
test against the same vector with its coordinates shuffled). PCA and spherical k-means directions are scored
the same way beside it.

Launch (about 12 min of CPU; 2005 s wall on 2 cores at load average 5-11):
  python -m experiments.run --config experiments/configs/eddp_shapesworld.py
Measured 2026-11-24 (commit ec62783, seed 0): the CNN (max pooling, single-object 32x32 images, 600 Adam
steps) reaches held-out shape accuracy 0.9725 (400 test images; chance 0.167); 8 of 8 EDDP detectors have IoU
> 0.2, mean best IoU 0.356 (PCA 1 of 8, 0.164; spherical k-means 6 of 8, 0.334); 6 detectors match "object"
best (IoU 0.25-0.38), 2 "background"; 1 of 8 has a significant logit influence (p < 0.05).
CI size (seconds): `...eddp_shapesworld.py:runlocal=True`.
"""

from experiments.configs.common import parse_arg
from experiments.configs.eddp_synthetic import schedule


def get_config(arg=None):
  config = parse_arg(
    arg,
    seed=0,
    runlocal=False,
    num_detectors=8,
    restarts=4,
    select_after=1,
    ura_weight=0.01,
    filter_signal=0.1,
  )
  config.task = "eddp_shapesworld"
  config.image_size = 32
  # One object per image: the class is the shape of the "main" object, and in a two-object image nothing
  # marks which object is the main one (random quadrants, sizes, colours), so 35% of two-object-world labels
  # are a coin flip between the two shapes (accuracy ceiling ~0.83).
  config.max_objects = 1
  config.train_images = 4000
  config.eval_images = 400  # images whose patches EDDP runs on (and that the dissection scores)
  config.classifier_widths = (16, 32, 64)
  config.feature_block = 1  # patches = output of block 1 (8x8 grid for 32x32 images)
  config.classifier_pool = "max"  # 2x2 max pooling between blocks (average pooling learns shape far slower)
  config.classifier_global_pool = "max"
  config.classifier_steps = 600
  config.classifier_batch = 64
  config.classifier_lr = 3e-3
  config.mask_threshold = 0.5  # a patch belongs to a mask when at least this share of its pixels do
  config.permutations = 100
  config.influence_images = 64  # images the logit changes are averaged over
  config.warm_start = "orthogonal"
  config.loss = dict(gamma=1.0, tau=0.5, rho=0.5, power=4.0, kappa_range=(0.5, 0.9))
  u = config.ura_weight
  config.schedule = schedule(u, config.filter_signal, b_updates=20)
  if config.runlocal:
    config.train_images = 256
    config.eval_images = 32
    config.classifier_steps = 5
    config.classifier_batch = 32
    config.num_detectors = 4
    config.restarts = 2
    config.permutations = 10
    config.influence_images = 8
    for st in config.schedule:
      st["updates"] = 2
      st["steps_per_update"] = 5
  return config
