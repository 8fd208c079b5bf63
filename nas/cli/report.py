"""`nas report RUN`: look at a search — Pareto front, convergence, winning choices, failures.

HTML (the default) is one self-contained file, written next to the study; csv, json and markdown go
to stdout for scripts and terminals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORMATS = ("html", "csv", "json", "markdown")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="report on a search: Pareto front, progress, choices (HTML, csv, json, markdown)",
        description="Report on a search run. RUN is a run directory (runs/NAME), its study.db, or an Optuna "
                    "storage URL (sqlite:///..., postgresql://...). The same study also opens in "
                    "optuna-dashboard: optuna-dashboard sqlite:///runs/NAME/study.db")
    parser.add_argument("location", metavar="RUN", help="run directory, study .db file or storage URL")
    parser.add_argument("--format", choices=FORMATS, default="html",
                        help="html writes a file (default); csv, json and markdown print to stdout")
    parser.add_argument("--out", metavar="FILE", help="where to write the HTML (default: RUN/report.html); a study or "
                        "a file effnas did not write there is never replaced")
    parser.add_argument("--force", action="store_true",
                        help="replace a file effnas wrote for another purpose (a spec, a table) at --out")
    parser.set_defaults(run=run)


def default_html_path(location: str) -> Path:
    """``report.html`` next to the study: in the run directory, beside a .db file, else here."""
    if location.startswith("sqlite:///"):
        location = location[len("sqlite:///"):]
    elif "://" in location:
        return Path("report.html")
    path = Path(location).expanduser()
    return path / "report.html" if path.is_dir() else path.with_name("report.html")


def run(args: argparse.Namespace) -> int:
    from effnas.results import ResultsError, open_study, study_info, trials_frame
    from effnas.results.storage import redact
    from effnas.results.export import to_csv, to_json, to_markdown

    if args.out and args.format != "html":
        raise ResultsError(f"--out is for the HTML report; --format {args.format} prints to stdout")
    if args.format == "html":  # a study, another file, a directory, a device: refused before any work
        from effnas.outputs import claim_output

        claim_output(Path(args.out).expanduser() if args.out else default_html_path(args.location), "report",
                     "--out" if args.out else "", force=args.force)
    study = open_study(args.location)
    frame, info = trials_frame(study), study_info(study)
    shown = redact(args.location)  # the report names its storage: never with the URL's password
    if args.format == "csv":
        sys.stdout.write(to_csv(frame))
    elif args.format == "json":
        sys.stdout.write(to_json(frame, info, shown) + "\n")
    elif args.format == "markdown":
        sys.stdout.write(to_markdown(frame, info, shown))
    else:
        from effnas.results.html_report import render_html
        from effnas.writes import atomic_write

        out = Path(args.out).expanduser() if args.out else default_html_path(args.location)
        compared = Path(args.location).expanduser() / "compare.json"  # nas compare's results, when it ran
        compare = None
        if compared.is_file():
            try:
                compare = json.loads(compared.read_text())
            except (OSError, ValueError) as error:
                print(f"nas report: warning: {compared} left out, unreadable ({error})", file=sys.stderr)
        atomic_write(out, render_html(frame, info, shown, compare))  # a full disk leaves no half report
        print(f"wrote {out} ({len(frame)} trials)")
    return 0
