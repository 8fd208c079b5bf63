"""Non-dominated sorting of trials on accuracy (up), step time (down) and parameters (down).

A point is on the front when no other point is at least as good in every objective and strictly
better in one. Identical points do not dominate each other, so ties are all kept. The test is one
broadcast comparison per block of rows, so thousands of trials take milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from effnas.results.record import OBJECTIVE_DIRECTIONS
from effnas.results.record import OBJECTIVES as RECORDED_OBJECTIVES
from effnas.results.study import completed

# objective column -> True when larger is better, as the study's multi-objective controllers record them
OBJECTIVES: dict[str, bool] = {name: direction == "maximize"
                               for name, direction in zip(RECORDED_OBJECTIVES, OBJECTIVE_DIRECTIONS)}

# Named fronts the reports show: all three objectives and each pair.
FRONTS: dict[str, tuple[str, ...]] = {
    "pareto": ("accuracy", "step_time_ms", "params"),
    "pareto_accuracy_step_time": ("accuracy", "step_time_ms"),
    "pareto_accuracy_params": ("accuracy", "params"),
    "pareto_step_time_params": ("step_time_ms", "params"),
}


def non_dominated(values: np.ndarray, maximize: Sequence[bool], block: int = 512) -> np.ndarray:
    """Boolean mask of the rows of ``values`` [N, M] that no other row dominates.

    Rows containing NaN take no part: they are never on the front and dominate nothing.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ValueError(f"values must be [N, {len(maximize)}], got shape {values.shape}")
    valid = ~np.isnan(values).any(axis=1)
    costs = np.where(np.asarray(maximize, dtype=bool), -values, values)[valid]  # all objectives: lower is better
    dominated = np.zeros(len(costs), dtype=bool)
    for start in range(0, len(costs), block):
        candidates = costs[start:start + block, None, :]          # [B, 1, M]
        no_worse = (costs[None, :, :] <= candidates).all(axis=2)  # [B, N]: others at least as good everywhere
        better = (costs[None, :, :] < candidates).any(axis=2)     # [B, N]: ... and strictly better somewhere
        dominated[start:start + block] = (no_worse & better).any(axis=1)
    mask = np.zeros(len(values), dtype=bool)
    mask[np.flatnonzero(valid)[~dominated]] = True
    return mask


def front_mask(frame: pd.DataFrame, objectives: Sequence[str] = FRONTS["pareto"]) -> pd.Series:
    """Which rows of a trials table lie on the front of ``objectives``; failed trials never do."""
    done = completed(frame)
    mask = pd.Series(False, index=frame.index)
    if not done.empty:
        values = done[list(objectives)].to_numpy(dtype=float)
        mask.loc[done.index] = non_dominated(values, [OBJECTIVES[name] for name in objectives])
    return mask


def with_fronts(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with one boolean column per named front (``pareto``, ``pareto_accuracy_params``, ...)."""
    frame = frame.copy()
    for name, objectives in FRONTS.items():
        frame[name] = front_mask(frame, objectives)
    return frame


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str] = FRONTS["pareto"]) -> pd.DataFrame:
    """The front's trials, most accurate first."""
    return frame[front_mask(frame, objectives)].sort_values(["accuracy", "number"], ascending=[False, True])
