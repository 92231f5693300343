"""SpLiCE on ShapesWorld with the shipped tiny CLIP: the evaluation behind ``conceptjax main``.

Per-image decompositions beside the true attributes; concept recovery (precision@3, recall) on held-out
single-object images; zero-shot accuracy per attribute, dense vs recomposed, against l0; on a correlated split
(star/circle x water/grass, P(aligned) = ``correlation``) the concept statistics that expose the planted
correlation and the worst-group accuracy of a linear probe before and after removing the background concepts.
Writes an HTML report into ``report_dir`` (default ``WORKDIR/report/index.html``) and metrics.json. See
``experiments/tasks/shapesworld_splice.py`` for the protocol.

Launch (about 4-5 min on 2 shared CPU cores; ~6,200 images embedded, 10 penalties on 1,024 images):

  python -m experiments.run --config experiments/configs/shapesworld_splice.py:seed=0 --workdir workdirs/main
  conceptjax main --seed 0                                 # the same, from the repository root

Options (``:key=value,...``): ``seed``, ``clip=DIR`` (another save_pretrained CLIP), ``l1_penalty``,
``correlation``, ``num_distractors`` (first N of the shipped list; 0 = all), ``distractors=FILE``,
``report_dir=DIR``, ``solver_devices`` (devices for the solver, 0 = all). CI (about a minute):
``:runlocal=True`` (64 images per set, 2 penalties, 50 permutations).
Headline metrics: zeroshot_shape/color/background (dense), precision_at_3, recall, mean_l0,
worst_group_before/after (probe on recomposed embeddings, background concepts removed after), seconds.
"""

from experiments.configs.common import parse_arg


def get_config(arg=None):
  config = parse_arg(
    arg,
    seed=0,
    runlocal=False,
    clip="",
    l1_penalty=0.25,
    correlation=0.95,
    num_distractors=0,
    distractors="",
    report_dir="",
    solver_devices=0,
  )
  local = config.runlocal
  config.task = "shapesworld_splice"
  config.image_size = 64
  config.num_reference = 64 if local else 2048
  config.num_test = 64 if local else 1024
  config.num_grid = 16
  config.num_corr_train = 64 if local else 2048
  config.num_corr_test = 64 if local else 1024
  config.chunk = 64 if local else 256  # rows per solver call (one compile for every call)
  config.l1_sweep = (0.1, 0.4) if local else (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)
  config.permutations = 50 if local else 1000
  config.probe_c = 1.0
  return config
