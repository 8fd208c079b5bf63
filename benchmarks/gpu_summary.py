"""The GPU targets (graph vs eager, step-time spread, ranking fidelity, overhead, search wall time), read back from the logs ``benchmarks/gpu_check.sh`` writes: one line per target.

    python -m benchmarks.gpu_summary LOG_DIR

A borrowed GPU often gives minutes, not hours: this turns the step logs into the few figures that matter (and
that docs/performance.md quotes), each marked met / NOT met / missing, so the call's output tail
answers the question even when a log is cut off. Tables are read by the column spans of their dashed rule
line, as ``benchmarks.common.format_table`` writes them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

TARGETS = {"graph_vs_eager": 4.0, "vs_hand_tuned": 0.90, "cv_percent": 2.0, "spearman": 0.9, "minutes": 15.0}


def _number(text: str) -> float | str | None:
    text = text.strip()
    if text in ("", "-"):
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


def read_tables(text: str) -> list[list[dict[str, Any]]]:
    """Every table in ``text``: a header line, a rule of dashes, then rows whose gaps line up with the rule."""
    lines = text.splitlines()
    found = []
    for i in range(1, len(lines)):
        if not re.fullmatch(r"-+(  -+)*", lines[i]):
            continue
        spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[i])]
        gaps = [(a[1], b[0]) for a, b in zip(spans, spans[1:])]
        header = [lines[i - 1][start:end].strip() for start, end in spans]
        rows = []
        for line in lines[i + 1:]:
            if not line.strip() or len(line) > spans[-1][1] or any(line[a:b].strip() for a, b in gaps):
                break
            rows.append({name: _number(line[start:end]) for name, (start, end) in zip(header, spans)})
        found.append(rows)
    return found


def _read(directory: Path, stem: str) -> str:
    path = directory / f"{stem}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _rate(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, float) else "-"


def _verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None or value != value:
        return "missing"
    return "met" if (value >= target if higher_is_better else value < target) else "NOT met"


def summarize(directory: Path) -> list[str]:
    """The target lines, in the order of the issue."""
    out = []
    tests = re.findall(r"^=* ?((?:\d+ \w+|no tests ran)\b.* in [\d.]+s.*?) ?=*$", _read(directory, "1-pytest-gpu"),
                       re.M)
    out.append(f"GPU tests (pytest -m gpu): {tests[-1] if tests else 'missing'}")

    rows = {r.get("loop"): r for table in read_tables(_read(directory, "2-trial_throughput")) for r in table}
    trainer, eager = rows.get("effnas trainer", {}), rows.get("effnas eager", {})

    def ratio(column: str) -> float | None:
        return trainer[column] / eager[column] if trainer.get(column) and eager.get(column) else None

    per_trial, steps_only = ratio("trial img/s"), ratio("steps img/s")
    tuned = trainer.get("vs hand-tuned")
    out.append(f"graph vs eager per trial, capture and warm-up included (effnas trainer / effnas eager): "
               f"{'-' if per_trial is None else f'{per_trial:.2f}x'} (target >= {TARGETS['graph_vs_eager']:g}x: "
               f"{_verdict(per_trial, TARGETS['graph_vs_eager'], True)}); steps only "
               f"{'-' if steps_only is None else f'{steps_only:.2f}x'}; trainer {_rate(trainer.get('trial img/s'))} "
               f"img/s, eager {_rate(eager.get('trial img/s'))} img/s per trial")
    out.append(f"effnas trainer vs hand-tuned CUDA graph loop, per trial: {'-' if tuned is None else f'{tuned:.2f}x'} "
               f"(target >= {TARGETS['vs_hand_tuned']:.2f}x: {_verdict(tuned, TARGETS['vs_hand_tuned'], True)})")

    fidelity = _read(directory, "3-step_time_fidelity")
    tables = read_tables(fidelity)
    recorded = [r for r in (tables[0] if tables else []) if str(r.get("measurement", "")).startswith("run_trial")]
    for row in recorded or [{"machine": "run_trial rows"}]:
        cv = row.get("CV %")
        out.append(f"step-time CV, run_trial ({row.get('machine')}, engine {row.get('engine', '-')}): "
                   f"{'-' if cv is None else f'{cv:.2f} %'} "
                   f"(target < {TARGETS['cv_percent']:g} %: {_verdict(cv, TARGETS['cv_percent'], False)})")
    match = re.search(r"Spearman rank correlation, proxy vs full step time: (\S+) over (\d+)", fidelity)
    rho = float(match.group(1)) if match and match.group(1) != "nan" else None
    out.append(f"Spearman, proxy vs full step time: {'-' if rho is None else f'{rho:.2f}'}"
               f"{f' over {match.group(2)} architectures' if match else ''} "
               f"(target >= {TARGETS['spearman']:g}: {_verdict(rho, TARGETS['spearman'], True)})")

    log = _read(directory, "4-overhead")
    overhead = re.search(r"overhead \(the worker's time outside training and evaluation steps\): (.*)", log)
    out.append(f"per-trial overhead: {overhead.group(1) if overhead else 'missing'}")
    end_to_end = re.search(r"end to end through Search.run (.*)", log)
    out.append(f"end-to-end overhead: {end_to_end.group(1) if end_to_end else 'missing'}")
    fastest = re.search(r"fastest on this device: (.*)", _read(directory, "5-fused_vs_mbconv"))
    out.append(f"fused vs MBConv, fastest: {fastest.group(1) if fastest else 'missing'}")

    search = _read(directory, "6-search_wall_time")
    rows = [r for table in read_tables(search) for r in table
            if r.get("data") == "synthetic:50000x32" and r.get("workers") == 4]
    minutes = rows[0].get("200 trials min") if rows else None
    budget = re.search(r"^(\d+) trials per search, (\d+) epoch", search, re.M)
    basis = f"from {budget.group(1)} trials of {budget.group(2)} epochs" if budget else "budget unknown"
    out.append(f"nas search --budget 200 on synthetic:50000x32, --workers 4: "
               f"{'-' if minutes is None else f'{minutes:.1f} min'} ({basis}; "
               f"target < {TARGETS['minutes']:g} min: {_verdict(minutes, TARGETS['minutes'], False)})")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m benchmarks.gpu_summary LOG_DIR (the folder gpu_check.sh wrote)", file=sys.stderr)
        return 2
    print("\n".join(summarize(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
