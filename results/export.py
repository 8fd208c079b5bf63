"""Text forms of a report for scripts and terminals: CSV (one row per trial), JSON, Markdown."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from effnas.results.analysis import failure_counts, state_counts
from effnas.results.pareto import FRONTS, pareto_front, with_fronts
from effnas.results.queries import best_by_reward, metrics_of
from effnas.results.storage import ResultsError
from effnas.results.study import completed


def to_csv(frame: pd.DataFrame) -> str:
    """Every trial with its front memberships; the spec is left out (``blocks`` names the architecture)."""
    return with_fronts(frame).drop(columns=["spec"]).to_csv(index=False)


def to_json(frame: pd.DataFrame, info: dict[str, Any], source: str) -> str:
    """Study facts, the best trial, the trial numbers of each front, and every trial with its spec."""
    marked = with_fronts(frame)
    try:
        best = metrics_of(best_by_reward(frame))
    except ResultsError:
        best = None
    trials = json.loads(marked.to_json(orient="records"))
    payload = {"source": source, "study": info, "best": best,
               "fronts": {name: [int(n) for n in marked.loc[marked[name], "number"]] for name in FRONTS},
               "trials": trials}
    return json.dumps(payload, indent=2)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(frame: pd.DataFrame, info: dict[str, Any], source: str) -> str:
    """A terminal-sized summary: counts, the Pareto front and the failures."""
    done = completed(frame)
    lines = [f"# effnas search report: {source}", "",
             f"- controller: {info.get('controller') or 'unknown'}",
             f"- trials: {len(frame)} ({', '.join(f'{n} {state}' for state, n in state_counts(frame).items() if n)})"]
    if not done.empty:
        best = best_by_reward(frame)
        lines.append(f"- best reward: {best['reward']:.4f} (trial {int(best['number'])}, accuracy "
                     f"{best['accuracy']:.4f}, {best['step_time_ms']:.3f} ms/step, "
                     f"{best['params'] / 1e6:.3f} M params)")
    front = pareto_front(frame)
    lines += ["", f"## Pareto front: accuracy up, step time down, params down ({len(front)} trials)", ""]
    rows = [[str(int(r.number)), f"{r.accuracy:.4f}", f"{r.step_time_ms:.3f}", f"{r.params / 1e6:.3f}",
             f"{r.reward:.4f}", f"`{r.blocks}`"] for r in front.itertuples()]
    lines.append(_markdown_table(["trial", "accuracy", "step ms", "params (M)", "reward", "architecture"], rows))
    failures = failure_counts(frame)
    if len(failures):
        lines += ["", "## Failed trials", ""]
        lines.append(_markdown_table(["reason", "trials"], [[r.reason, str(r.trials)] for r in failures.itertuples()]))
    return "\n".join(lines) + "\n"
