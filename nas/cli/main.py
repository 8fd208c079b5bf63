"""The ``nas`` command: one sub-command per job, each defined in its own ``nas/cli/*.py`` module.

Heavy imports (torch, optuna, ray) happen inside the commands so ``nas --help`` answers at once.
Bad input of any kind (an :class:`EffnasError`) becomes one line on stderr and exit code 2 (passwords in URLs
redacted, control characters escaped, cut at :data:`effnas.errors.LINE_LIMIT`), and so does a
write the disk refuses (full, read-only, over quota, not permitted) wherever it happens (see
:func:`disk_error_message`); any other exception surfaces as the bug it is.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from effnas.errors import EffnasError, one_line
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
}

DESCRIPTION = """\
effnas: training-aware neural architecture search in the style of EfficientNetV2.

A typical session:
  nas search --budget 200 --out runs/digits     search on the bundled digits data set
  nas report runs/digits                        look at the Pareto front (HTML)
  nas scale --base runs/digits/best.json --target m --out m.json
  nas train --arch m.json --data cifar:~/cifar-10-batches-py --epochs 30
  nas profile efficientnetv2-s                  params, FLOPs and step time of any spec
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a single line (and still exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, one_line(f"{self.prog}: error: {message} (see '{self.prog} --help')") + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="nas", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="effnas 0.1.0")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


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
    args = parser.parse_args(argv)
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
