"""CEIR on CIFAR10 / CIFAR100-20 / STL10 (tfds) with real CLIPs: ViT-B/16 teacher, ViT-L/14 backbone.

Needs the dataset prepared for tfds (array_record) in ``data_dir``, the CLIP weights (hub ids or local
save_pretrained folders) and a concept list (one concept per line, e.g. Label-free CBM's
``data/concept_sets/cifar10_filtered.txt``). Launch (GPU: ~15 min embedding + ~10 min VAE; CPU: hours):

  ARGS=dataset=cifar10,concepts=c10.txt,data_dir=~/tensorflow_datasets
  python -m experiments.run --config experiments/configs/ceir_images.py:$ARGS --workdir workdirs/ceir_c10

Other keys: ``dataset=cifar100_20`` (20 superclasses) or ``stl10``; ``protocol=transductive`` (the
authors' protocol: VAE trained on train + test; inductive, train only, is the default); ``teacher=...``,
``backbone=...``; ``seed=N``. Paper (transductive, reviews' figures): CIFAR10 ACC 95.7 / NMI 90.1 /
ARI 90.7; STL10 ACC 99.2; CIFAR100-20 ACC ~57-63.
CI: ``runlocal=True`` with a tiny random CLIP inside ``tfds.testing.mock_data`` (tests/ceir).
"""

from experiments.configs.common import parse_arg
from experiments.tasks.ceir_common import add_common


def get_config(arg=None):
  config = parse_arg(
    arg,
    seed=0,
    runlocal=False,
    dataset="cifar10",
    concepts="",
    data_dir="",
    teacher="openai/clip-vit-base-patch16",
    backbone="openai/clip-vit-large-patch14",
    protocol="inductive",
    epochs=450,
  )
  config.task = "ceir_images"
  add_common(config)
  config.num_clusters = 0  # 0 = number of classes of the dataset
  config.val_fraction = 0.1
  config.chunk_rows = 4096
  config.embed_batch = 256
  if config.runlocal:
    config.epochs = min(config.epochs, 2)
    config.proj_steps = 50
    config.hidden, config.latent = 32, 8
    config.batch_size = 16
    config.num_attributed = 8
    config.clip_cutoff = -1.0  # a random CLIP's cosines are meaningless
    config.cos3_cutoff = -1.0
    config.chunk_rows = 32
    config.embed_batch = 32
  return config
