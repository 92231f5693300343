"""The documentation's commands parse and the files it cites exist (README.md and docs/*.md).

Every ``python -m MODULE ...`` and ``conceptjax ...`` command quoted in a page (in a code block, with ``\\``
continuations joined, or in an inline code span that gives arguments: a bare ``conceptjax vocab`` names a
command, it does not quote one) is parsed by its own entry point, without running it: the entry point's
``main(argv)`` is called with ``argparse.ArgumentParser.parse_args`` replaced by one that parses and then
stops. ``python -m experiments.run`` commands also load their config (``experiments.run.load_config``), so an
unknown config key or a missing config file fails here. Every ``benchmarks/results/*.json`` or
``experiments/results/*.json`` and every ``experiments/configs/*.py`` a page names must exist (``NAME.py``, in
capitals, is a placeholder), and so must the target of every relative link.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import re
import shlex
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = ROOT / "benchmarks" / "results" / "HISTORY.md"
# Entry points whose command lines are checked; other modules (pytest, pip) are not the project's.
PROJECT_MODULES = ("conceptjax", "experiments", "benchmarks")

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_PYTHON_M = re.compile(r"(?:^|[\s/])python3? -m (\S+)(.*)$")
_CONCEPTJAX = re.compile(r"^conceptjax(\s.*)?$")
_RESULT = re.compile(r"(?:benchmarks|experiments)/results/(?![A-Z]+\.json)[\w.+{},*-]+\.json")
_CONFIG = re.compile(r"experiments/configs/(?![A-Z]+\.py)\w+\.py")


def _page_text(page: Path) -> str:
  return page.read_text(encoding="utf-8")


def _code_lines(text: str) -> list[tuple[str, bool]]:
  """(line, inline) for each line of the page's code blocks (continuations joined) and each inline span."""
  lines = []
  for block in _FENCE.findall(text):
    lines.extend((line.strip(), False) for line in block.replace("\\\n", " ").splitlines())
  prose = _FENCE.sub("", text)
  lines.extend((span.strip(), True) for span in _INLINE.findall(prose))
  return lines


def _commands(page: Path) -> list[tuple[str, list[str]]]:
  """(module, argv) of each project command quoted in ``page``."""
  out = []
  for line, inline in _code_lines(_page_text(page)):
    if (m := _CONCEPTJAX.match(line)) is not None:
      module, rest, named = "conceptjax.cli", m.group(1) or "", 1  # `conceptjax vocab` names a command
    elif (m := _PYTHON_M.search(line)) is not None:
      module, rest, named = m.group(1), m.group(2), 0
    else:
      continue
    argv = shlex.split(rest, comments=True)
    if module.split(".")[0] not in PROJECT_MODULES or (inline and len(argv) <= named):
      continue
    out.append((module, argv))
  return out


ALL_COMMANDS = [(page.name, module, argv) for page in PAGES for module, argv in _commands(page)]


class _Parsed(Exception):
  def __init__(self, namespace: argparse.Namespace):
    self.namespace = namespace


def _parse_only(module: str, argv: list[str]) -> argparse.Namespace:
  """Runs ``module.main(argv)`` until its parser has parsed ``argv``, and returns the namespace."""
  original = argparse.ArgumentParser.parse_args

  def parse_and_stop(self, args=None, namespace=None):
    raise _Parsed(original(self, args, namespace))

  main = importlib.import_module(module).main
  with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop):
    try:
      main(argv)
    except _Parsed as done:
      return done.namespace
    except SystemExit as e:
      pytest.fail(f"`{module} {shlex.join(argv)}` is refused by its parser (exit {e.code})")
  pytest.fail(f"`{module} {shlex.join(argv)}`: main() returned without parsing its arguments")


def test_pages_quote_commands():
  names = {page for page, _, _ in ALL_COMMANDS}
  assert {"README.md", "sparse.md", "splice.md", "benchmarks.md"} <= names


@pytest.mark.parametrize(
  "page, module, argv", ALL_COMMANDS, ids=[f"{p}:{m} {' '.join(a)[:60]}" for p, m, a in ALL_COMMANDS]
)
def test_quoted_command_parses(page, module, argv, monkeypatch):
  monkeypatch.chdir(ROOT)
  assert "$" not in " ".join(argv), f"{page}: shell variables in a quoted command: {argv}"
  namespace = _parse_only(module, argv)
  if module == "experiments.run":
    from experiments import run

    run.load_config(namespace.config)  # the config exists and takes these arguments


def _cited(pattern: re.Pattern) -> list[tuple[str, str]]:
  return sorted({(page.name, m) for page in PAGES for m in pattern.findall(_page_text(page))})


def _expand_braces(path: str) -> list[str]:
  m = re.search(r"\{([^{}]*)\}", path)
  if m is None:
    return [path]
  head, tail = path[: m.start()], path[m.end() :]
  return [q for alt in m.group(1).split(",") for q in _expand_braces(head + alt + tail)]


def test_pages_cite_results():
  assert len(_cited(_RESULT)) >= 10


@pytest.mark.parametrize("page, path", _cited(_RESULT))
def test_cited_results_exist(page, path):
  for p in _expand_braces(path):
    assert glob.glob(str(ROOT / p)), f"{page} cites {p}, which is not in the repository"


@pytest.mark.parametrize("page, path", _cited(_CONFIG))
def test_cited_configs_exist(page, path):
  assert (ROOT / path).is_file(), f"{page} names {path}, which is not in the repository"


def test_results_named_without_a_path_exist():
  """Result files quoted by bare name (HISTORY.md's tables) are in benchmarks/results."""
  names = set(re.findall(r"`([\w.+-]+\.json)`", _page_text(HISTORY)))
  assert names
  missing = sorted(n for n in names if not (HISTORY.parent / n).is_file())
  assert not missing, f"HISTORY.md names missing result files: {missing}"


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", [*PAGES, HISTORY], ids=lambda p: p.name)
def test_relative_links_resolve(page):
  targets = [t for t in _LINK.findall(_page_text(page)) if "://" not in t]
  missing = [t for t in targets if not (page.parent / t).exists()]
  assert not missing, f"{page.name} links to missing files: {missing}"
