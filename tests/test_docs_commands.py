"""Every command shown in the docs uses options its CLI really has.

For each ``atelier <command> ...``, ``python -m X ...``, ``python scripts/Y.py ...`` and ``python train.py ...`` (also
``.venv/bin/python``, ``accelerate launch ... train.py``) in a fenced code block of README.md
and docs/*.md, every ``--flag`` after the script must be an option of that script's argparse
parser. The parsers are built in-process (``build_parser()``, or by capturing the parser a
``main()`` builds); no command is run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from atelier.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PYTHON = re.compile(r"(^|/)python3?$")
SHELL_SEPARATORS = {";", "&&", "||", "|", "do", "then", "done", "fi"}
COMMAND_TABLE = COMMANDS  # atelier <command> -> "module:function"


@dataclass(frozen=True)
class DocCommand:
    doc: str  # file name relative to the repo
    line: int  # line of the command in that file (1-based)
    cli: str  # "atelier:eval", "module:eval" or "script:scripts/compare_runs.py"
    flags: tuple[str, ...]


def _logical_lines(block: str, first_line: int):
    """(line number, text) of a code block with backslash continuations joined and comments cut."""
    pending, start = "", first_line
    for offset, raw in enumerate(block.splitlines()):
        if not pending:
            start = first_line + offset
        text = raw.rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        yield start, pending + text
        pending = ""
    if pending:
        yield start, pending


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose-like lines: fall back to whitespace
        return text.split("#", 1)[0].split()


def _commands_in_tokens(tokens: list[str]):
    """(cli, flags) for each project CLI invocation in one shell line."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        cli, args_start = None, None
        if token == "atelier" and i + 1 < len(tokens) and tokens[i + 1] in COMMAND_TABLE:
            cli, args_start = f"atelier:{tokens[i + 1]}", i + 2  # also `accelerate launch -m atelier train ...`
        elif PYTHON.search(token) and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if nxt == "-m" and i + 2 < len(tokens):
                cli, args_start = f"module:{tokens[i + 2]}", i + 3
            elif nxt.endswith(".py"):
                cli, args_start = f"script:{nxt}", i + 2
        elif token == "train.py" and i > 0 and tokens[i - 1] not in ("python", "python3"):
            cli, args_start = "script:train.py", i + 1  # accelerate launch [launcher flags] train.py ...
        if cli is None:
            i += 1
            continue
        j = args_start
        flags = []
        while j < len(tokens) and tokens[j] not in SHELL_SEPARATORS:
            word = tokens[j].strip("[]")
            if word.startswith("--") and len(word) > 2:
                flags.append(word.split("=", 1)[0])
            j += 1
        yield cli, tuple(flags)
        i = j


def doc_commands() -> list[DocCommand]:
    """All project CLI invocations in the fenced code blocks of README.md and docs/*.md."""
    found = []
    for doc in DOC_FILES:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            first_line = text.count("\n", 0, match.start(1)) + 1
            for line, logical in _logical_lines(match.group(1), first_line):
                for cli, flags in _commands_in_tokens(_tokens(logical)):
                    found.append(DocCommand(str(doc.relative_to(ROOT)), line, cli, flags))
    return found


def _project_cli(cli: str) -> bool:
    kind, name = cli.split(":", 1)
    if kind == "atelier":
        return name in COMMAND_TABLE
    if kind == "script":
        return (ROOT / name).is_file() and name.endswith(".py")
    return (ROOT / name.split(".")[0]).is_dir()  # python -m pytest etc. are not ours


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _parser_from_main(main) -> argparse.ArgumentParser:
    """The parser a ``main()`` builds, captured when it parses (nothing after that runs)."""

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            main([])
        except _Captured as captured:
            return captured.parser
    raise AssertionError(f"{main.__module__}.main() never parsed its arguments")


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def parser_for(cli: str) -> argparse.ArgumentParser:
    """Build (once) the argparse parser of a project CLI."""
    if cli not in _PARSERS:
        kind, name = cli.split(":", 1)
        if kind == "atelier":
            module = importlib.import_module(COMMAND_TABLE[name][0].split(":")[0])
        elif kind == "module":
            try:
                module = importlib.import_module(f"{name}.__main__")
            except ModuleNotFoundError:
                module = importlib.import_module(name)
        else:
            spec = importlib.util.spec_from_file_location(f"_doc_cli_{Path(name).stem}", ROOT / name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
            spec.loader.exec_module(module)
        builder = getattr(module, "build_parser", None)
        _PARSERS[cli] = builder() if builder is not None else _parser_from_main(module.main)
    return _PARSERS[cli]


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def unknown_flags(command: DocCommand) -> list[str]:
    known = option_strings(parser_for(command.cli))
    return [flag for flag in command.flags if flag not in known]


COMMANDS = [c for c in doc_commands() if _project_cli(c.cli)]


def test_docs_show_project_commands():
    """The scan itself works: the docs' main commands are found (guards against a silent no-op)."""
    clis = {c.cli for c in COMMANDS}
    for expected in (
        "atelier:eval",
        "atelier:refine",
        "atelier:scrape",
        "atelier:prepare",
        "atelier:train",
        "atelier:generate",
        "script:train.py",
        "script:scripts/compare_runs.py",
    ):
        assert expected in clis, f"no {expected} command found in the docs"
    assert sum(len(c.flags) for c in COMMANDS) > 40


def test_a_wrong_flag_is_caught():
    """A documented option that the CLI lacks is reported (the check can fail)."""
    bad = DocCommand("README.md", 1, "atelier:eval", ("--checkpoint", "--weights-folder"))
    assert unknown_flags(bad) == ["--weights-folder"]
    tokens = _tokens("accelerate launch --multi_gpu train.py --config c.yaml --data=d [--max-kimg N]")
    assert list(_commands_in_tokens(tokens)) == [("script:train.py", ("--config", "--data", "--max-kimg"))]
    tokens = _tokens("accelerate launch --multi_gpu -m atelier train --config c.yaml && atelier generate --seeds 1")
    assert list(_commands_in_tokens(tokens)) == [("atelier:train", ("--config",)), ("atelier:generate", ("--seeds",))]


OLD_FORMS = re.compile(r"python3? (-m (scraping|eval)\b|scripts/generate\.py|train\.py)")


def test_readme_uses_the_atelier_command():
    """The README shows `atelier ...` (and `accelerate launch ...`), not the old per-stage forms."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    old = [line for block in FENCE.findall(readme) for line in block.splitlines() if OLD_FORMS.search(line)]
    assert not old, old


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.doc}:{c.line}:{c.cli.split(':', 1)[1]}")
def test_documented_flags_exist(command: DocCommand):
    missing = unknown_flags(command)
    assert not missing, f"{command.doc}:{command.line}: {command.cli} has no option(s) {', '.join(missing)}"
