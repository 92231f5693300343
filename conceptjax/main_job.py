"""``conceptjax main``: the README's main job, SpLiCE on ShapesWorld with an HTML report (offline).

Runs the experiment ``experiments/configs/shapesworld_splice.py`` with the shipped tiny CLIP: per-image
decompositions beside the true attributes, concept recovery (precision@3, recall), dense vs sparse zero-shot
accuracy against l0, and on a correlated split the concept statistics and the worst-group accuracy of a linear
probe before and after removing the background concepts. It writes ``WORKDIR/report/index.html`` (printed)
and ``WORKDIR/metrics.json``, and prints the headline metrics as its last line (one JSON object). It takes a
few minutes on 2 cores and is not resumable (a re-run starts over).

The experiment code lives in the repository (``experiments/``), so the command needs a source checkout (it
is found beside the installed package, as with ``pip install -e .``). The sparse-solver benchmark that used to
be the main job is ``make bench`` / ``python -m benchmarks.sparse_solvers``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from conceptjax.errors import InputError

CONFIG = "experiments/configs/shapesworld_splice.py"


def register(sub: argparse._SubParsersAction) -> None:
  p = sub.add_parser(
    "main",
    help="run the main job: SpLiCE on ShapesWorld with the shipped CLIP, HTML report (offline, minutes)",
    description="SpLiCE on ShapesWorld with the shipped tiny CLIP (offline, a few minutes on 2 cores): "
    "writes WORKDIR/report/index.html and WORKDIR/metrics.json, prints the report path and then the headline "
    "metrics as one JSON line. Not resumable: a re-run starts over.",
  )
  p.add_argument(
    "--workdir",
    default=None,
    help="output folder (metrics.json, report/index.html) [workdirs/main, workdirs/main-seed=N for another "
    "seed...]; a folder holding another config's run is refused",
  )
  p.add_argument("--seed", type=int, default=0, help="seed of the generated image sets (default 0)")
  p.add_argument(
    "--clip", default="", help="a CLIP directory, transformers or open_clip format (default: the shipped one)"
  )
  p.add_argument("--runlocal", action="store_true", help="tiny sizes (seconds; a smoke test, not a result)")
  p.set_defaults(handler=_run, interrupted="the main job is not resumable: re-run it to start over")


def _checkout() -> Path:
  """The source checkout holding ``experiments/`` (put on sys.path when needed)."""
  root = Path(__file__).resolve().parent.parent
  if importlib.util.find_spec("experiments") is None:
    if not (root / CONFIG).is_file():
      raise InputError(
        f"the main job needs the repository's experiments/ folder (looked in {root}); "
        "run it from a source checkout installed with `pip install -e .`"
      )
    sys.path.insert(0, str(root))
  return root


def _run(args: argparse.Namespace) -> int:
  if args.clip and not Path(args.clip).is_dir():
    raise InputError(f"--clip {args.clip}: not a folder (pass a save_pretrained CLIP folder)")
  root = _checkout()
  from experiments import run as runner

  given = {"seed": args.seed if args.seed else None, "runlocal": args.runlocal or None, "clip": args.clip}
  arg = ",".join(f"{k}={v}" for k, v in given.items() if v)
  config = runner.load_config(f"{root / CONFIG}:{arg}")
  workdir = args.workdir or runner.default_workdir(f"main.py:{arg}")
  runner.check_workdir(config, workdir)  # a re-run starts over, but never over another config's run
  metrics = runner.run(config, workdir, fresh=True)
  print(f"report: {metrics['report']}", flush=True)
  print(json.dumps(metrics), flush=True)
  return 0
