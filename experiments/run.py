"""Runs one experiment: ``python -m experiments.run --config experiments/configs/NAME.py[:ARGS]``.

A config file defines ``get_config(arg: str) -> ml_collections.ConfigDict``; ``arg`` is the text after the
colon, ``key=value`` pairs separated by commas (``seed=3,runlocal=True``), parsed by
``experiments.configs.common.parse_arg``. The config's ``task`` names a module ``experiments.tasks.<task>``
whose ``run(config, workdir) -> dict`` does the work. The runner writes the config and ``metrics.json`` into
the workdir and prints the headline metrics as the last line of output, one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

from conceptjax import io
from conceptjax.errors import InputError


def load_config(spec: str):
  """Loads ``path.py[:arg]`` and returns ``get_config(arg)``."""
  path, _, arg = spec.partition(":")
  if not Path(path).is_file():
    raise InputError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(f"_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise InputError(f"config file {path} defines no get_config(arg)")
  return module.get_config(arg)


def run(config, workdir: str | Path) -> dict:
  """Runs ``config`` in ``workdir`` and returns its metrics (also written to ``workdir/metrics.json``)."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  io.write_text(workdir / "config.json", config.to_json(indent=2))
  task = importlib.import_module(f"experiments.tasks.{config.task}")
  t0 = time.perf_counter()
  metrics = dict(task.run(config, workdir))
  metrics.setdefault("seconds", round(time.perf_counter() - t0, 2))
  metrics = io.to_jsonable(metrics)
  io.write_json(workdir / "metrics.json", metrics)
  return metrics


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="experiments/configs/NAME.py[:key=value,...]")
  parser.add_argument("--workdir", default=None, help="output folder (default: workdirs/<config name>)")
  args = parser.parse_args(argv)
  try:
    config = load_config(args.config)
    workdir = args.workdir or Path("workdirs") / Path(args.config.partition(":")[0]).stem
    metrics = run(config, workdir)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(metrics), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
