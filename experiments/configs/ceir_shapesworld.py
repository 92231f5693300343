"""CEIR on ShapesWorld: concept projection + VAE + k-means on the shape classes, with the shipped tiny CLIP.

Launch (~10-20 min on 2 CPU cores: embedding 9,000 images, 1,000 projection steps, 100 VAE epochs):

  python -m experiments.run --config experiments/configs/ceir_shapesworld.py --workdir workdirs/ceir_sw

Options (``:key=value,...``): ``protocol='transductive'`` (the authors' protocol: VAE trained on train+test),
``clip=DIR`` (another save_pretrained CLIP), ``seed=N``. CI smoke run (a tiny random CLIP, ~1 min):
``:runlocal=True,clip=DIR``. Headline metrics: acc, nmi, ari (k-means on the test latent, k = 6 shapes),
acc_kmeans_clip (k-means on raw CLIP image embeddings), acc_kmeans_concepts (on the z-scored concept scores),
attribution_precision_at_3. Targets: acc >= 0.9 and above both baselines; precision@3 >= 0.8.

Measured (defaults, inductive, seed 0):
- CLIP shipped in session 4 (stage 5; zero-shot shape 0.97, colour 0.98, background 1.0), ~100 s: acc 0.382,
  nmi 0.264, ari 0.160; acc_kmeans_clip 0.394, acc_kmeans_concepts 0.356; attribution_precision_at_3 0.741.
  (Stage 4's CLIP: acc 0.397, k-means 0.409 / 0.425, precision@3 0.699.)
  Targets MISSED: the CLIP embedding now holds shape, but unsupervised k = 6
  clusters need not follow shape rather than colour or background (not measured yet).
- (488 s under load average ~14) CLIP shipped 22:28 UTC 2026-11-23 (6,000 steps; zero-shot shape 0.25,
  colour 0.96, background 0.75):
  acc 0.216, nmi 0.016, ari 0.008; acc_kmeans_clip 0.193, acc_kmeans_concepts 0.228 (chance 0.182);
  attribution_precision_at_3 0.607 (signed 0.401); IG completeness gap <= 0.5%. Targets MISSED.
- The earlier 850-step CLIP: acc 0.194, acc_kmeans_clip 0.193, acc_kmeans_concepts 0.198, precision@3 0.528.
Why: the teacher and the backbone are the same CLIP, so every concept score is a linear function of the CLIP
image embedding (filter B keeps all 56 concepts, validation cos^3 0.84-1.0) and the VAE can only re-express
what that embedding holds; it holds next to nothing about shape (k-means on it: chance). Nothing was tuned
against the labels (that reading was of session 3's shape-blind CLIP).
"""

from experiments.configs.common import parse_arg
from experiments.tasks.ceir_common import add_common, shrink_for_ci


def get_config(arg=None):
  config = parse_arg(
    arg,
    seed=0,
    runlocal=False,
    protocol="inductive",
    clip="",
    num_train=6000,
    num_val=1000,
    num_test=2000,
    epochs=100,
  )
  config.task = "ceir_shapesworld"
  add_common(config)
  config.num_clusters = 6
  config.max_objects = 1
  config.image_size = 64
  config.template = "{}"
  # ShapesWorld has ~9k images, not 60k: a larger step size than the authors' 5e-5 reaches a trained VAE in
  # 100 epochs (the authors train 450 epochs on 50k-60k rows).
  config.learning_rate = 1e-3
  config.clip_cutoff = 0.0  # the tiny CLIP's cosines are not on OpenAI CLIP's scale; filter B does the work
  if config.runlocal:
    shrink_for_ci(config)
    config.image_size = 32
  return config
