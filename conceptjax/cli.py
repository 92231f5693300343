"""The ``conceptjax`` command.

Each subcommand lives beside the code it drives and registers itself through a ``register(subparsers)``
function named in ``COMMANDS``; modules are imported only when needed so ``conceptjax --help`` is fast.
A subcommand's handler takes the parsed ``argparse.Namespace`` and returns an exit status. Failures end
in one line on stderr, never a traceback: bad input (``InputError``) and an unknown command exit with
status 2, a failing write (disk full, read-only, a file where a folder belongs) with status 1, Ctrl-C with
status 130 and a line saying whether the run can be resumed (a subcommand says so with
``set_defaults(interrupted=...)``). Warnings are printed as one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

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


NOT_RESUMABLE = "nothing of this run is kept: re-run the same command to start again"


@contextlib.contextmanager
def one_line_warnings(prefix: str):
  """Prints each warning raised inside as one line ``PREFIX: warning: MESSAGE`` on stderr."""

  def show(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{prefix}: warning: {message}", file=sys.stderr)

  with warnings.catch_warnings():
    warnings.showwarning = show
    yield


def run_handler(prefix: str, handler, interrupted: str = NOT_RESUMABLE) -> int:
  """Runs ``handler()`` and turns every expected failure into one stderr line and an exit status.

  InputError -> 2; OSError (disk full, read-only, wrong kind of path) -> 1; Ctrl-C -> 130 with the line
  ``interrupted: <interrupted>``. ``experiments.run`` shares it.
  """
  from conceptjax.io import describe_os_error

  with one_line_warnings(prefix):
    try:
      return int(handler() or 0)
    except InputError as e:
      print(f"{prefix}: error: {e}", file=sys.stderr)
      return 2
    except OSError as e:
      print(f"{prefix}: error: {describe_os_error(e)}", file=sys.stderr)
      return 1
    except KeyboardInterrupt:
      print(f"\n{prefix}: interrupted: {interrupted}", file=sys.stderr)
      return 130


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  only = argv[0] if argv and argv[0] in COMMANDS else None
  parser = build_parser(only)
  if only is None:
    if not argv or argv[0] in ("-h", "--help"):
      parser.print_help()
      return 0
    print(
      f"conceptjax: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)}; "
      "`conceptjax --help` lists them)",
      file=sys.stderr,
    )
    return 2
  args = parser.parse_args(argv)
  return run_handler(
    f"conceptjax {args.command}", lambda: _run(args), getattr(args, "interrupted", NOT_RESUMABLE)
  )


def _run(args: argparse.Namespace) -> int:
  """Joins the multi-process runtime first when the command takes its options and they ask for it: the
  processes of a batch command then work independently, each on its own rows (docs/scaling.md)."""
  if hasattr(args, "init_timeout"):
    from conceptjax import parallel

    if parallel.initialize_from_args(args):
      parallel.work_independently()
  return args.handler(args)


if __name__ == "__main__":
  sys.exit(main())
