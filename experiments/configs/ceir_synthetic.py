"""CEIR on planted concept data (no CLIP, no images): the pipeline's ground-truth check.

Launch (~3-6 min on 2 CPU cores):

  python -m experiments.run --config experiments/configs/ceir_synthetic.py --workdir workdirs/ceir_synthetic

6 classes named by 2 concepts each, 20 nuisance attributes (present with p = 0.5: they carry more
variance than the class), 5 dead and 10 noise concepts, 64-d features with unit Gaussian noise.
Headline: acc / nmi / ari of k-means on the VAE latent against
acc_kmeans_clip (k-means on the normalised backbone features) and acc_kmeans_concepts (on the z-scored
concept scores); attribution_precision_at_3 (top-3 attributed concepts that are present attributes);
filters_exact (filters A and B removed exactly the dead and noise concepts). Options: protocol=transductive,
seed=N, runlocal=True (CI size).
"""

from experiments.configs.common import parse_arg
from experiments.tasks.ceir_common import add_common, shrink_for_ci


def get_config(arg=None):
  config = parse_arg(
    arg,
    seed=0,
    runlocal=False,
    protocol="inductive",
    num_train=8000,
    num_val=1000,
    num_test=2000,
    epochs=60,
  )
  config.task = "ceir_synthetic"
  add_common(config)
  config.num_clusters = 6
  config.num_nuisance = 20
  config.nuisance_prob = 0.5
  config.feature_noise = 1.0
  config.feature_dim = 64
  config.learning_rate = 1e-3  # ~10k rows instead of the authors' 50-60k: a larger step than 5e-5
  if config.runlocal:
    shrink_for_ci(config)
  return config
