"""Picking one trial: the best reward, the best reward under a budget, or a trial by number."""

from __future__ import annotations

import pandas as pd

from effnas.results.record import (COUNT_METRICS, DURATION_ATTR, FAIL_REASON_ATTR, REWARD_ATTR, TABLE_METRICS,
                                   best_order)
from effnas.results.storage import ResultsError
from effnas.results.study import completed


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    order = best_order(frame.to_dict("records"))
    if not order:
        raise ResultsError("no trial completed (every trial failed or is still running)")
    return frame.iloc[order]


def best_by_reward(frame: pd.DataFrame) -> pd.Series:
    """The best completed trial, by the one rule of :func:`effnas.results.record.best_order`."""
    return _ranked(frame).iloc[0]


def top_by_reward(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """The ``count`` best completed trials (all of them when fewer completed), best first, by the same rule as
    :func:`best_by_reward`: the finalists a comparison trains again at its own data and time."""
    return _ranked(frame).head(count)


def best_under(frame: pd.DataFrame, max_params: float | None = None,
               max_step_time_ms: float | None = None) -> pd.Series:
    """The best-reward trial that fits a parameter and/or step-time budget."""
    ranked = _ranked(frame)
    fits = pd.Series(True, index=ranked.index)
    limits = []
    if max_params is not None:
        fits &= ranked["params"] <= max_params
        limits.append(f"params <= {max_params:,.0f} (smallest: {ranked['params'].min():,.0f})")
    if max_step_time_ms is not None:
        fits &= ranked["step_time_ms"] <= max_step_time_ms
        limits.append(f"step time <= {max_step_time_ms:g} ms (fastest: {ranked['step_time_ms'].min():.3g} ms)")
    if not fits.any():
        raise ResultsError(f"no completed trial has {' and '.join(limits)}")
    return ranked[fits].iloc[0]


def trial_row(frame: pd.DataFrame, number: int) -> pd.Series:
    """One trial by number; it must have completed, since only then does it have metrics."""
    rows = frame[frame["number"] == number]
    if rows.empty:
        raise ResultsError(f"no trial {number} (trials are numbered 0 to {int(frame['number'].max())})")
    row = rows.iloc[0]
    if row["number"] not in completed(frame)["number"].values:
        reason = f": {row[FAIL_REASON_ATTR].splitlines()[0]}" if isinstance(row.get(FAIL_REASON_ATTR), str) else ""
        raise ResultsError(f"trial {number} is {row['state']}{reason}; only completed trials can be exported")
    return row


def metrics_of(row: pd.Series) -> dict:
    """The measured numbers of one trial, JSON-ready (what ``best.json`` carries next to the spec)."""
    metrics = {"trial": int(row["number"])}
    for name in (*TABLE_METRICS, REWARD_ATTR, DURATION_ATTR):
        value = row.get(name)
        if value is not None and pd.notna(value):
            metrics[name] = int(value) if name in COUNT_METRICS else float(value)
    if isinstance(row.get("engine"), str):
        metrics["engine"] = row["engine"]
    return metrics
