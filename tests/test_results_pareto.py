"""Non-dominated sorting against a brute-force definition, with ties, NaNs and failed trials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from effnas.results import FRONTS, OBJECTIVES, front_mask, non_dominated, pareto_front, with_fronts


def brute_force_front(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """The definition, one pair at a time: j is dominated if some i is no worse everywhere, better once."""
    sign = np.where(maximize, 1.0, -1.0)
    scores = values * sign  # higher is better everywhere
    mask = np.zeros(len(values), dtype=bool)
    for j in range(len(values)):
        if np.isnan(values[j]).any():
            continue
        mask[j] = not any(
            not np.isnan(values[i]).any() and all(scores[i] >= scores[j]) and any(scores[i] > scores[j])
            for i in range(len(values)) if i != j)
    return mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("columns", [(0, 1, 2), (0, 1), (0, 2), (1, 2)])
def test_non_dominated_matches_brute_force_with_ties_and_nans(seed, columns):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    points = rng.integers(0, 6, size=(n, 3)).astype(float)  # a few levels: many ties and exact duplicates
    points[rng.random(n) < 0.1, int(rng.integers(0, 3))] = np.nan  # "failed" rows
    values = points[:, list(columns)]
    maximize = [list(OBJECTIVES.values())[c] for c in columns]
    expected = brute_force_front(values, maximize)
    assert np.array_equal(non_dominated(values, maximize), expected)
    assert np.array_equal(non_dominated(values, maximize, block=7), expected)  # row blocks change nothing


def test_identical_points_are_all_on_the_front_and_dominated_ones_are_not():
    values = np.array([[0.9, 5.0, 1e6], [0.9, 5.0, 1e6], [0.8, 5.0, 1e6], [0.95, 9.0, 2e6], [0.95, 9.0, 2e6]])
    assert non_dominated(values, [True, False, False]).tolist() == [True, True, False, True, True]


def test_single_point_and_all_nan():
    assert non_dominated(np.array([[1.0, 2.0]]), [True, False]).tolist() == [True]
    assert non_dominated(np.full((3, 2), np.nan), [True, False]).tolist() == [False, False, False]
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        non_dominated(np.zeros((4, 2)), [True, False, False])


def test_failed_trials_never_join_the_front_even_with_better_numbers():
    rng = np.random.default_rng(3)
    n = 60
    frame = pd.DataFrame({"number": range(n), "state": ["COMPLETE"] * n,
                          "accuracy": rng.integers(50, 60, n) / 100, "step_time_ms": rng.integers(5, 10, n) * 1.0,
                          "params": rng.integers(1, 5, n) * 1e6})
    frame.loc[[4, 17], "state"] = "FAIL"       # failed, yet with unbeatable numbers recorded
    frame.loc[[4, 17], ["accuracy", "step_time_ms", "params"]] = [0.99, 1.0, 1e5]
    frame.loc[30, "state"] = "RUNNING"
    frame.loc[31, "accuracy"] = np.nan         # completed without a measurement
    marked = with_fronts(frame)
    keep = frame["state"].eq("COMPLETE") & frame["accuracy"].notna()
    for name, objectives in FRONTS.items():
        expected = np.zeros(n, dtype=bool)
        expected[keep.to_numpy()] = brute_force_front(frame.loc[keep, list(objectives)].to_numpy(),
                                                      [OBJECTIVES[o] for o in objectives])
        assert marked[name].tolist() == expected.tolist(), name
        assert not marked.loc[[4, 17, 30, 31], name].any()
    front = pareto_front(frame)
    assert set(front["number"]) == set(marked.loc[marked["pareto"], "number"]) and len(front) > 1
    assert front["accuracy"].is_monotonic_decreasing


def test_front_mask_handles_tables_without_completed_trials():
    frame = pd.DataFrame({"number": [0, 1], "state": ["FAIL", "FAIL"], "accuracy": [np.nan] * 2,
                          "step_time_ms": [np.nan] * 2, "params": [np.nan] * 2})
    assert not front_mask(frame).any()
    assert pareto_front(frame).empty
