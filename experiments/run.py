"""Runs one experiment: ``python -m experiments.run --config experiments/configs/NAME.py[:ARGS]``.

A config file defines ``get_config(arg: str) -> ml_collections.ConfigDict``; ``arg`` is the text after the
colon, ``key=value`` pairs separated by commas (``seed=3,runlocal=True``), parsed by
``experiments.configs.common.parse_arg``. The config's ``task`` names a module ``experiments.tasks.<task>``
whose ``run(config, workdir) -> dict`` does the work. The runner writes the config and ``metrics.json`` into
the workdir and prints the headline metrics as the last line of output, one JSON object. One run at a time
writes a workdir (``conceptjax.io.output_lock``); failures end in one line (``conceptjax.cli.run_handler``).
Several processes (``--distributed`` or ``--coordinator``/``--num-processes``/``--process-id``;
docs/scaling.md): every process runs the task, the trainers split their global batch over all processes'
devices and checkpoint together, and process 0 writes ``config.json`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

from conceptjax import io
from conceptjax.errors import InputError
from conceptjax.launch import add_distributed_args


def load_config(spec: str):
  """Loads ``path.py[:arg]`` and returns ``get_config(arg)``."""
  path, _, arg = spec.partition(":")
  if not Path(path).is_file():
    raise InputError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(f"_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise InputError(f"config file {path} defines no get_config(arg)")
    return module.get_config(arg)
  except InputError:
    raise
  except Exception as e:  # a config is user code: whatever it raises is reported in one line
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    raise InputError(f"config {spec} failed: {type(e).__name__}: {first}") from None


# Config keys that may change between a run and its resumption (they do not change what is checkpointed).
RESUMABLE_KEYS = frozenset({"stop_at"})


def check_workdir(config, workdir: str | Path) -> None:
  """Refuses a workdir that holds a run of another config (its checkpoints would be silently reused, or its
  results overwritten), or whose ``config.json`` is not one this runner wrote. ``conceptjax main`` shares it.
  """
  path = Path(workdir) / "config.json"
  if not path.is_file():
    return
  try:
    old = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(old, dict):
      raise ValueError(f"a JSON {type(old).__name__}, not an object")
  except (ValueError, UnicodeDecodeError) as e:
    raise InputError(
      f"workdir {workdir} holds a {path.name} that is not a config ({type(e).__name__}: {str(e)[:80]}): "
      "pass another --workdir or delete it"
    ) from None
  new = json.loads(config.to_json())
  changed = sorted(
    (k for k in old.keys() | new.keys() if k not in RESUMABLE_KEYS and old.get(k) != new.get(k)),
    key=lambda k: (k != "task", k),  # another task first: it says the most
  )
  if changed:
    diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
    raise InputError(
      f"workdir {workdir} holds a run of another config ({diff}); its checkpoints would be reused: "
      "pass another --workdir or delete it"
    )


_check_same_config = check_workdir  # the name tests and older callers use


def run(config, workdir: str | Path, *, fresh: bool = False) -> dict:
  """Runs ``config`` in ``workdir`` and returns its metrics (also written to ``workdir/metrics.json``).

  A workdir resumes the run it holds (tasks checkpoint into it), so it must hold a run of the same config
  (``InputError`` otherwise). ``fresh=True``: the task starts over whatever the workdir holds (callers
  that start over check the workdir themselves, as ``conceptjax main`` does). The workdir is locked while
  the task runs: a second run into it fails at once naming the first one's PID.
  """
  workdir = Path(workdir)
  if not fresh:
    check_workdir(config, workdir)
  task = importlib.import_module(f"experiments.tasks.{config.task}")
  if hasattr(task, "validate"):  # a task's own checks of the config's values, before anything is written
    task.validate(config)
  import jax

  first = jax.process_index() == 0  # several processes (docs/scaling.md): process 0 writes the run's files
  with io.output_lock(workdir, jax.process_index()):
    if first:
      io.write_text(workdir / "config.json", config.to_json(indent=2))
    print(f"running {config.task} into {workdir} (progress on stderr)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    metrics = dict(task.run(config, workdir))
    metrics.setdefault("seconds", round(time.perf_counter() - t0, 2))
    metrics = io.to_jsonable(metrics)
    if first:
      io.write_json(workdir / "metrics.json", metrics)
  print(f"{config.task} done in {metrics['seconds']} s", file=sys.stderr, flush=True)
  return metrics


def default_workdir(spec: str) -> Path:
  """``workdirs/NAME`` for ``NAME.py``; ``workdirs/NAME-seed=1-runlocal=True`` for
  ``NAME.py:seed=1,runlocal=True`` (each argument set has its own workdir: seeds never resume each other)."""
  path, _, arg = spec.partition(":")
  name = "-".join([Path(path).stem, *filter(None, (a.strip() for a in arg.split(",")))])
  return Path("workdirs") / re.sub(r"[^A-Za-z0-9=._+-]", "_", name)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="experiments/configs/NAME.py[:key=value,...]")
  parser.add_argument(
    "--workdir", default=None, help="output folder (default: workdirs/<config name>[-<arguments>])"
  )
  add_distributed_args(parser)
  args = parser.parse_args(argv)
  from conceptjax.cli import run_handler

  def go() -> int:
    from conceptjax import parallel

    parallel.initialize_from_args(args)  # trainers then split their global batch over every process
    config = load_config(args.config)
    metrics = run(config, args.workdir or default_workdir(args.config))
    print(json.dumps(metrics), flush=True)
    return 0

  return run_handler(
    "experiments.run", go, "tasks that checkpoint resume from their last checkpoint when re-run the same way"
  )


if __name__ == "__main__":
  sys.exit(main())
