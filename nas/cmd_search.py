"""`nas search` (not built yet)."""

from __future__ import annotations

import argparse

from search_space.errors import EffnasError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="(not built yet)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise EffnasError("'nas search' is not built yet")
