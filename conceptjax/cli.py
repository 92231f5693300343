"""The ``conceptjax`` command.

Each subcommand lives beside the code it drives and registers itself through a ``register(subparsers)``
function named in ``COMMANDS``; modules are imported only when needed so ``conceptjax --help`` is fast.
A subcommand's handler takes the parsed ``argparse.Namespace`` and returns an exit status. Bad input
(``InputError``) is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from conceptjax.errors import InputError

# name -> "module:function" that adds the subcommand's parser (with set_defaults(handler=...)).
COMMANDS: dict[str, str] = {
  "main": "conceptjax.main_job:register",
  "embed": "conceptjax.splice._cli:register_embed",
  "decompose": "conceptjax.splice._cli:register_decompose",
  "zeroshot": "conceptjax.splice._cli:register_zeroshot",
  "concepts": "conceptjax.splice._cli:register_concepts",
  "vocab": "conceptjax.splice._cli:register_vocab",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="conceptjax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, target in COMMANDS.items():
    if only is not None and name != only:
      sub.add_parser(name, help=f"(run `conceptjax {name} --help`)", add_help=False)
      continue
    module, _, fn = target.partition(":")
    getattr(importlib.import_module(module), fn)(sub)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  only = argv[0] if argv and argv[0] in COMMANDS else None
  parser = build_parser(only)
  if only is None:
    parser.print_help()
    return 0 if not argv or argv[0] in ("-h", "--help") else 2
  args = parser.parse_args(argv)
  try:
    return int(args.handler(args) or 0)
  except InputError as e:
    print(f"conceptjax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
