"""`nas report` (not built yet)."""

from __future__ import annotations

import argparse

from search_space.errors import EffnasError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="(not built yet)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise EffnasError("'nas report' is not built yet")
