"""Shared helpers for the benchmarks: which device ran them, tables, and the few statistics they report.

Every benchmark prints the device it ran on and the machine's load, because on a shared machine only ratios
measured side by side in one run mean anything; absolute figures from two runs do not compare.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device`` / ``--threads`` / ``--quick``, the same in every benchmark."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores); fixed for every row of a table")
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or two on a laptop CPU")


def setup_device(args: argparse.Namespace) -> torch.device:
    """Resolve ``--device`` and pin the CPU thread count, so every row runs under the same conditions."""
    from effnas.nas.training.engine import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def search_defaults(device: str) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` that ``nas search`` picks on this machine for ``device`` when the
    user passes neither, taken from the search itself so a benchmark measures what a search runs."""
    from effnas.nas.search.backends.local import default_threads, default_workers

    workers = default_workers(device)
    return workers, default_threads(workers)


def describe_device(device: torch.device | str) -> str:
    """One line: the GPU's name, or the CPU's core count, torch threads and load (shared machines vary)."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the start"
    return (f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads{load}), "
            f"torch {torch.__version__}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table: numbers right-aligned with sensible precision, headers from the dict keys."""
    columns = list(columns or (rows[0].keys() if rows else []))

    def cell(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return "-" if value is None else str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            if value != value:  # NaN
                return "-"
            magnitude = abs(value)
            return f"{value:,.0f}" if magnitude >= 1000 else f"{value:.3g}" if magnitude < 1 else f"{value:.1f}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool) for row in rows)
               for c in columns]
    lines = ["  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(columns, widths, numeric))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(r, widths, numeric)))
    return "\n".join(lines)


def print_report(title: str, device: torch.device, rows: Sequence[dict[str, Any]], notes: Sequence[str] = (),
                 columns: Sequence[str] | None = None) -> None:
    """Title, device line, table and notes (ratios, caveats), in the same shape for every benchmark."""
    print(f"\n{title}")
    print(f"device: {describe_device(device)}")
    print(format_table(rows, columns))
    for note in notes:
        print(note)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (sample standard deviation / mean); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else 0.0


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (scipy when installed; else Pearson of average ranks, the same thing)."""
    try:
        from scipy.stats import spearmanr
    except ImportError:
        import numpy as np

        def ranks(values: Sequence[float]) -> "np.ndarray":
            values = np.asarray(values, dtype=float)
            order = values.argsort()
            result = np.empty(len(values))
            result[order] = np.arange(len(values), dtype=float)
            for value in np.unique(values):  # ties share their average rank
                result[values == value] = result[values == value].mean()
            return result

        return float(np.corrcoef(ranks(a), ranks(b))[0, 1])
    return float(spearmanr(a, b).statistic)


RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, title: str, device: torch.device | str, rows: Sequence[dict[str, Any]],
                 notes: Sequence[str] = (), columns: Sequence[str] | None = None,
                 directory: Path | None = None) -> Path:
    """Keep a benchmark's result where docs can quote it: ``benchmarks/results/NAME.md`` with the date, the
    device, the versions and the exact command, so every figure traces back to the run that measured it.
    ``directory`` puts it elsewhere (a smoke run that must not touch the measured results)."""
    import platform
    import sys
    from importlib.metadata import version

    folder = directory if directory is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    lines = [f"# {title}", "",
             f"- measured: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
             f"- device: {describe_device(device)}",
             f"- versions: effnas {version('effnas')}, python {platform.python_version()}, "
             f"torch {torch.__version__}, optuna {version('optuna')}, scikit-learn {version('scikit-learn')}",
             f"- command: `{' '.join(['python -m benchmarks.' + _module(name), *sys.argv[1:]])}`", "",
             "```", format_table(rows, columns), "```", ""]
    lines += [f"{note}  " for note in notes]
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _module(name: str) -> str:
    """The benchmark that runs, read from ``sys.argv[0]`` (``python -m benchmarks.X`` sets it to X's file), so a
    result kept under another name (``X-cuda``, ``X-quick``) still records the command that made it."""
    import sys

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.suffix == ".py" and script.resolve().parent == RESULTS.parent:
        return script.stem
    return name


def keep_result(name: str, device: torch.device | str, quick: bool, title: str, rows: Sequence[dict[str, Any]],
                notes: Sequence[str] = (), columns: Sequence[str] | None = None,
                more: Sequence[tuple[str, Sequence[dict[str, Any]], Sequence[str]]] = (),
                directory: Path | None = None) -> Path:
    """``write_result`` under a name that says what ran: ``NAME-cuda`` on a GPU and ``-quick`` for ``--quick``, so
    neither a GPU run nor a smoke-sized run replaces the CPU result that docs quote. ``more`` adds further
    ``(title, rows, notes)`` tables of the same run to the same file; ``directory`` as for ``write_result``."""
    stem = name + ("-cuda" if torch.device(device).type == "cuda" else "") + ("-quick" if quick else "")
    path = write_result(stem, title, device, rows, notes, columns, directory)
    for more_title, more_rows, more_notes in more:
        text = [f"## {more_title}", "", "```", format_table(more_rows), "```", ""]
        text += [f"{note}  " for note in more_notes]
        path.write_text(path.read_text() + "\n" + "\n".join(text).rstrip() + "\n")
    print(f"result kept in {path}")
    return path
