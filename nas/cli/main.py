"""The ``nas`` command: one sub-command per job, each defined in its own ``nas/cli/*.py`` module.

Heavy imports (torch, optuna, ray) happen inside the commands so ``nas --help`` answers at once.
Bad input of any kind (an :class:`EffnasError`) becomes one line on stderr and exit code 2 (passwords in URLs
redacted, control characters escaped, cut at :data:`effnas.errors.LINE_LIMIT`), and so does a
write the disk refuses (full, read-only, over quota, not permitted) wherever it happens (see
:func:`disk_error_message`); any other exception surfaces as the bug it is.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys

from effnas.errors import EffnasError, one_line
from effnas.nas.cli.arguments import apply_run_config, config_path
from effnas.writes import DISK_ERRNOS, sqlite_disk_problem

# Sub-command name -> module that defines ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = {
    "profile": "effnas.nas.cli.profile",
    "search": "effnas.nas.cli.search",
    "scale": "effnas.nas.cli.scale",
    "train": "effnas.nas.cli.train",
    "report": "effnas.nas.cli.report",
    "best": "effnas.nas.cli.best",
    "compare": "effnas.nas.cli.compare",
    "export": "effnas.nas.cli.export",
}
RUN_FILE_COMMANDS = ("search", "train", "compare")  # those that write a run file and take --config

DESCRIPTION = """\
effnas: training-aware neural architecture search in the style of EfficientNetV2.

A typical session:
  nas search --budget 200 --out runs/digits     search on the bundled digits data set
  nas report runs/digits                        look at the Pareto front (HTML)
  nas scale --base runs/digits/best.json --target m --out m.json
  nas train --arch m.json --data cifar:~/cifar-10-batches-py --epochs 30
  nas profile efficientnetv2-s                  params, FLOPs and step time of any spec
  nas export runs/train --format onnx --out model.onnx    to ONNX or TorchScript, checked against torch
"""


_MISSING_VALUE = re.compile(r"argument (?P<flags>\S+): expected one argument$")
_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a single line (and still exit code 2), with a "did you mean" for a mistyped
    sub-command, choice or flag (difflib; argparse of Python 3.11 has none)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        self._given = list(sys.argv[1:] if args is None else args)  # what error() looks at for suggestions
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        prog, hint = self._suggestion(message)
        self.exit(2, one_line(f"{self.prog}: error: {message}{hint} (see '{prog} --help')") + "\n")

    def _suggestion(self, message: str) -> tuple[str, str]:
        """The command whose help to point at, and " (did you mean ...?)" for the closest known spelling."""
        choice = _INVALID_CHOICE.search(message)
        if choice:
            known = [name.strip().strip("'") for name in choice["choices"].split(",")]  # quoted before 3.12.8
            close = difflib.get_close_matches(choice["value"], known, n=1)
            return self.prog, f" (did you mean '{close[0]}'?)" if close else ""
        missing = _MISSING_VALUE.match(message)
        if missing:  # "--time -5m": argparse reads a value that starts with "-" as the next flag
            given = getattr(self, "_given", [])
            flags = missing["flags"].split("/")
            after = [given[i + 1] for i, word in enumerate(given[:-1]) if word in flags]
            if after and after[0].startswith("-"):
                return self.prog, (f" ({after[0]!r} reads as a flag; to give it as the value, write "
                                   f"{flags[-1]}={after[0]})")
            return self.prog, ""
        if not message.startswith("unrecognized arguments:"):
            return self.prog, ""
        parser = self  # unknown flags of a sub-command surface here, in the top parser: look in the sub-command's
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                command = next((word for word in getattr(self, "_given", []) if word in action.choices), None)
                parser = action.choices[command] if command else self
        known = [flag for action in parser._actions for flag in action.option_strings]
        words = message.split(":", 1)[1].split()
        for word in words:
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6) \
                if word.startswith("-") else []
            if close:
                return parser.prog, f" (did you mean {close[0]}?)"
        return parser.prog, ""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="nas", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="effnas 0.1.0")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _sub_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def disk_error_message(error: BaseException) -> str | None:
    """One line for an exception that is, at its root, the disk refusing a write: an ``OSError`` with a disk
    errno, or an SQLite "database or disk is full" under Optuna's and SQLAlchemy's wrappers. None otherwise.

    The write paths name their files themselves (:mod:`effnas.writes`); this catches the rest (a
    journal storage, a library's own files) so that no full disk ever ends in a traceback."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            where = f" {error.filename}" if error.filename else ""
            return f"cannot write{where}: {DISK_ERRNOS[error.errno]}"
        problem = sqlite_disk_problem(error)
        if problem:
            return f"cannot write the study's database: {problem}"
        error = error.__cause__ or error.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0] in RUN_FILE_COMMANDS:  # --config FILE: the run file's options become the defaults
        path = config_path(given[1:])
        if path is not None:
            try:
                apply_run_config(_sub_parser(parser, given[0]), given[0], path)
            except EffnasError as error:
                print(one_line(f"nas {given[0]}: error: {error}"), file=sys.stderr)
                return 2
    args = parser.parse_args(given)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except EffnasError as error:  # one_line: no password, no control character, no megabyte-long quote
        print(one_line(f"nas {args.command}: error: {error}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nas report ... | head`: the reader left, which is fine
        sys.stderr.close()
        return 0
    except Exception as error:
        message = disk_error_message(error)
        if message is None:
            raise
        print(one_line(f"nas {args.command}: error: {message}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
